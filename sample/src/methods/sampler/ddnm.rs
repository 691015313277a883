//! DDNM and DDNM⁺ (Wang, Yu & Zhang 2023, "Zero-Shot Image Restoration Using Denoising
//! Diffusion Null-Space Model", eq. 13 and 17–19, Algorithm 2 without time travel): the DDPM
//! posterior step p(x_{t−1} | x_t, x̂₀) from a corrected x̂₀.
//! - Noiseless (DDNM, eq. 13): x̂₀ ← A⁺y + (I − A⁺A) x̂₀ — the range-space part of x̂₀ replaced
//!   by the observation's, the null-space part kept.
//! - With Gaussian noise σ_y (DDNM⁺, eq. 17–19): x̂₀ ← x̂₀ − Σ_t A⁺(A x̂₀ − y), and the step's
//!   fresh noise shrunk so that the noise carried in from y and the noise added sum to the
//!   posterior variance σ̃_t²: with a_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) (the x̂₀ weight of the DDPM mean),
//!   per spectral coordinate λᵢ = 1 if σ̃_t ≥ a_t σ_y/sᵢ else σ̃_t sᵢ/(a_t σ_y), and noise variance
//!   σ̃_t² − (a_t λᵢ σ_y/sᵢ)². The paper writes it for A with AA⁺ = I; in A's spectral basis
//!   ([`crate::spectral`]) the same rule holds coordinate by coordinate for any singular values.
//!
//! Without noise the last step (σ̃ = 0, a = 1) returns x̂₀ with its observed coordinates equal
//! to ȳ: A x̂₀ = y exactly.

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::ddrm::SpectralData;
use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};

/// DDNM's settings (`[ddnm]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdnmSettings {
    /// Respaced steps (paper: 100).
    pub steps: usize,
    /// Clamp x̂₀ to [−1, 1] before the correction.
    pub clip: bool,
}

impl Default for DdnmSettings {
    fn default() -> Self {
        Self {
            steps: 100,
            clip: true,
        }
    }
}

impl DdnmSettings {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        if self.steps == 0 {
            anyhow::bail!("{section}.steps must be at least 1");
        }
        Ok(())
    }
}

pub struct Ddnm {
    pub data: SpectralData,
    pub settings: DdnmSettings,
}

impl Sampler for Ddnm {
    fn name(&self) -> &'static str {
        "ddnm"
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let x0 = tweedie_x0(tr, x_t.clone(), eps, self.settings.clip);
        let sp = &self.data.spectral;
        let x0_bar = sp.image_to_spectral(x0);
        let (on, safe_s) = self.data.observed_and_safe_s();
        let post_sd = tr.posterior_variance().max(0.0).sqrt();
        let a = tr.beta() * tr.alpha_bar_prev.sqrt() / (1.0 - tr.alpha_bar);
        let sigma_y = self.data.sigma;
        // ρᵢ = a σ_y/sᵢ: the noise x̂₀'s correction carries into x_{t−1}; λᵢ = min(1, σ̃/ρᵢ).
        let rho = safe_s.recip().mul_scalar(a * sigma_y);
        let lambda = if sigma_y > 0.0 {
            (rho.clone().recip().mul_scalar(post_sd)).clamp_max(1.0) * on.clone()
        } else {
            on.clone()
        };
        let corrected =
            x0_bar.clone() - lambda.clone() * (x0_bar - self.data.y_bar.clone()) * on.clone();
        let x0_fixed = sp.spectral_to_image(corrected);
        let var = ((lambda * rho).square().neg() + post_sd * post_sd).clamp_min(0.0) * on.clone()
            + (on.neg() + 1.0).mul_scalar(post_sd * post_sd);
        let device = x_t.device();
        let z = noise.normal(x_t.dims(), &device);
        let x_prev =
            tr.posterior_mean(x_t, x0_fixed.clone()) + sp.spectral_to_image(var.sqrt() * z);
        StepOutput::new(x_prev, x0_fixed)
    }
}
