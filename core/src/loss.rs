//! Training loss and the Gaussian likelihood pieces of the ELBO.

use burn::prelude::*;

use crate::denoiser::Denoiser;
use crate::diffusion::q_sample;
use crate::schedule::NoiseSchedule;

/// L_simple = E‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²   (DDPM eq. 14), averaged over the batch and
/// pixels. `t` and `eps` are drawn by the caller (one t per sample).
pub fn l_simple(
    model: &dyn Denoiser,
    s: &NoiseSchedule,
    x0: Tensor<4>,
    t: &[usize],
    eps: Tensor<4>,
) -> Tensor<1> {
    let x_t = q_sample(s, x0, t, eps.clone());
    let pred = model.eps(x_t, t);
    (pred - eps).square().mean()
}

/// Min-SNR-γ loss weights for ε-prediction (Hang et al. 2023, "Efficient Diffusion Training via
/// Min-SNR Weighting Strategy", §3.4): w_t = min(SNR_t, γ) / SNR_t with SNR_t = ᾱ_t / (1 − ᾱ_t).
/// Weight 1 where SNR_t ≤ γ (the noisy steps that shape the image), less than 1 at the nearly
/// clean steps whose ε-errors dominate L_simple's gradient early in training.
pub fn min_snr_weights(s: &NoiseSchedule, t: &[usize], gamma: f64) -> Vec<f64> {
    t.iter()
        .map(|&i| {
            let ab = s.alphas_cumprod[i];
            let snr = ab / (1.0 - ab);
            snr.min(gamma) / snr
        })
        .collect()
}

/// E[w_t ‖ε − ε_θ(x_t, t)‖²] with one weight per sample (e.g. [`min_snr_weights`]), averaged over
/// the batch and pixels; all weights 1 give [`l_simple`].
pub fn l_weighted(
    model: &dyn Denoiser,
    s: &NoiseSchedule,
    x0: Tensor<4>,
    t: &[usize],
    eps: Tensor<4>,
    weights: &[f64],
) -> Tensor<1> {
    let device = x0.device();
    let x_t = q_sample(s, x0, t, eps.clone());
    let pred = model.eps(x_t, t);
    let w = crate::diffusion::per_sample(weights, &device);
    ((pred - eps).square() * w).mean()
}

/// Per-sample mean over all non-batch dimensions: `[B, C, H, W]` → `[B]`.
pub fn mean_per_sample(x: Tensor<4>) -> Tensor<1> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c * h * w]).mean_dim(1).reshape([b])
}

/// KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})) per element, for scalar log-variances:
/// ½(−1 + lv₂ − lv₁ + e^{lv₁−lv₂} + (μ₁ − μ₂)² e^{−lv₂}).
pub fn normal_kl(mean1: Tensor<4>, logvar1: f64, mean2: Tensor<4>, logvar2: f64) -> Tensor<4> {
    let constant = 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp());
    (mean1 - mean2)
        .square()
        .mul_scalar(0.5 * (-logvar2).exp())
        .add_scalar(constant)
}

/// Standard normal CDF Φ(z) = ½(1 + erf(z/√2)).
fn std_normal_cdf(z: Tensor<4>) -> Tensor<4> {
    z.mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5)
}

/// log p(x | μ, σ) of the discretized Gaussian decoder for 8-bit data scaled to [−1, 1]
/// (DDPM eq. 13): bins of width 2/255 around each value, the edge bins open to ±∞.
/// `log_scale` is log σ. Probabilities are floored at 1e-12 as in the official code.
pub fn discretized_gaussian_log_likelihood(
    x: Tensor<4>,
    means: Tensor<4>,
    log_scale: f64,
) -> Tensor<4> {
    let inv_std = (-log_scale).exp();
    let centered = x.clone() - means;
    let plus_in = centered.clone().add_scalar(1.0 / 255.0).mul_scalar(inv_std);
    let min_in = centered.sub_scalar(1.0 / 255.0).mul_scalar(inv_std);
    let cdf_plus = std_normal_cdf(plus_in.clone());
    let cdf_min = std_normal_cdf(min_in.clone());
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    // 1 − Φ(z) = Φ(−z), without cancellation.
    let log_one_minus_cdf_min = std_normal_cdf(min_in.neg()).clamp_min(1e-12).log();
    let log_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    log_delta
        .mask_where(x.clone().lower_elem(-0.999), log_cdf_plus)
        .mask_where(x.greater_elem(0.999), log_one_minus_cdf_min)
}
