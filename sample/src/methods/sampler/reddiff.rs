//! RED-diff (Mardani, Song, Kautz & Vahdat 2024, "A Variational Perspective on Solving Inverse
//! Problems with Diffusion Models", eq. 9–11 and Algorithm 1): x₀ is estimated by optimising
//! μ on −log p(y | μ) plus the score-matching regulariser, whose gradient with the network
//! Jacobian dropped (their stop-gradient) is λ_t (ε_θ(x_t, t) − ε) at x_t = √ᾱ_t μ + √(1 − ᾱ_t) ε:
//! one network call per step and no backpropagation through the network. t descends over the
//! run's timesteps; λ_t = λ σ_t/α_t = λ √((1 − ᾱ_t)/ᾱ_t) (their SNR weighting, §4.2); μ moves by
//! Adam (β = (0.9, 0.99), as their code). μ starts at A⁺y for a linear A (else 0).
//!
//! Fitted to the sampler loop: the state passed between steps is the next x_t, built from the
//! updated μ with fresh ε (remembered, since the next gradient needs it); the first step takes
//! the loop's x_T as given, with its ε = (x_T − √ᾱ_T μ)/√(1 − ᾱ_T). The last step returns μ.

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput};
use crate::check::{self, Range};
use crate::likelihood::{Likelihood, log_likelihood_grad};

/// RED-diff's settings (`[reddiff]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedDiffSettings {
    /// Optimisation steps, one network call each (paper: 1000).
    pub steps: usize,
    /// λ: weight of the denoising regulariser (paper: 0.25).
    pub lambda: f64,
    /// Adam's learning rate on μ (their image code: 0.1).
    pub lr: f64,
    /// Weight of −log p(y | μ) (1: the likelihood as it is).
    pub obs_weight: f64,
}

impl Default for RedDiffSettings {
    fn default() -> Self {
        Self {
            steps: 1000,
            lambda: 0.25,
            lr: 0.1,
            obs_weight: 1.0,
        }
    }
}

impl RedDiffSettings {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        check::float(
            &format!("{section}.lambda"),
            self.lambda,
            Range::NonNegative,
        )?;
        check::float(&format!("{section}.lr"), self.lr, Range::Positive)?;
        check::float(
            &format!("{section}.obs_weight"),
            self.obs_weight,
            Range::NonNegative,
        )?;
        if self.steps == 0 {
            anyhow::bail!("{section}.steps must be at least 1");
        }
        Ok(())
    }
}

/// Adam's moments and step count.
struct Adam {
    m: Tensor<4>,
    v: Tensor<4>,
    k: i32,
}

pub struct RedDiff {
    pub likelihood: Box<dyn Likelihood>,
    /// μ's start, one row per trajectory (A⁺y, or zeros).
    pub init: Tensor<4>,
    pub settings: RedDiffSettings,
    mu: Option<Tensor<4>>,
    eps: Option<Tensor<4>>,
    adam: Option<Adam>,
}

impl RedDiff {
    pub fn new(
        likelihood: Box<dyn Likelihood>,
        init: Tensor<4>,
        settings: RedDiffSettings,
    ) -> Self {
        Self {
            likelihood,
            init,
            settings,
            mu: None,
            eps: None,
            adam: None,
        }
    }
}

const BETAS: (f64, f64) = (0.9, 0.99);
const ADAM_EPS: f64 = 1e-8;

impl Sampler for RedDiff {
    fn name(&self) -> &'static str {
        "reddiff"
    }

    fn reset(&mut self) {
        self.mu = None;
        self.eps = None;
        self.adam = None;
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps_hat: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let device = x_t.device();
        let mu = self
            .mu
            .take()
            .unwrap_or_else(|| self.init.clone().to_device(&device));
        let a = tr.alpha_bar;
        let eps = self.eps.take().unwrap_or_else(|| {
            (x_t.clone() - mu.clone().mul_scalar(a.sqrt())).div_scalar((1.0 - a).sqrt())
        });
        let s = self.settings;
        let lambda_t = s.lambda * ((1.0 - a) / a).sqrt();
        let grad = log_likelihood_grad(self.likelihood.as_ref(), mu.clone())
            .mul_scalar(-s.obs_weight)
            + (eps_hat - eps).mul_scalar(lambda_t);
        let Adam { m, v, k } = self.adam.take().unwrap_or_else(|| Adam {
            m: mu.zeros_like(),
            v: mu.zeros_like(),
            k: 0,
        });
        let k = k + 1;
        let m = m.mul_scalar(BETAS.0) + grad.clone().mul_scalar(1.0 - BETAS.0);
        let v = v.mul_scalar(BETAS.1) + grad.square().mul_scalar(1.0 - BETAS.1);
        let m_hat = m.clone().div_scalar(1.0 - BETAS.0.powi(k));
        let v_hat = v.clone().div_scalar(1.0 - BETAS.1.powi(k));
        let mu = mu - (m_hat / (v_hat.sqrt() + ADAM_EPS)).mul_scalar(s.lr);
        self.adam = Some(Adam { m, v, k });
        let fresh = noise.normal(mu.dims(), &device);
        let p = tr.alpha_bar_prev;
        let x_prev = mu.clone().mul_scalar(p.sqrt()) + fresh.clone().mul_scalar((1.0 - p).sqrt());
        self.mu = Some(mu.clone());
        self.eps = Some(fresh);
        StepOutput::new(x_prev, mu)
    }
}
