//! PnP-DM (Wu, Sun, Chen, Zhang, Yue & Bouman 2024, "Principled Probabilistic Imaging using
//! Diffusion Models as Plug-and-Play Priors", Algorithm 1): split Gibbs sampling of
//! π(x, z) ∝ p(x) exp(−‖x − z‖²/(2ρ²)) p(y | z), alternating
//! - the likelihood step z ~ π(z | x) ∝ p(y | z) exp(−‖z − x‖²/(2ρ²)): exact for Gaussian
//!   noise and an operator with a closed-form SVD (per spectral coordinate, precision
//!   sᵢ²/σ² + 1/ρ² and mean (sᵢ² ȳᵢ/σ² + x̄ᵢ/ρ²)/precision); otherwise `langevin_steps`
//!   unadjusted Langevin steps from x with step ¼/(L + 1/ρ²), L the likelihood's curvature
//!   bound (per pixel where the likelihood gives one);
//! - the prior step x ~ π(x | z) ∝ p(x) exp(−‖x − z‖²/(2ρ²)): the posterior of a clean image
//!   seen through noise ρ, which is the diffusion's reverse process started at the t* whose
//!   variance-exploding level √((1 − ᾱ)/ᾱ) is nearest ρ, from x_{t*} = √ᾱ_{t*} z, in
//!   `denoise_steps` ancestral (DDPM) steps;
//!
//! with ρ annealed ρ_k = max(ρ_min, ρ₀ · decayᵏ) (the paper's schedule: ρ₀ = 10, decay 0.9,
//! ρ_min = 0.3 on the [−1, 1] scale). The last prior step's x is the sample.

use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::NoiseSchedule;

use crate::check::{self, Range};
use crate::likelihood::{Likelihood, log_likelihood_grad};
use crate::sampler::{self, Ddpm, SpectralData};

/// PnP-DM's settings (`[pnpdm]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PnpDmSettings {
    /// Gibbs iterations (one likelihood and one prior step each).
    pub iterations: usize,
    /// ρ₀, the first coupling strength (variance-exploding scale).
    pub rho_start: f64,
    /// ρ's decay per iteration.
    pub rho_decay: f64,
    /// ρ's floor.
    pub rho_min: f64,
    /// Reverse steps of each prior step (network calls per iteration).
    pub denoise_steps: usize,
    /// Langevin steps of the likelihood step where it has no closed form.
    pub langevin_steps: usize,
    /// Clamp x̂₀ to [−1, 1] in the prior step's DDPM steps.
    pub clip: bool,
}

impl Default for PnpDmSettings {
    fn default() -> Self {
        Self {
            iterations: 40,
            rho_start: 10.0,
            rho_decay: 0.9,
            rho_min: 0.3,
            denoise_steps: 10,
            langevin_steps: 100,
            clip: true,
        }
    }
}

impl PnpDmSettings {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        check::float(
            &format!("{section}.rho_start"),
            self.rho_start,
            Range::Positive,
        )?;
        check::float(&format!("{section}.rho_min"), self.rho_min, Range::Positive)?;
        check::float(
            &format!("{section}.rho_decay"),
            self.rho_decay,
            Range::UnitExclusiveZero,
        )?;
        if self.iterations == 0 || self.denoise_steps == 0 {
            anyhow::bail!("{section}.iterations and {section}.denoise_steps must be at least 1");
        }
        Ok(())
    }

    /// ρ of iteration k.
    pub fn rho(&self, k: usize) -> f64 {
        (self.rho_start * self.rho_decay.powi(k as i32)).max(self.rho_min)
    }
}

/// The observation as PnP-DM's likelihood step needs it.
pub struct PnpLikelihood {
    pub likelihood: Box<dyn Likelihood>,
    /// Gaussian noise and A's decomposition with ȳ (one row per chain): the exact step.
    pub exact: Option<SpectralData>,
    /// A scalar bound on −∇² log p(y | z) where the likelihood gives no per-pixel one.
    pub curvature: f64,
}

impl PnpLikelihood {
    /// z ~ π(z | x) ∝ p(y | z) exp(−‖z − x‖²/(2ρ²)).
    fn sample(&self, x: Tensor<4>, rho: f64, steps: usize, rng: &mut Rng) -> Tensor<4> {
        let device = x.device();
        let shape = x.dims();
        if let Some(data) = &self.exact {
            let (sp, y_bar, sigma) = (&data.spectral, &data.y_bar, data.sigma);
            let s2 = data.s.clone().square();
            let precision = s2.clone().div_scalar(sigma * sigma) + 1.0 / (rho * rho);
            let x_bar = sp.image_to_spectral(x);
            let mean = (s2 * y_bar.clone().div_scalar(sigma * sigma) + x_bar.div_scalar(rho * rho))
                / precision.clone();
            let w = rng.normal_tensor(shape, &device);
            return sp.spectral_to_image(mean + w / precision.sqrt());
        }
        let inv = 1.0 / (rho * rho);
        let step = match self.likelihood.curvature(x.clone()) {
            Some(d) => (d + inv).recip().mul_scalar(0.25),
            None => x.ones_like().mul_scalar(0.25 / (self.curvature + inv)),
        };
        let mut z = x.clone();
        for _ in 0..steps {
            let g = log_likelihood_grad(self.likelihood.as_ref(), z.clone())
                - (z.clone() - x.clone()).mul_scalar(inv);
            let w = rng.normal_tensor(shape, &device);
            z = z + step.clone() * g + step.clone().mul_scalar(2.0).sqrt() * w;
        }
        z
    }
}

/// The timestep whose variance-exploding level √((1 − ᾱ_t)/ᾱ_t) is nearest ρ.
pub fn timestep_of(schedule: &NoiseSchedule, rho: f64) -> usize {
    let level = crate::sampler::ve_sigma;
    (0..schedule.len())
        .min_by(|&i, &j| {
            let (a, b) = (schedule.alphas_cumprod[i], schedule.alphas_cumprod[j]);
            (level(a) - rho).abs().total_cmp(&(level(b) - rho).abs())
        })
        .unwrap_or(0)
}

/// One chain per row of `x` (its start, e.g. A⁺y or noise): the final x and the network calls.
pub fn run(
    model: &dyn Denoiser,
    schedule: &NoiseSchedule,
    lik: &PnpLikelihood,
    settings: &PnpDmSettings,
    mut x: Tensor<4>,
    rng: &mut Rng,
    mut on_iteration: impl FnMut(),
) -> (Tensor<4>, usize) {
    let mut nfe = 0;
    for k in 0..settings.iterations {
        let rho = settings.rho(k);
        let z = lik.sample(x, rho, settings.langevin_steps, rng);
        let t_star = timestep_of(schedule, rho);
        let n = settings.denoise_steps.min(t_star + 1);
        let mut ts: Vec<usize> = (0..n).map(|j| t_star * (n - j) / n).collect();
        ts.dedup();
        let start = z.mul_scalar(schedule.alphas_cumprod[t_star].sqrt());
        let mut ddpm = Ddpm {
            variance: ModelVariance::Small,
            clip: settings.clip,
        };
        let (x0, calls) = sampler::run(model, &mut ddpm, schedule, &ts, start, rng, |_, _| {});
        nfe += calls;
        x = x0;
        on_iteration();
    }
    (x, nfe)
}
