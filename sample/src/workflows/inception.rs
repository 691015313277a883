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
        out.extend(tweedie_core::host_values(net.features(&unit, [e - s, c, h, w])));
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
    crate::output::write_file(out, &crate::output::npy_bytes_f32(&f, &[shape[0], FEATURES]))
}
