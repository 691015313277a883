//! Inception-v3 pool3 features of an image set from a `.npy` file (`sample inception`), on the
//! network of [`tweedie_core::inception`]: the features FID and KID are computed from.

use std::path::Path;

use anyhow::{Result, bail};
use tweedie_core::device::BackendKind;
use tweedie_core::inception::{FEATURES, Inception};

/// pool3 features `[n, 2048]` (row-major) of `[n, 3, h, w]` images on [−1, 1], 32 at a time.
pub fn features(net: &Inception, images: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let per = c * h * w;
    let mut out = Vec::with_capacity(n * FEATURES);
    for s in (0..n).step_by(32) {
        let e = (s + 32).min(n);
        let unit: Vec<f32> = images[s * per..e * per]
            .iter()
            .map(|v| (v + 1.0) * 0.5)
            .collect();
        out.extend(tweedie_core::host_values(
            net.features(&unit, [e - s, c, h, w]),
        ));
    }
    out
}

/// Reads the images of `images` (float32 N×3×H×W on [−1, 1] or uint8 N×H×W×3), computes their
/// pool3 features with the weights file `weights` and writes them to `out` as float32 N×2048.
pub fn features_npy(images: &Path, weights: &Path, out: &Path, backend: BackendKind) -> Result<()> {
    let (values, shape) = crate::lpips::read_images(images)?;
    if shape[1] != 3 {
        bail!(
            "{}: Inception takes RGB images, these have {} channels",
            images.display(),
            shape[1]
        );
    }
    let device = backend.device()?;
    let net = Inception::read(weights, &device)?;
    let f = features(&net, &values, shape);
    crate::output::write_file(
        out,
        &crate::output::npy_bytes_f32(&f, &[shape[0], FEATURES]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/inception")
    }

    /// The committed fixture (pytorch-fid's network with every width divided by 16, random
    /// weights and batch-norm statistics) against pytorch-fid's own forward pass
    /// (`scripts/fid-parity.py --fixture`): two 32×32 images resized to 299.
    #[test]
    fn pool3_features_match_pytorch_fid_on_the_fixture() {
        let dir = fixture();
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let want: Vec<f64> = expected["features"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let (images, shape) = crate::lpips::read_images(&dir.join("images.npy")).unwrap();
        let device = BackendKind::Flex.device().unwrap();
        let net =
            Inception::read(&dir.join(tweedie_core::inception::WEIGHTS_FILE), &device).unwrap();
        let got = tweedie_core::host_values(net.features(
            &images.iter().map(|v| (v + 1.0) * 0.5).collect::<Vec<_>>(),
            shape,
        ));
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "largest difference {worst} of {scale}"
        );
    }

    #[test]
    fn wrong_weights_and_gray_images_are_one_line_errors() {
        let lp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/lpips");
        let out = std::env::temp_dir().join(format!("tweedie-incep-{}.npy", std::process::id()));
        let e = format!(
            "{:#}",
            features_npy(
                &fixture().join("images.npy"),
                &lp.join("alex.pth"),
                &out,
                BackendKind::Flex
            )
            .unwrap_err()
        );
        assert!(
            e.contains("not pytorch-fid's Inception weights") && !e.contains('\n'),
            "{e}"
        );
        let e = format!(
            "{:#}",
            features_npy(
                &lp.join("gray28-a.npy"),
                &fixture().join(tweedie_core::inception::WEIGHTS_FILE),
                &out,
                BackendKind::Flex
            )
            .unwrap_err()
        );
        assert!(e.contains("RGB") && !e.contains('\n'), "{e}");
        assert!(!out.exists());
    }
}
