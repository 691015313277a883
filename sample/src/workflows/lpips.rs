//! LPIPS between two image sets from `.npy` files (`sample lpips`), on the network of
//! [`tweedie_core::lpips`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use tweedie_core::device::BackendKind;
use tweedie_core::lpips::{Lpips, LpipsFiles};

use crate::output::read_images;

/// LPIPS of each image pair of two `.npy` files (same shape, 1 or 3 channels), with the weights
/// in `weights` (a folder holding both files) or found by [`LpipsFiles::locate`]; the JSON record
/// `sample lpips` prints: `lpips` per pair and their `mean`.
pub fn score_npy(
    a: &Path,
    b: &Path,
    weights: Option<&Path>,
    backend: BackendKind,
) -> Result<serde_json::Value> {
    let (xa, sa) = read_images(a)?;
    let (xb, sb) = read_images(b)?;
    if sa != sb {
        bail!(
            "{} holds images of shape {sa:?}, {} of {sb:?}",
            a.display(),
            b.display()
        );
    }
    if sa[1] != 1 && sa[1] != 3 {
        bail!(
            "{}: LPIPS takes 1 or 3 channels, not {}",
            a.display(),
            sa[1]
        );
    }
    let files = match weights {
        Some(dir) => LpipsFiles::in_dir(dir),
        None => LpipsFiles::locate().context(NOT_FOUND)?,
    };
    let device = backend.device()?;
    let net = Lpips::read(&files, &device)?;
    let d = distances(&net, &xa, &xb, sa, &device);
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len().max(1) as f64;
    Ok(serde_json::json!({
        "a": a.display().to_string(),
        "b": b.display().to_string(),
        "lpips": d,
        "mean": mean,
        "trunk": files.trunk.display().to_string(),
        "linear": files.linear.display().to_string(),
    }))
}

/// What to do when the weights are not found.
pub const NOT_FOUND: &str = "LPIPS weights not found: put torchvision's alexnet-owt-7be5be79.pth \
    (torch hub cache) and the lpips package's weights/v0.1/alex.pth in one folder and pass \
    --weights DIR or set TWEEDIE_LPIPS=DIR (docs/using.md, \"LPIPS\")";

/// LPIPS of `a[i]` against `b[i]` for `[n, c, h, w]` images on [−1, 1], in batches of 16.
pub fn distances(
    net: &Lpips,
    a: &[f32],
    b: &[f32],
    shape: [usize; 4],
    device: &Device,
) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let per = c * h * w;
    let mut out = Vec::with_capacity(n);
    for s in (0..n).step_by(16) {
        let e = (s + 16).min(n);
        let t = |v: &[f32]| {
            Tensor::<4>::from_data(
                TensorData::new(v[s * per..e * per].to_vec(), [e - s, c, h, w]),
                device,
            )
        };
        out.extend(net.distance(t(a), t(b)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/lpips")
    }

    /// The committed fixture (a narrow AlexNet of LPIPS's shape, random weights) against the
    /// `lpips` package's forward pass (`scripts/lpips-parity.py --fixture`): RGB 40×40 and gray
    /// 28×28 (repeated to RGB, enlarged ×2) pairs.
    #[test]
    fn lpips_matches_the_package_on_the_fixture() {
        let dir = fixture();
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        for case in ["rgb40", "gray28"] {
            let r = score_npy(
                &dir.join(format!("{case}-a.npy")),
                &dir.join(format!("{case}-b.npy")),
                Some(&dir),
                BackendKind::Flex,
            )
            .unwrap();
            let got = r["lpips"].as_array().unwrap();
            let want = expected["lpips"][case].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() <= 1e-4 * w.abs(), "{case}: {g} against {w}");
            }
        }
    }

    #[test]
    fn identical_images_are_at_distance_zero() {
        let dir = fixture();
        let a = dir.join("rgb40-a.npy");
        let r = score_npy(&a, &a, Some(&dir), BackendKind::Flex).unwrap();
        assert!(
            r["lpips"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v.as_f64().unwrap() == 0.0)
        );
    }

    #[test]
    fn bad_weights_and_images_are_one_line_errors() {
        let dir = fixture();
        let a = dir.join("rgb40-a.npy");
        let g = dir.join("gray28-a.npy");
        let tmp = std::env::temp_dir().join(format!("tweedie-lpips-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let err = |x: &Path, y: &Path, w: &Path, want: &str| {
            let e = format!(
                "{:#}",
                score_npy(x, y, Some(w), BackendKind::Flex).unwrap_err()
            );
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        };
        // Shapes that differ.
        err(&a, &g, &dir, "of shape");
        // A folder without the files.
        err(&a, &a, &tmp, "alexnet-owt-7be5be79.pth");
        // The trunk and the linear layers swapped: a missing tensor, named.
        std::fs::copy(dir.join("alex.pth"), tmp.join("alexnet-owt-7be5be79.pth")).unwrap();
        std::fs::copy(dir.join("alexnet-owt-7be5be79.pth"), tmp.join("alex.pth")).unwrap();
        err(&a, &a, &tmp, "features.0.weight");
        // Not a PyTorch file.
        std::fs::write(tmp.join("alexnet-owt-7be5be79.pth"), b"not a pickle").unwrap();
        err(&a, &a, &tmp, "not a PyTorch checkpoint");
        // NaN in the images.
        let mut bytes = std::fs::read(&a).unwrap();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        let bad = tmp.join("nan.npy");
        std::fs::write(&bad, bytes).unwrap();
        err(&bad, &a, &dir, "NaN");
        std::fs::remove_dir_all(&tmp).ok();
    }
}
