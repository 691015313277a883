//! Inception-v3 pool3 features of an image set from a `.npy` file (`sample inception`), on the
//! network of [`tweedie_core::inception`]: the features FID and KID are computed from.

use std::path::Path;

use anyhow::{Result, bail};
use tweedie_core::device::BackendKind;
use tweedie_core::feature_stats::{FeatureStats, kid};
use tweedie_core::inception::Inception;

/// Reads the images of `images` (float32 N×3×H×W on [−1, 1] or uint8 N×H×W×3), computes their
/// pool3 features with the weights file `weights` (a progress bar unless `quiet`) and writes them
/// to `out` as float32 N×2048.
pub fn features_npy(
    images: &Path,
    weights: &Path,
    out: &Path,
    backend: BackendKind,
    quiet: bool,
) -> Result<()> {
    let (values, [n, c, h, w]) = crate::output::read_images(images)?;
    if c != 3 {
        bail!(
            "{}: Inception takes RGB images, these have {c} channels",
            images.display()
        );
    }
    let device = backend.device()?;
    let net = Inception::read(weights, &device)?;
    let bar = crate::progress::bar(
        n,
        quiet,
        "  Inception features [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}",
    );
    let f = crate::inception_fid::features_of_model_scale(&net, &values, [n, c, h, w], |k| {
        bar.inc(k as u64)
    });
    bar.finish_and_clear();
    crate::output::write_file(out, &crate::output::npy_bytes_f32(&f, &[n, net.width()]))
}

/// FID and KID between two feature files (float32 N×d, as `sample inception` writes; at least
/// two rows each, the same d), KID over `subsets` random subsets of `subset_size` rows drawn from
/// `seed`; the JSON record `sample feature-distance` prints.
pub fn distance_npy(
    a: &Path,
    b: &Path,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<serde_json::Value> {
    let read = |p: &Path| -> Result<(Vec<f32>, usize, usize)> {
        let bytes =
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", p.display()))?;
        let (v, dims) = crate::output::parse_npy_f32(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        let [n, d] = <[usize; 2]>::try_from(dims.as_slice()).map_err(|_| {
            anyhow::anyhow!("{}: expected N×d features, shape is {dims:?}", p.display())
        })?;
        if n < 2 {
            bail!(
                "{}: need at least 2 rows of features, found {n}",
                p.display()
            );
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!("{}: feature {i} is {}", p.display(), v[i]);
        }
        Ok((v, n, d))
    };
    let ((fa, na, da), (fb, nb, db)) = (read(a)?, read(b)?);
    if da != db {
        bail!(
            "{} has {da} features per row, {} has {db}",
            a.display(),
            b.display()
        );
    }
    if subsets == 0 || subset_size < 2 {
        bail!("--kid-subsets must be at least 1 and --kid-subset-size at least 2");
    }
    let fid = FeatureStats::of(&fa, da).frechet(&FeatureStats::of(&fb, db));
    let mut rng = tweedie_core::rng::Rng::new(seed);
    let (kid, kid_std) = kid(&fa, &fb, da, subsets, subset_size, &mut rng);
    Ok(serde_json::json!({
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "kid_subsets": subsets,
        "kid_subset_size": subset_size.min(na).min(nb),
        "n_a": na,
        "n_b": nb,
        "features": da,
    }))
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
        let (images, shape) = crate::output::read_images(&dir.join("images.npy")).unwrap();
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
                BackendKind::Flex,
                true
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
                BackendKind::Flex,
                true
            )
            .unwrap_err()
        );
        assert!(e.contains("RGB") && !e.contains('\n'), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn feature_distance_reads_npy_and_refuses_bad_features() {
        let tmp = std::env::temp_dir().join(format!("tweedie-fd-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let write = |name: &str, v: &[f32], shape: &[usize]| {
            let p = tmp.join(name);
            std::fs::write(&p, crate::output::npy_bytes_f32(v, shape)).unwrap();
            p
        };
        let a: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..40).map(|i| ((i * 5) % 13) as f32 * 0.1 + 0.2).collect();
        let (pa, pb) = (write("a.npy", &a, &[10, 4]), write("b.npy", &b, &[10, 4]));
        let r = distance_npy(&pa, &pb, 3, 10, 0).unwrap();
        let want = FeatureStats::of(&a, 4).frechet(&FeatureStats::of(&b, 4));
        assert_eq!(r["fid"].as_f64().unwrap(), want);
        // One subset of every row (in shuffled order): KID is the MMD² of the whole sets.
        let r = distance_npy(&pa, &pb, 1, 10, 0).unwrap();
        let whole = tweedie_core::feature_stats::mmd2_poly(&a, &b, 4);
        assert!((r["kid"].as_f64().unwrap() - whole).abs() <= 1e-12 * whole.abs());
        let wide = write("wide.npy", &a, &[8, 5]);
        let mut nan = a.clone();
        nan[3] = f32::NAN;
        let nan = write("nan.npy", &nan, &[10, 4]);
        for (x, want) in [(&wide, "features per row"), (&nan, "NaN")] {
            let e = format!("{:#}", distance_npy(&pa, x, 3, 10, 0).unwrap_err());
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
        std::fs::remove_dir_all(&tmp).ok();
    }
}
