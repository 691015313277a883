//! Image-quality metrics on the [0, 1] scale (images given on the model's [−1, 1] scale are
//! mapped by (x + 1)/2 first).

/// Peak signal-to-noise ratio in dB with peak 1: 10 log10(1 / MSE). Infinite for identical images.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr of images of different sizes");
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x as f64 - *y as f64) * 0.5).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse).log10()
}

/// Structural similarity (Wang et al. 2004) of two single-channel `h × w` images given on the
/// [−1, 1] scale: 11×11 Gaussian window (σ = 1.5, truncated at the border), K1 = 0.01,
/// K2 = 0.03, L = 1; the mean SSIM map over all pixels.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
    assert_eq!(a.len(), h * w, "ssim: image a is not {h}×{w}");
    assert_eq!(b.len(), h * w, "ssim: image b is not {h}×{w}");
    let to01 = |v: &[f32]| {
        v.iter()
            .map(|x| (*x as f64 + 1.0) * 0.5)
            .collect::<Vec<f64>>()
    };
    let (x, y) = (to01(a), to01(b));
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let r = 5isize;
    let g: Vec<f64> = (-r..=r)
        .map(|d| (-(d * d) as f64 / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let mut total = 0.0;
    for i in 0..h as isize {
        for j in 0..w as isize {
            let (mut sw, mut mx, mut my, mut sxx, mut syy, mut sxy) =
                (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for di in -r..=r {
                for dj in -r..=r {
                    let (ii, jj) = (i + di, j + dj);
                    if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                        continue;
                    }
                    let wt = g[(di + r) as usize] * g[(dj + r) as usize];
                    let k = ii as usize * w + jj as usize;
                    sw += wt;
                    mx += wt * x[k];
                    my += wt * y[k];
                    sxx += wt * x[k] * x[k];
                    syy += wt * y[k] * y[k];
                    sxy += wt * x[k] * y[k];
                }
            }
            let (mx, my) = (mx / sw, my / sw);
            let (vx, vy, cxy) = (sxx / sw - mx * mx, syy / sw - my * my, sxy / sw - mx * my);
            total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
        }
    }
    total / (h * w) as f64
}

/// The mean SSIM over channels of a `c × h × w` image (CHW, [−1, 1] scale).
pub fn ssim_chw(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
    (0..c)
        .map(|k| {
            ssim(
                &a[k * h * w..(k + 1) * h * w],
                &b[k * h * w..(k + 1) * h * w],
                h,
                w,
            )
        })
        .sum::<f64>()
        / c as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_matches_its_definition() {
        // A uniform error of 0.1 on [0, 1] (0.2 on [−1, 1]): MSE 0.01, PSNR 20 dB.
        let a = vec![0.0f32; 100];
        let b = vec![0.2f32; 100];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-5, "{}", psnr(&a, &b));
        assert!(psnr(&a, &a).is_infinite());
    }

    #[test]
    fn ssim_is_one_for_identical_images_and_follows_its_formula_for_constant_ones() {
        let img: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 / 32.0) - 1.0)
            .collect();
        assert!((ssim(&img, &img, 8, 8) - 1.0).abs() < 1e-12);
        // Two constant images of intensities p and q: the variances vanish, so
        // SSIM = (2pq + C1)/(p² + q² + C1) everywhere.
        let (p, q) = (0.2f64, 0.6f64);
        let a = vec![(2.0 * p - 1.0) as f32; 64];
        let b = vec![(2.0 * q - 1.0) as f32; 64];
        let want = (2.0 * p * q + 1e-4) / (p * p + q * q + 1e-4);
        assert!((ssim(&a, &b, 8, 8) - want).abs() < 1e-6);
        // Noise lowers it, more noise lowers it more.
        let mut r = tweedie_core::rng::Rng::new(1);
        let z = r.normals(64);
        let noisy = |s: f32| {
            img.iter()
                .zip(&z)
                .map(|(x, n)| x + s * n)
                .collect::<Vec<f32>>()
        };
        let (s1, s2) = (ssim(&img, &noisy(0.1), 8, 8), ssim(&img, &noisy(0.4), 8, 8));
        assert!(1.0 > s1 && s1 > s2, "{s1} {s2}");
    }
}
