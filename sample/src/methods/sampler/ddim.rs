//! DDIM (Song et al. 2021), eq. (12) with σ_t of eq. (16):
//! x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z,
//! σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev). η = 0 is deterministic; η = 1 is DDPM-like.
//! Matches diffusers' `DDIMScheduler.step` (set_alpha_to_one: ᾱ_prev = 1 after the last step).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::{Transition, eps_from_x0};

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};

#[derive(Debug, Clone, Copy)]
pub struct Ddim {
    pub eta: f64,
    /// Clamp x̂_0 to [−1, 1]; ε̂ is then recomputed from the clamped x̂_0.
    pub clip: bool,
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let b = x_t.dims()[0];
        let x0 = tweedie_x0(tr, x_t.clone(), eps.clone(), self.clip);
        let eps = if self.clip {
            eps_from_x0(x_t.clone(), x0.clone(), &vec![tr.alpha_bar; b])
        } else {
            eps
        };
        let (ab, abp) = (tr.alpha_bar, tr.alpha_bar_prev);
        let variance = (1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp);
        let sigma = self.eta * variance.max(0.0).sqrt();
        let dir = eps.mul_scalar((1.0 - abp - sigma * sigma).max(0.0).sqrt());
        let mut x_prev = x0.clone().mul_scalar(abp.sqrt()) + dir;
        if self.eta > 0.0 {
            x_prev = x_prev + noise.normal(x_t.dims(), &x_t.device()).mul_scalar(sigma);
        }
        StepOutput::new(x_prev, x0)
    }
}
