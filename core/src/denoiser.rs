//! The denoiser seam: anything that predicts ε from (x_t, t).

use burn::prelude::*;

/// A noise predictor ε_θ(x_t, t). `t` holds the *training* timestep of each sample (one per row
/// of `x_t`). The trained U-Net is one; closed-form denoisers of Gaussian priors are others.
pub trait Denoiser {
    /// ε̂ for a batch `x_t` of shape `[B, C, H, W]`, one timestep per sample.
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4>;
}

/// The exact ε-predictor for Gaussian data x_0 ~ N(μ, s² I) (per pixel, independent):
/// E[ε | x_t] = √(1 − ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ). A test oracle for losses and samplers.
#[derive(Debug, Clone)]
pub struct GaussianDenoiser {
    pub mean: f64,
    pub std: f64,
    pub alphas_cumprod: Vec<f64>,
}

impl Denoiser for GaussianDenoiser {
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let device = x_t.device();
        let coef: Vec<f64> = t
            .iter()
            .map(|&i| {
                let ab = self.alphas_cumprod[i];
                (1.0 - ab).sqrt() / (ab * self.std * self.std + 1.0 - ab)
            })
            .collect();
        let shift: Vec<f64> = t
            .iter()
            .map(|&i| self.alphas_cumprod[i].sqrt() * self.mean)
            .collect();
        (x_t - crate::diffusion::per_sample(&shift, &device))
            * crate::diffusion::per_sample(&coef, &device)
    }
}
