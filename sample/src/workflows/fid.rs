//! Classifier-FID: the Fréchet distance between Gaussians fitted to classifier features of two
//! image sets (Heusel et al. 2017, eq. 6, with a small MNIST CNN's penultimate layer standing in
//! for Inception): d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use tweedie_core::classifier::{Classifier, ClassifierMeta};
use tweedie_core::device::BackendKind;
use tweedie_core::linalg::{matmul, sqrtm, sym_eigen};
use tweedie_datasets::{DatasetName, ImageSet, Split};

/// Mean and covariance (1/(n − 1)) of `n × d` row-major features.
pub fn moments(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let mut mu = vec![0.0; d];
    for r in x.chunks(d) {
        for (m, v) in mu.iter_mut().zip(r) {
            *m += v / n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    for r in x.chunks(d) {
        for i in 0..d {
            let ci = r[i] - mu[i];
            for j in 0..d {
                cov[i * d + j] += ci * (r[j] - mu[j]) / (n as f64 - 1.0).max(1.0);
            }
        }
    }
    (mu, cov)
}

/// The Fréchet distance d² between N(μ₁, Σ₁) and N(μ₂, Σ₂).
pub fn frechet(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> f64 {
    let d = mu1.len();
    let dm: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let r1 = sqrtm(s1, d);
    let m = matmul(&matmul(&r1, s2, d), &r1, d);
    let (l, _) = sym_eigen(&m, d);
    let tr_sqrt: f64 = l.iter().map(|v| v.max(0.0).sqrt()).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    dm + tr(s1) + tr(s2) - 2.0 * tr_sqrt
}

/// Penultimate classifier features of `n` uint8 images of `[C, H, W]`, whose pixel (image i,
/// channel ch, row y, column x) is `pixel(i, ch, y, x)` (so any memory layout is read in place),
/// in batches of 500.
pub fn features(
    classifier: &Classifier,
    pixel: impl Fn(usize, usize, usize, usize) -> u8,
    n: usize,
    [c, h, w]: [usize; 3],
    device: &Device,
) -> Vec<f64> {
    let per = c * h * w;
    let mut out = Vec::new();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let mut v = Vec::with_capacity((end - start) * per);
        for i in start..end {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        v.push(pixel(i, ch, y, x) as f32 / 127.5 - 1.0);
                    }
                }
            }
        }
        let t = Tensor::<4>::from_data(TensorData::new(v, [end - start, c, h, w]), device);
        out.extend(
            tweedie_core::host_values(classifier.features(t))
                .into_iter()
                .map(f64::from),
        );
    }
    out
}

/// A reference set's feature moments, computed once and compared with any number of sample
/// sets (a sweep over samplers scores each against the same 10,000 test images).
pub struct FidReference<'a> {
    classifier: &'a Classifier,
    mu: Vec<f64>,
    cov: Vec<f64>,
    /// Reference images.
    pub n: usize,
}

impl<'a> FidReference<'a> {
    /// The moments of `set`'s features (images CHW, as datasets store them).
    pub fn new(classifier: &'a Classifier, set: &ImageSet, d: usize, device: &Device) -> Self {
        let [_, h, w] = set.shape;
        let fr = features(
            classifier,
            |i, ch, y, x| set.image(i)[(ch * h + y) * w + x],
            set.len(),
            set.shape,
            device,
        );
        let (mu, cov) = moments(&fr, d);
        Self {
            classifier,
            mu,
            cov,
            n: set.len(),
        }
    }

    /// Classifier-FID of `n` uint8 images laid out N×H×W×C (what `sample` writes to `.npy`).
    pub fn fid(&self, data: &[u8], [n, h, w, c]: [usize; 4], device: &Device) -> f64 {
        let fs = features(
            self.classifier,
            |i, ch, y, x| data[((i * h + y) * w + x) * c + ch],
            n,
            [c, h, w],
            device,
        );
        let (mu, cov) = moments(&fs, self.mu.len());
        frechet(&mu, &cov, &self.mu, &self.cov)
    }
}

/// The classifier and the reference images classifier-FID compares with.
#[derive(Debug, Clone)]
pub struct ReferenceSpec {
    /// The classifier's run directory.
    pub classifier: PathBuf,
    pub dataset: DatasetName,
    pub split: Split,
    /// Reference images: the first N of the split (0: all).
    pub n_reference: usize,
    /// Directory of the dataset's files (else the default places).
    pub data_dir: Option<PathBuf>,
}

/// A loaded [`ReferenceSpec`].
pub struct LoadedReference {
    pub classifier: Classifier,
    pub meta: ClassifierMeta,
    pub set: ImageSet,
    /// "mnist test".
    pub label: String,
}

impl ReferenceSpec {
    pub fn load(&self, device: &Device) -> Result<LoadedReference> {
        let (classifier, meta) =
            crate::class_likelihood::load_classifier(&self.classifier, device)?;
        let kind = self.dataset.kind(None);
        let dir = tweedie_datasets::resolve_dir(kind, self.data_dir.as_deref())?;
        let mut set = tweedie_datasets::load(kind, self.split, &dir)?;
        if self.n_reference > 0 {
            set.truncate(self.n_reference);
        }
        Ok(LoadedReference {
            classifier,
            meta,
            set,
            label: format!("{} {}", kind.name(), self.split.name()),
        })
    }
}

/// Classifier-FID of the samples in a `.npy` file (uint8 N×H×W×C, what `sample` writes) against
/// `reference`, as the JSON record `sample fid` prints.
pub fn score_npy(
    samples: &Path,
    reference: &ReferenceSpec,
    backend: BackendKind,
) -> Result<serde_json::Value> {
    let bytes =
        std::fs::read(samples).with_context(|| format!("{}: cannot read", samples.display()))?;
    let (data, shape) = crate::output::parse_npy_u8(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", samples.display()))?;
    if shape[0] < 2 {
        bail!(
            "{}: need at least 2 samples, found {}",
            samples.display(),
            shape[0]
        );
    }
    let device = backend.device()?;
    let r = reference.load(&device)?;
    let cfg = r.meta.config;
    if [shape[1], shape[2], shape[3]] != [cfg.resolution, cfg.resolution, cfg.in_channels] {
        bail!(
            "{}: images are {}×{}×{}, the classifier takes {}×{}×{}",
            samples.display(),
            shape[1],
            shape[2],
            shape[3],
            cfg.resolution,
            cfg.resolution,
            cfg.in_channels
        );
    }
    let fid =
        FidReference::new(&r.classifier, &r.set, cfg.features, &device).fid(&data, shape, &device);
    Ok(serde_json::json!({
        "samples": samples.display().to_string(),
        "n_samples": shape[0],
        "reference": r.label,
        "n_reference": r.set.len(),
        "classifier_fid": fid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_distance_matches_the_gaussian_closed_form() {
        // N(0, I) vs N(m, diag(4, 9, 1)) in d = 3: |m|² + Σ (1 + s² − 2 s).
        let i3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let s2 = [4.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 1.0];
        let d = frechet(&[0.0; 3], &i3, &[1.0, 2.0, 0.0], &s2);
        let want = 5.0 + (1.0 + 4.0 - 4.0) + (1.0 + 9.0 - 6.0) + 0.0;
        assert!((d - want).abs() < 1e-9, "{d} vs {want}");
        // A rotated, correlated covariance against itself: 0.
        let s = [2.0, 0.8, 0.3, 0.8, 1.5, -0.2, 0.3, -0.2, 0.7];
        assert!(frechet(&[0.5; 3], &s, &[0.5; 3], &s).abs() < 1e-9);
        // √ of a correlated matrix squares back.
        let r = sqrtm(&s, 3);
        let back = matmul(&r, &r, 3);
        assert!(back.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-9));
    }
}
