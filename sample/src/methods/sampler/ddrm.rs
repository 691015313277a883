//! DDRM (Kawar, Elad, Ermon & Song 2022, "Denoising Diffusion Restoration Models", eq. 7–8 and
//! their `efficient_generalized_steps`): sampling in the spectral basis of a linear A = U Σ Vᵀ
//! with Gaussian noise σ_y, in the variance-exploding view x_t/√ᾱ_t = x₀ + σ_t ε,
//! σ_t = √((1 − ᾱ_t)/ᾱ_t). With x̄ = Vᵀx, ȳ = Σ⁺Uᵀy and σ_t' the next level, coordinate i:
//! - sᵢ = 0 (unobserved): x̄' = x̄₀ + √(1 − η²) σ_t' ε̄ + η σ_t' z;
//! - sᵢ σ_t' < σ_y (less noisy than y): x̄' = x̄₀ + √(1 − η²) σ_t' (ȳ − x̄₀)/(σ_y/sᵢ) + η σ_t' z;
//! - sᵢ σ_t' ≥ σ_y (noisier than y): x̄' = η_b ȳ + (1 − η_b) x̄₀ + √(σ_t'² − σ_y² η_b²/sᵢ²) z,
//!
//! x̄₀ = Vᵀx̂₀, ε̄ = Vᵀε̂, z ~ N(0, I). The reference code puts the boundary sᵢσ_t' = σ_y in the
//! second case; here it is in the third, so that without noise (σ_y = 0) the last step
//! (σ_t' = 0) returns ȳ on the observed coordinates with η_b = 1: A x̂₀ = y exactly. Defaults
//! are the paper's: η = 0.85, η_b = 1.

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0, ve_sigma};
use crate::check::{self, Range};
use crate::operator::spectral::Spectral;

/// DDRM's settings (`[ddrm]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdrmSettings {
    /// Respaced steps (paper: 20).
    pub steps: usize,
    /// η ∈ [0, 1]: fresh noise in the unobserved and less-noisy coordinates (paper: 0.85).
    pub eta: f64,
    /// η_b ∈ [0, 1]: weight of ȳ in the noisier-than-y coordinates (paper: 1).
    pub eta_b: f64,
    /// Clamp x̂₀ to [−1, 1].
    pub clip: bool,
}

impl Default for DdrmSettings {
    fn default() -> Self {
        Self {
            steps: 20,
            eta: 0.85,
            eta_b: 1.0,
            clip: true,
        }
    }
}

impl DdrmSettings {
    /// Ranges, naming the key under `section`.
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        check::float(&format!("{section}.eta"), self.eta, Range::Unit)?;
        check::float(&format!("{section}.eta_b"), self.eta_b, Range::Unit)?;
        if self.steps == 0 {
            anyhow::bail!("{section}.steps must be at least 1");
        }
        Ok(())
    }
}

/// What both spectral methods hold: the decomposition, ȳ and s per coordinate, σ_y.
pub struct SpectralData {
    pub spectral: Box<dyn Spectral>,
    /// ȳ = Σ⁺Uᵀy, one row per trajectory `[B, C, H, W]`.
    pub y_bar: Tensor<4>,
    /// sᵢ `[1, C, H, W]`.
    pub s: Tensor<4>,
    /// σ_y of the Gaussian noise on the model scale (0: noiseless).
    pub sigma: f64,
    /// 1 where sᵢ > 0 (the observed coordinates), else 0.
    on: Tensor<4>,
    /// sᵢ with the zeros replaced by 1 (safe to divide by).
    safe_s: Tensor<4>,
}

impl SpectralData {
    /// The data of observations `y` (one row per trajectory) of images of `shape`.
    pub fn new(spectral: Box<dyn Spectral>, y: Tensor<4>, shape: [usize; 3], sigma: f64) -> Self {
        let device = y.device();
        let y_bar = spectral.observed(y, shape);
        let s = spectral.singular_values(shape, &device);
        let on = s.clone().greater_elem(0.0).float();
        let safe_s = s.clone() + (on.clone().neg() + 1.0);
        Self {
            spectral,
            y_bar,
            s,
            sigma,
            on,
            safe_s,
        }
    }

    /// 1 where sᵢ > 0, and sᵢ with the zeros replaced by 1 (safe to divide by).
    pub fn observed_and_safe_s(&self) -> (Tensor<4>, Tensor<4>) {
        (self.on.clone(), self.safe_s.clone())
    }
}

pub struct Ddrm {
    pub data: SpectralData,
    pub settings: DdrmSettings,
}

impl Sampler for Ddrm {
    fn name(&self) -> &'static str {
        "ddrm"
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let DdrmSettings {
            eta, eta_b, clip, ..
        } = self.settings;
        let x0 = tweedie_x0(tr, x_t.clone(), eps.clone(), clip);
        let sp = &self.data.spectral;
        let x0_bar = sp.image_to_spectral(x0.clone());
        let eps_bar = sp.image_to_spectral(eps);
        let next = ve_sigma(tr.alpha_bar_prev);
        let sigma_y = self.data.sigma;
        let device = x_t.device();
        let shape = x_t.dims();
        let z = noise.normal(shape, &device);
        let (on, safe_s) = self.data.observed_and_safe_s();
        let y_bar = self.data.y_bar.clone();
        // Unobserved coordinates.
        let unobserved = x0_bar.clone()
            + eps_bar.mul_scalar((1.0 - eta * eta).sqrt() * next)
            + z.clone().mul_scalar(eta * next);
        // Observed: which side of y's noise level σ_y/sᵢ the next level is on.
        let noisier = self
            .data
            .s
            .clone()
            .mul_scalar(next)
            .greater_equal_elem(sigma_y)
            .float()
            * on.clone();
        let less = on.clone() - noisier.clone();
        let level = safe_s.clone().recip().mul_scalar(sigma_y); // σ_y/sᵢ
        let less_noisy = if sigma_y > 0.0 {
            x0_bar.clone()
                + (y_bar.clone() - x0_bar.clone()) / level.clone()
                    * ((1.0 - eta * eta).sqrt() * next)
                + z.clone().mul_scalar(eta * next)
        } else {
            x0_bar.clone()
        };
        let spread = (level.square().mul_scalar(-eta_b * eta_b) + next * next)
            .clamp_min(0.0)
            .sqrt();
        let noisier_value = y_bar.mul_scalar(eta_b) + x0_bar.mul_scalar(1.0 - eta_b) + spread * z;
        let off = on.neg() + 1.0;
        let x_bar = unobserved * off + less_noisy * less + noisier_value * noisier;
        let x_prev = sp
            .spectral_to_image(x_bar)
            .mul_scalar(tr.alpha_bar_prev.sqrt());
        StepOutput::new(x_prev, x0)
    }
}
