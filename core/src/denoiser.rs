//! The denoiser seam: anything that predicts ε from (x_t, t).

use burn::prelude::*;

/// A noise predictor ε_θ(x_t, t). `t` holds the *training* timestep of each sample (one per row
/// of `x_t`). The trained U-Net is one; closed-form denoisers of Gaussian priors are others.
pub trait Denoiser {
    /// ε̂ for a batch `x_t` of shape `[B, C, H, W]`, one timestep per sample.
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4>;
}

/// A noise predictor that also takes a condition: ε_θ(x_t, t, c) (the amortized route: c carries
/// the observation y, as extra channels of an image or a `[B, d_y, 1, 1]` vector).
pub trait ConditionalDenoiser {
    /// ε̂ for `x_t` `[B, C, H, W]` given `cond` (one row per sample).
    fn eps_given(&self, x_t: Tensor<4>, t: &[usize], cond: Tensor<4>) -> Tensor<4>;
}

/// A conditional denoiser with its condition fixed: an ordinary [`Denoiser`] for the samplers.
pub struct Conditioned<'a> {
    pub net: &'a dyn ConditionalDenoiser,
    /// One row per row of the x_t the samplers pass.
    pub cond: Tensor<4>,
}

impl Denoiser for Conditioned<'_> {
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let cond = self.cond.clone().to_device(&x_t.device());
        self.net.eps_given(x_t, t, cond)
    }
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
