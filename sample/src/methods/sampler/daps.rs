//! DAPS (Zhang, Chu, Berner, Meng, Anandkumar & Song 2025, "Improving Diffusion Inverse Problem
//! Solving with Decoupled Noise Annealing", Algorithm 1), in the variance-exploding view
//! x_t/√ᾱ_t = x₀ + σ_t ε, σ_t = √((1 − ᾱ_t)/ᾱ_t), over the run's timesteps as annealing levels:
//! 1. x̂₀(x_t): the probability-flow ODE from t to 0 in `ode_steps` Euler steps (deterministic
//!    DDIM steps; the first uses the loop's ε̂, the others call the network);
//! 2. x₀ ~ p(x₀ | x_t, y) ∝ N(x₀; x̂₀, r_t² I) p(y | x₀) with r_t = σ_t, by `langevin_steps`
//!    steps x₀ ← x₀ + η (∇ log p(y | x₀) − (x₀ − x̂₀)/r_t²) + √(2η) z, η decaying linearly from
//!    `lr` to `lr`·`lr_min_ratio` over the annealing (their code), and capped at
//!    ½/(1/r_t² + L) with L the likelihood's curvature bound, where a step would otherwise
//!    diverge (small r_t);
//! 3. x_{t'} = √ᾱ_{t'} (x₀ + σ_{t'} z): decoupled from x_t, which lets DAPS correct large
//!    errors early. Any likelihood (operator and noise model) works; only its gradient is used.

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0, ve_sigma};
use crate::check::{self, Range};
use crate::likelihood::{Likelihood, log_likelihood_grad};

/// DAPS's settings (`[daps]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DapsSettings {
    /// Annealing levels (paper: 200 for DAPS-1K).
    pub steps: usize,
    /// Euler steps of the ODE to x̂₀ per level (paper: 5).
    pub ode_steps: usize,
    /// Langevin steps on x₀ per level (paper: 100).
    pub langevin_steps: usize,
    /// Langevin step size at the first level (paper: 1e-4 on 256² images).
    pub lr: f64,
    /// The step size at the last level, as a fraction of `lr` (paper: 0.01).
    pub lr_min_ratio: f64,
    /// Clamp x̂₀ to [−1, 1] (the data range of images).
    pub clip: bool,
}

impl Default for DapsSettings {
    fn default() -> Self {
        Self {
            steps: 200,
            ode_steps: 5,
            langevin_steps: 100,
            lr: 1e-4,
            lr_min_ratio: 0.01,
            clip: true,
        }
    }
}

impl DapsSettings {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        check::float(&format!("{section}.lr"), self.lr, Range::Positive)?;
        check::float(
            &format!("{section}.lr_min_ratio"),
            self.lr_min_ratio,
            Range::UnitExclusiveZero,
        )?;
        if self.steps == 0 || self.ode_steps == 0 {
            anyhow::bail!("{section}.steps and {section}.ode_steps must be at least 1");
        }
        Ok(())
    }

    /// Network calls per trajectory.
    pub fn nfe(&self) -> usize {
        self.steps * self.ode_steps
    }
}

pub struct Daps {
    pub likelihood: Box<dyn Likelihood>,
    pub settings: DapsSettings,
    /// An upper bound L on −∇² log p(y | x₀) (σ⁻² times AAᵀ's largest eigenvalue for Gaussian
    /// noise), for the step-size cap; ∞ disables the cap's likelihood part.
    pub curvature: f64,
    /// ᾱ_t of the model's schedule, for the ODE's intermediate levels.
    alphas: Vec<f64>,
    /// Levels done (for the step-size decay).
    level: usize,
}

impl Daps {
    pub fn new(
        likelihood: Box<dyn Likelihood>,
        settings: DapsSettings,
        curvature: f64,
        alphas: Vec<f64>,
    ) -> Self {
        Self {
            likelihood,
            settings,
            curvature,
            alphas,
            level: 0,
        }
    }
}

impl Sampler for Daps {
    fn name(&self) -> &'static str {
        "daps"
    }

    fn reset(&mut self) {
        self.level = 0;
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let s = self.settings;
        let device = x_t.device();
        let b = x_t.dims()[0];
        // 1. The ODE from t to 0: deterministic DDIM steps on t_k = t (1 − k/n).
        let n = s.ode_steps;
        let mut x = x_t;
        let mut e = eps;
        let mut extra = 0;
        let mut x0 = x.clone();
        for k in 0..n {
            let t_k = tr.t * (n - k) / n;
            let at = Transition {
                t: t_k,
                t_prev: None,
                alpha_bar: self.alphas[t_k],
                alpha_bar_prev: 1.0,
            };
            x0 = tweedie_x0(&at, x.clone(), e.clone(), s.clip);
            if k + 1 == n {
                break;
            }
            let t_next = tr.t * (n - k - 1) / n;
            let a_next = self.alphas[t_next];
            x = x0.clone().mul_scalar(a_next.sqrt()) + e.mul_scalar((1.0 - a_next).sqrt());
            e = model.eps(x.clone(), &vec![t_next; b]);
            extra += 1;
        }
        let x0_hat = x0;
        // 2. Langevin on x₀ around x̂₀ with the likelihood.
        let r2 = ve_sigma(tr.alpha_bar).powi(2).max(1e-12);
        let ratio = self.level as f64 / s.steps.max(1) as f64;
        let lr = s.lr * (1.0 + ratio * (s.lr_min_ratio - 1.0));
        let lr = lr.min(0.5 / (1.0 / r2 + self.curvature));
        let mut z = x0_hat.clone();
        for _ in 0..s.langevin_steps {
            let g = log_likelihood_grad(self.likelihood.as_ref(), z.clone())
                - (z.clone() - x0_hat.clone()).div_scalar(r2);
            let w = noise.normal(z.dims(), &device);
            z = z + g.mul_scalar(lr) + w.mul_scalar((2.0 * lr).sqrt());
        }
        self.level += 1;
        // 3. Re-noise to the next level.
        let p = tr.alpha_bar_prev;
        let w = noise.normal(z.dims(), &device);
        let x_prev = (z.clone() + w.mul_scalar(ve_sigma(p))).mul_scalar(p.sqrt());
        StepOutput {
            x_prev,
            x0: z,
            extra_nfe: extra,
        }
    }
}
