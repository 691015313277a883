//! MCGdiff (Cardoso, Janati, Le Corff & Moulines 2024, "Monte Carlo guided diffusion for
//! Bayesian linear inverse problems", Algorithm 1): a fully adapted particle filter over the
//! reverse chain for a linear A with Gaussian noise, in A's spectral basis
//! ([`crate::operator::spectral`]), exact as K → ∞.
//!
//! Each observed spectral coordinate i (sᵢ > 0, ȳᵢ = (Uᵀy)ᵢ/sᵢ, noise σᵢ = σ/sᵢ) is twisted at
//! level t by gₜ(x̄) = N(√ᾱₜ ȳᵢ; x̄ᵢ, (1 − ᾱₜ) + ᾱₜ σᵢ²): the observation pushed through the
//! forward process. At ᾱ = 1 this is the likelihood itself, so the filter's last twist is
//! p(y | x₀) and its final target the chain's posterior; without noise it is the paper's
//! noiseless potential N(√ᾱₜ ȳ; x̄, 1 − ᾱₜ). (With noise the paper splits time at the τ where
//! the forward noise equals σᵢ; this twist keeps one formula for every t instead, and the
//! filter is exact as K → ∞ for any positive twist.)
//!
//! A step from t to s with the DDPM kernel N(μ(xₜ), v) (v = β̃, μ from the denoiser):
//! 1. each particle's predictive weight Πᵢ N(√ᾱ_s ȳᵢ; μ̄ᵢ, v + w_{s,i}) / gₜ(xₜ) (the first step
//!    without the division: x_T ~ N(0, I) weighted by g_T, which cancels), whose mean over a
//!    system multiplies its Ẑ;
//! 2. multinomial-type resampling on them (every step: the paper's);
//! 3. observed coordinates drawn from the kernel times the next twist (a Gaussian product),
//!    the others from the kernel.
//!
//! The last step's kernel is the point mass at x̂₀ (v = 0): it moves nothing but weights by the
//! likelihood. Ẑ is then an unbiased estimate of p(ȳ) under the chain; [`Mcgdiff::log_z`] adds
//! the constant that turns it into p(y) (y's part outside A's range and the Jacobian Πᵢ 1/sᵢ).

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;
use tweedie_core::rng::Rng;

use super::particles::select_rows;
use super::resample::{Resampling, ess, log_sum_exp};
use crate::sampler::{NoiseSource, Sampler, SpectralData, StepOutput};

/// MCGdiff's settings (`[mcgdiff]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McgdiffSettings {
    /// Particle counts K to run (one system of K per posterior sample).
    #[serde(deserialize_with = "crate::toml_file::one_or_many")]
    pub particles: Vec<usize>,
    /// Respaced reverse steps.
    pub steps: usize,
    pub resampling: Resampling,
    /// Clamp x̂₀ to [−1, 1] (a trained network's x̂₀ is far off at large t; the exactness
    /// checks turn it off).
    pub clip: bool,
}

impl Default for McgdiffSettings {
    fn default() -> Self {
        Self {
            particles: vec![4],
            steps: 100,
            resampling: Resampling::Systematic,
            clip: true,
        }
    }
}

impl McgdiffSettings {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        if self.steps == 0 || self.particles.is_empty() || self.particles.contains(&0) {
            anyhow::bail!("{section}.steps and every {section}.particles must be at least 1");
        }
        Ok(())
    }
}

pub struct Mcgdiff {
    data: SpectralData,
    k: usize,
    groups: usize,
    resampling: Resampling,
    clip: bool,
    rng: Rng,
    /// Σ log (mean predictive weight) per system.
    log_z: Vec<f64>,
    /// Per system, the ESS of each step's predictive weights.
    ess: Vec<Vec<f64>>,
    /// log gₜ of each row at the current level (None before the first step).
    twist: Option<Vec<f64>>,
    /// log of the constant turning Ẑ over ȳ into Ẑ over y, per system.
    log_jacobian: Vec<f64>,
}

/// log N(a; b, var) summed over the coordinates where `on` is 1, per row.
fn log_normal_rows(a: Tensor<4>, b: Tensor<4>, var: Tensor<4>, on: Tensor<4>) -> Vec<f64> {
    let rows = b.dims()[0];
    let t = ((a - b).square() / var.clone() + var.log() + (2.0 * std::f64::consts::PI).ln())
        .mul_scalar(-0.5)
        * on;
    tweedie_core::host_values(t.reshape([rows as i32, -1]).sum_dim(1))
        .into_iter()
        .map(f64::from)
        .collect()
}

impl Mcgdiff {
    /// `groups` systems of `k` consecutive rows; `data`'s ȳ has one row per particle.
    /// `log_jacobian[g]`: log p(y) − log p(ȳ) of system g's observation.
    pub fn new(
        data: SpectralData,
        groups: usize,
        k: usize,
        settings: &McgdiffSettings,
        seed: u64,
        log_jacobian: Vec<f64>,
    ) -> Self {
        Self {
            data,
            k,
            groups,
            resampling: settings.resampling,
            clip: settings.clip,
            rng: Rng::new(seed),
            log_z: vec![0.0; groups],
            ess: vec![Vec::new(); groups],
            twist: None,
            log_jacobian,
        }
    }

    /// log Ẑ per system: an unbiased estimate (in Ẑ) of the chain's p(y).
    pub fn log_z(&self) -> Vec<f64> {
        self.log_z
            .iter()
            .zip(&self.log_jacobian)
            .map(|(z, j)| z + j)
            .collect()
    }

    /// Mean ESS of system g's steps.
    pub fn ess_mean_of(&self, g: usize) -> f64 {
        let e = &self.ess[g];
        e.iter().sum::<f64>() / e.len().max(1) as f64
    }

    /// The row drawn for each system: after the last resampling every particle has weight 1/K,
    /// so one uniformly at random (not the first: resampling returns ancestors in ascending
    /// order, and the lowest survivor is not drawn in proportion to its weight).
    pub fn pick(&mut self) -> Vec<usize> {
        (0..self.groups)
            .map(|g| g * self.k + self.rng.below(self.k))
            .collect()
    }

    /// (1 on observed coordinates, σᵢ² there).
    fn noise_var(&self) -> (Tensor<4>, Tensor<4>) {
        let (on, safe) = self.data.observed_and_safe_s();
        let sigma2 = safe
            .square()
            .recip()
            .mul_scalar(self.data.sigma * self.data.sigma);
        (on, sigma2)
    }

    /// The twist's variance at ᾱ: (1 − ᾱ) + ᾱ σᵢ².
    fn twist_var(sigma2: &Tensor<4>, alpha_bar: f64) -> Tensor<4> {
        sigma2.clone().mul_scalar(alpha_bar) + (1.0 - alpha_bar)
    }
}

impl Sampler for Mcgdiff {
    fn name(&self) -> &'static str {
        "mcgdiff"
    }

    fn reset(&mut self) {
        self.twist = None;
        self.log_z = vec![0.0; self.groups];
        self.ess = vec![Vec::new(); self.groups];
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let x0 = crate::sampler::tweedie_x0(tr, x_t.clone(), eps, self.clip);
        let (mean, var) = if tr.t_prev.is_some() {
            (
                tr.posterior_mean(x_t.clone(), x0.clone()),
                tr.posterior_variance(),
            )
        } else {
            (x0.clone(), 0.0)
        };
        let sp = &self.data.spectral;
        let (on, sigma2) = self.noise_var();
        let y_bar = self.data.y_bar.clone();
        let mu = sp.image_to_spectral(mean);
        // 1. Predictive weights.
        let next = tr.alpha_bar_prev;
        let w_next = Self::twist_var(&sigma2, next);
        let target = y_bar.clone().mul_scalar(next.sqrt());
        let log_pred = log_normal_rows(
            target.clone(),
            mu.clone(),
            w_next.clone().add_scalar(var),
            on.clone(),
        );
        let log_lambda: Vec<f64> = match &self.twist {
            Some(prev) => log_pred.iter().zip(prev).map(|(p, g)| p - g).collect(),
            None => log_pred,
        };
        // 2. Resampling, per system.
        let mut ancestors = Vec::with_capacity(self.groups * self.k);
        for g in 0..self.groups {
            let lw = &log_lambda[g * self.k..(g + 1) * self.k];
            self.log_z[g] += log_sum_exp(lw) - (self.k as f64).ln();
            self.ess[g].push(ess(lw));
            let local = self.resampling.ancestors(lw, &mut self.rng);
            ancestors.extend(local.into_iter().map(|j| g * self.k + j));
        }
        let mu = select_rows(mu, &ancestors);
        let x0 = select_rows(x0, &ancestors);
        // 3. Propose: observed coordinates from the kernel × the next twist.
        let device = mu.device();
        let z = noise.normal(mu.dims(), &device);
        let x_bar = if var > 0.0 {
            let post_var = (w_next.clone().recip() + 1.0 / var).recip();
            let post_mean =
                post_var.clone() * (mu.clone().div_scalar(var) + target.clone() / w_next.clone());
            let observed = post_mean + post_var.sqrt() * z.clone();
            let free = mu + z.mul_scalar(var.sqrt());
            observed * on.clone() + free * (on.clone().neg() + 1.0)
        } else {
            mu
        };
        // The twist of the new particles at their level.
        self.twist = Some(log_normal_rows(target, x_bar.clone(), w_next, on));
        StepOutput::new(sp.spectral_to_image(x_bar), x0)
    }
}
