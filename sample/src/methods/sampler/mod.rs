//! Reverse-process samplers. A [`Sampler`] is one update rule x_t → x_{t_prev}; [`run`] owns the
//! only loop over t, counts network evaluations, and detaches every step so that no autodiff
//! graph survives from one step to the next.

mod daps;
mod ddim;
mod ddnm;
mod ddpm;
mod ddrm;
mod diffpir;
mod dpmpp;
mod dps;
mod heun;
mod pigdm;
mod reddiff;
mod replacement;

pub use daps::{Daps, DapsSettings};
pub use ddim::Ddim;
pub use ddnm::{Ddnm, DdnmSettings};
pub use ddpm::Ddpm;
pub use ddrm::{Ddrm, DdrmSettings, SpectralData};
pub use diffpir::{DiffPir, prox_log_likelihood};
pub use dpmpp::DpmSolverPp2m;
pub use dps::{Dps, DpsStep};
pub use heun::Heun;
pub use pigdm::PiGdm;
pub use reddiff::{RedDiff, RedDiffSettings};
pub use replacement::Replacement;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

/// The unconditional samplers, by the name the CLI (`--sampler`) and the training config
/// (`[train] sample_sampler`) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Ancestral sampling (Ho et al. 2020), respaced when --steps < T.
    Ddpm,
    /// DDIM (Song et al. 2021); --eta 0 is deterministic.
    Ddim,
    /// Probability-flow ODE with Heun's 2nd-order method (Karras et al. 2022): 2 calls per step.
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022): 2nd-order multistep ODE solver, 1 call per step.
    Dpmpp2m,
}

impl SamplerKind {
    /// The sampler, with DDIM's η and DDPM's variance (each used only by its own sampler) and
    /// whether x̂_0 is clamped to [−1, 1].
    pub fn build(self, eta: f64, variance: ModelVariance, clip: bool) -> Box<dyn Sampler> {
        match self {
            Self::Ddpm => Box::new(Ddpm { variance, clip }),
            Self::Ddim => Box::new(Ddim { eta, clip }),
            Self::Heun => Box::new(Heun { clip }),
            Self::Dpmpp2m => Box::new(DpmSolverPp2m::new(clip)),
        }
    }

    /// The name `--sampler` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::Heun => "heun",
            Self::Dpmpp2m => "dpmpp2m",
        }
    }

    /// Network evaluations per image of a run of `steps` steps: one per step, and for Heun's
    /// method two per step but the last (its final step is an Euler step to t = 0; Karras et al.
    /// 2022, Algorithm 1).
    pub fn nfe(self, steps: usize) -> usize {
        match self {
            Self::Heun => (2 * steps).saturating_sub(1),
            _ => steps,
        }
    }

    /// The most steps whose [`nfe`](Self::nfe) stays within a budget of `nfe` evaluations (at
    /// least one step).
    pub fn steps_for_nfe(self, nfe: usize) -> usize {
        match self {
            Self::Heun => nfe.div_ceil(2).max(1),
            _ => nfe.max(1),
        }
    }

    /// The timestep spacing each does best with: uniform in log-SNR for the ODE solvers (few
    /// steps), trailing for DDPM and DDIM.
    pub fn default_spacing(self) -> Spacing {
        match self {
            Self::Ddpm | Self::Ddim => Spacing::Trailing,
            Self::Heun | Self::Dpmpp2m => Spacing::LogSnr,
        }
    }
}

/// Where a sampler's fresh Gaussian noise comes from.
pub trait NoiseSource {
    /// A standard normal tensor of `shape` on `device`.
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4>;
}

impl NoiseSource for Rng {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        self.normal_tensor(shape, device)
    }
}

/// What one step produced: the next state and the Tweedie estimate x̂_0 it used.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub x_prev: Tensor<4>,
    pub x0: Tensor<4>,
    /// Network evaluations the step made itself, beyond the ε̂ it was given (Heun's corrector).
    pub extra_nfe: usize,
}

impl StepOutput {
    pub fn new(x_prev: Tensor<4>, x0: Tensor<4>) -> Self {
        Self {
            x_prev,
            x0,
            extra_nfe: 0,
        }
    }
}

/// One reverse update rule, given ε̂ = ε_θ(x_t, t). Multistep rules keep state between steps;
/// [`run`] calls [`Sampler::reset`] before each trajectory.
pub trait Sampler {
    fn name(&self) -> &'static str;
    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput;
    /// Forgets the state of a previous trajectory.
    fn reset(&mut self) {}
    /// Whether `step` differentiates through ε̂ (guidance): [`run`] then passes an `x_t` that
    /// requires grad and an ε̂ that carries the graph. The model must be on an autodiff device.
    fn needs_grad(&self) -> bool {
        false
    }
}

/// x̂_0 from ε̂ (DDPM eq. 15), optionally clipped to the data range [−1, 1].
pub(crate) fn tweedie_x0(tr: &Transition, x_t: Tensor<4>, eps: Tensor<4>, clip: bool) -> Tensor<4> {
    let b = x_t.dims()[0];
    let x0 = tweedie_core::diffusion::predict_x0(x_t, eps, &vec![tr.alpha_bar; b]);
    if clip { x0.clamp(-1.0, 1.0) } else { x0 }
}

/// σ_t of the variance-exploding view x_t/√ᾱ_t = x₀ + σ_t ε: √((1 − ᾱ)/ᾱ).
pub fn ve_sigma(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).max(0.0).sqrt()
}

/// How a guided step uses ∇_{x_t} of its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guidance {
    /// The gradient is a displacement of x_{t_prev} (DPS's residual-norm rule, Algorithm 1).
    Shift,
    /// The gradient is a likelihood score ∇ log p(y | x_t), folded into ε as in classifier
    /// guidance (Dhariwal & Nichol 2021, eq. 14): ε̃ = ε̂ − √(1 − ᾱ_t) ∇ log p(y | x_t). Unclipped,
    /// the ancestral step then moves x_{t_prev} by β'_t/√(1 − β'_t) times the score (Bayes' rule
    /// on the scores); with the DDPM step's clipping of x̂_0 the move stays bounded even where a
    /// trained network's x̂_0 is far off (large t).
    Score,
}

/// A guided ancestral step (DPS, ΠGDM): `ddpm`'s step from x_t and ∇_{x_t} of `objective`, a
/// scalar whose graph reaches `x_t` (which requires grad, see [`Sampler::needs_grad`]), used as
/// `how` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn guided_step(
    ddpm: &mut Ddpm,
    tr: &Transition,
    x_t: Tensor<4>,
    eps: Tensor<4>,
    x0: Tensor<4>,
    objective: Tensor<1>,
    how: Guidance,
    model: &dyn Denoiser,
    noise: &mut dyn NoiseSource,
) -> StepOutput {
    let grads = objective.backward();
    let device = x_t.device();
    let g = x_t
        .grad(&grads)
        .map(|g| Tensor::<4>::from_data(g.detach().into_data(), &device));
    let (x_t, eps) = (x_t.detach(), eps.detach());
    let x_prev = match (how, g) {
        (_, None) => ddpm.step(tr, x_t, eps, model, noise).x_prev,
        (Guidance::Shift, Some(g)) => ddpm.step(tr, x_t, eps, model, noise).x_prev + g,
        (Guidance::Score, Some(g)) => {
            let eps = eps - g.mul_scalar((1.0 - tr.alpha_bar).sqrt());
            ddpm.step(tr, x_t, eps, model, noise).x_prev
        }
    };
    StepOutput::new(x_prev.detach(), x0.detach())
}

/// Runs the reverse process from `x` (at `timesteps[0]`) through every listed training timestep,
/// descending. `on_step(i, out)` is called after step i. Returns the final sample and the number of
/// network evaluations.
pub fn run(
    model: &dyn Denoiser,
    sampler: &mut dyn Sampler,
    schedule: &NoiseSchedule,
    timesteps: &[usize],
    mut x: Tensor<4>,
    noise: &mut dyn NoiseSource,
    mut on_step: impl FnMut(usize, &StepOutput),
) -> (Tensor<4>, usize) {
    let b = x.dims()[0];
    let mut nfe = 0;
    sampler.reset();
    for (i, &t) in timesteps.iter().enumerate() {
        let tr = Transition::new(schedule, t, timesteps.get(i + 1).copied());
        let x_in = if sampler.needs_grad() {
            x.detach().require_grad()
        } else {
            x
        };
        let eps = model.eps(x_in.clone(), &vec![t; b]);
        let out = sampler.step(&tr, x_in, eps, model, noise);
        nfe += 1 + out.extra_nfe;
        let out = StepOutput {
            x_prev: out.x_prev.detach(),
            x0: out.x0.detach(),
            extra_nfe: out.extra_nfe,
        };
        on_step(i, &out);
        x = out.x_prev;
    }
    (x, nfe)
}

/// `n` unconditional samples in batches of at most `batch_size`: each batch's x_T ~ N(0, I) is
/// drawn from `rng` (which then feeds the sampler's noise), run through [`run`], clamped to
/// [−1, 1] and quantised. Returns the images as uint8 N×H×W×C (the `.npy` layout) and the network
/// calls made over all batches; `on_step` follows every step of every batch.
#[allow(clippy::too_many_arguments)]
pub fn draw_images(
    model: &dyn Denoiser,
    sampler: &mut dyn Sampler,
    schedule: &NoiseSchedule,
    timesteps: &[usize],
    n: usize,
    batch_size: usize,
    [c, h, w]: [usize; 3],
    rng: &mut Rng,
    device: &Device,
    mut on_step: impl FnMut(),
) -> (Vec<u8>, usize) {
    let mut all = Vec::with_capacity(n * c * h * w);
    let mut nfe = 0;
    let mut left = n;
    while left > 0 {
        let b = left.min(batch_size.max(1));
        let x_t = rng.normal([b, c, h, w], device);
        let (x0, k) = run(model, sampler, schedule, timesteps, x_t, rng, |_, _| {
            on_step()
        });
        nfe += k;
        all.extend(crate::output::to_u8_nhwc(x0.clamp(-1.0, 1.0)).0);
        left -= b;
    }
    (all, nfe)
}
