//! Sequential Monte Carlo over the reverse diffusion, as a [`Sampler`] (so [`crate::sampler::run`]
//! stays the only loop over t). The batch holds `groups` independent particle systems of
//! `particles` rows each (group-major).
//!
//! Feynman–Kac form (Singhal et al. 2025, "A general framework for inference-time scaling and
//! steering of diffusion models", §3; Chopin & Papaspiliopoulos 2020, ch. 5): with a reward
//! r_t = r(x̂_0(x_t)) and a potential Φ_t of the lineage (x_T … x_t), the intermediate targets are
//! γ_t ∝ p(x_{t:T}) Φ_t, and the weight of a particle moved by the proposal q is multiplied by
//!   Φ_t / Φ_{t+1} · p(x_t | x_{t+1}) / q(x_t | x_{t+1}).
//! Potentials: `difference` Φ_t = exp(λ r_t); `max` exp(λ max_{s≥t} r_s); `sum` exp(λ Σ_{s≥t} r_s).
//! At the end the terminal correction exp(λ r_0)/Φ_0 makes the final target p(x_0) exp(λ r(x_0)):
//! with λ = 1 and r = log p(y | x̂_0) the posterior, whatever the potential.
//!
//! TDS (Wu et al. 2023, "Practical and asymptotically exact conditional sampling in diffusion
//! models", Alg. 1) is the `difference` potential with λ = 1 and the twisted proposal: the DDPM
//! kernel N(μ_t, σ_t²) with its mean moved by β'_t/√(1 − β'_t) ∇_{x_t} λ r_t (Bayes' rule on the
//! scores, as in guidance), resampled every step or when the ESS falls below a threshold.
//!
//! Weights stay in log space; log Ẑ adds log(mean weight) at each resampling and at the end
//! (Del Moral 2004): an unbiased estimate of Ẑ, the normaliser of the final target (p(y) for the
//! posterior).

use burn::prelude::*;
use burn::tensor::Int;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;
use tweedie_core::rng::Rng;

use super::{Resampling, ess, log_sum_exp};
use crate::likelihood::Likelihood;
use crate::sampler::{NoiseSource, Sampler, StepOutput};

/// Φ_t as a function of the rewards along a lineage (FK steering, Singhal et al. 2025, §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Potential {
    /// Φ_t = exp(λ r_t): the weight update is the change of reward (TDS's twist ratio).
    Difference,
    /// Φ_t = exp(λ max_{s≥t} r_s): the best reward along the lineage.
    Max,
    /// Φ_t = exp(λ Σ_{s≥t} r_s): the accumulated reward.
    Sum,
}

/// The twist of the particle methods: the approximation of p(y | x_t) their weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Twist {
    /// p(y | x̂_0(x_t)), the plain Tweedie look-ahead of the TDS and FK papers.
    Tweedie,
    /// The same widened by x̂_0's uncertainty as ΠGDM does (Gaussian noise; see
    /// `Likelihood::log_prob_at`): exact for a unit-variance Gaussian prior.
    Pigdm,
}

/// When particles are resampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResampleWhen {
    /// Every `n` steps (1: every step).
    Every(usize),
    /// When ESS < threshold · K.
    Ess(f64),
}

/// The settings of a particle sampler.
#[derive(Debug, Clone, Copy)]
pub struct SmcConfig {
    pub potential: Potential,
    pub lambda: f64,
    /// Move particles with the guided (twisted) kernel instead of the prior's.
    pub guided: bool,
    pub resampling: Resampling,
    pub when: ResampleWhen,
    /// Resample only at step indices in `window.0..window.1` (counted from the first step).
    pub window: (usize, usize),
    /// Clamp x̂_0 to [−1, 1] in the prior's mean (image models).
    pub clip: bool,
    /// Reward r_t = [`Likelihood::log_prob_at`] (the twist widened by x̂_0's uncertainty) instead
    /// of [`Likelihood::log_prob`] (the plain look-ahead of TDS and FK); r_0 is unchanged (the
    /// widening vanishes at ᾱ → 1) so the final target is the same.
    pub inflate: bool,
}

impl SmcConfig {
    /// TDS: the difference potential, λ = 1, twisted proposal, resampling when ESS < ½K.
    pub fn tds() -> Self {
        Self {
            potential: Potential::Difference,
            lambda: 1.0,
            guided: true,
            resampling: Resampling::Systematic,
            when: ResampleWhen::Ess(0.5),
            window: (0, usize::MAX),
            clip: false,
            inflate: false,
        }
    }
}

/// A particle sampler: `groups` systems of `particles` particles, rewarded by `reward`.
pub struct Smc {
    pub name: &'static str,
    pub reward: Box<dyn Likelihood>,
    pub config: SmcConfig,
    pub groups: usize,
    pub particles: usize,
    rng: Rng,
    seed: u64,
    step: usize,
    log_w: Vec<f64>,
    /// log Φ of each row's lineage at the current step, and the running sum / max of rewards.
    log_phi: Vec<f64>,
    sum_r: Vec<f64>,
    max_r: Vec<f64>,
    /// log p(x_t | x_{t+1}) − log q(x_t | x_{t+1}) − log Φ_{t+1}, for the rows' current x_t.
    pending: Vec<f64>,
    log_z: Vec<f64>,
    ess_trace: Vec<Vec<f64>>,
    /// Resampling events of each group.
    resamplings: Vec<usize>,
}

impl Smc {
    pub fn new(
        name: &'static str,
        reward: Box<dyn Likelihood>,
        config: SmcConfig,
        groups: usize,
        particles: usize,
        seed: u64,
    ) -> Self {
        let mut s = Self {
            name,
            reward,
            config,
            groups,
            particles,
            rng: Rng::new(seed),
            seed,
            step: 0,
            log_w: Vec::new(),
            log_phi: Vec::new(),
            sum_r: Vec::new(),
            max_r: Vec::new(),
            pending: Vec::new(),
            log_z: Vec::new(),
            ess_trace: Vec::new(),
            resamplings: Vec::new(),
        };
        s.reset();
        s
    }

    /// Normalised final weights of each group's particles.
    pub fn weights(&self) -> Vec<Vec<f64>> {
        self.log_w
            .chunks(self.particles)
            .map(super::normalise)
            .collect()
    }

    /// log Ẑ of each group.
    pub fn log_z(&self) -> &[f64] {
        &self.log_z
    }

    /// ESS of each group before each step's resampling decision, per step.
    pub fn ess_trace(&self) -> &[Vec<f64>] {
        &self.ess_trace
    }

    /// The number of resampling events of each group.
    pub fn resamplings(&self) -> &[usize] {
        &self.resamplings
    }

    /// Mean ESS of group `g` over the steps.
    pub fn ess_mean_of(&self, g: usize) -> f64 {
        let n = self.ess_trace.len().max(1) as f64;
        self.ess_trace.iter().map(|e| e[g]).sum::<f64>() / n
    }

    /// Mean ESS over steps and groups.
    pub fn ess_mean(&self) -> f64 {
        let all: Vec<f64> = self.ess_trace.iter().flatten().copied().collect();
        all.iter().sum::<f64>() / all.len().max(1) as f64
    }

    /// One row per group, drawn from its final weights (a posterior draw per system).
    pub fn pick(&mut self) -> Vec<usize> {
        let weights = self.weights();
        weights
            .iter()
            .enumerate()
            .map(|(g, w)| g * self.particles + self.rng.categorical(w))
            .collect()
    }

    fn potential(&self, i: usize, r: f64) -> f64 {
        self.config.lambda
            * match self.config.potential {
                Potential::Difference => r,
                Potential::Max => self.max_r[i],
                Potential::Sum => self.sum_r[i],
            }
    }

    /// Resamples every group when due; returns the rows' ancestors (identity when not due).
    fn maybe_resample(&mut self) -> Option<Vec<usize>> {
        let k = self.particles;
        let mut esses = Vec::with_capacity(self.groups);
        for g in 0..self.groups {
            esses.push(ess(&self.log_w[g * k..(g + 1) * k]));
        }
        self.ess_trace.push(esses.clone());
        let (lo, hi) = self.config.window;
        if k < 2 || self.step < lo || self.step >= hi {
            return None;
        }
        let due = |e: f64| match self.config.when {
            ResampleWhen::Every(n) => self.step.is_multiple_of(n.max(1)),
            ResampleWhen::Ess(th) => e < th * k as f64,
        };
        let mut idx: Vec<usize> = (0..self.log_w.len()).collect();
        let mut any = false;
        for (g, e) in esses.into_iter().enumerate() {
            if !due(e) {
                continue;
            }
            any = true;
            self.resamplings[g] += 1;
            let lw = &self.log_w[g * k..(g + 1) * k];
            self.log_z[g] += log_sum_exp(lw) - (k as f64).ln();
            let anc = self.config.resampling.ancestors(lw, &mut self.rng);
            for (j, a) in anc.into_iter().enumerate() {
                idx[g * k + j] = g * k + a;
            }
            for j in 0..k {
                self.log_w[g * k + j] = 0.0;
            }
        }
        if !any {
            return None;
        }
        let gather = |v: &Vec<f64>| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        self.log_phi = gather(&self.log_phi);
        self.sum_r = gather(&self.sum_r);
        self.max_r = gather(&self.max_r);
        Some(idx)
    }
}

fn select_rows(x: Tensor<4>, idx: &[usize]) -> Tensor<4> {
    let device = x.device();
    let ix: Vec<i64> = idx.iter().map(|i| *i as i64).collect();
    let ix = Tensor::<1, Int>::from_data(TensorData::new(ix, [idx.len()]), &device);
    x.select(0, ix)
}

fn per_row_sq_norm(v: &[f32], rows: usize) -> Vec<f64> {
    let per = v.len() / rows.max(1);
    v.chunks(per.max(1))
        .map(|c| c.iter().map(|x| (*x as f64).powi(2)).sum())
        .collect()
}

impl Sampler for Smc {
    fn name(&self) -> &'static str {
        self.name
    }

    fn needs_grad(&self) -> bool {
        self.config.guided
    }

    fn reset(&mut self) {
        let n = self.groups * self.particles;
        self.rng = Rng::new(self.seed);
        self.step = 0;
        self.log_w = vec![0.0; n];
        self.log_phi = vec![0.0; n];
        self.sum_r = vec![0.0; n];
        self.max_r = vec![f64::NEG_INFINITY; n];
        self.pending = vec![0.0; n];
        self.log_z = vec![0.0; self.groups];
        self.ess_trace.clear();
        self.resamplings = vec![0; self.groups];
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let n = self.groups * self.particles;
        assert_eq!(
            x_t.dims()[0],
            n,
            "the batch must hold groups × particles rows"
        );
        let device = x_t.device();
        let x0 = crate::sampler::tweedie_x0(tr, x_t.clone(), eps, false);
        let r_t = if self.config.inflate {
            self.reward.log_prob_at(x0.clone(), tr.alpha_bar)
        } else {
            self.reward.log_prob(x0.clone())
        };
        let rewards: Vec<f64> = tweedie_core::host_values(r_t.clone())
            .into_iter()
            .map(f64::from)
            .collect();
        // ∇_{x_t} λ r_t for the twisted proposal.
        let grad = if self.config.guided {
            let grads = r_t.sum().mul_scalar(self.config.lambda).backward();
            x_t.grad(&grads)
                .map(|g| Tensor::<4>::from_data(g.into_data(), &device))
        } else {
            None
        };
        let (x_t, x0) = (x_t.detach(), x0.detach());
        for (i, r) in rewards.iter().enumerate() {
            self.sum_r[i] += r;
            self.max_r[i] = self.max_r[i].max(*r);
            let phi = self.potential(i, *r);
            self.log_w[i] += self.pending[i] + phi;
            self.log_phi[i] = phi;
        }
        if tr.t_prev.is_none() {
            // Terminal correction to p(x_0) exp(λ r_0) with the exact reward, then log Ẑ's last
            // factor.
            let exact = if self.config.inflate {
                tweedie_core::host_values(self.reward.log_prob(x0.clone()))
                    .into_iter()
                    .map(f64::from)
                    .collect()
            } else {
                rewards.clone()
            };
            for (i, r) in exact.iter().enumerate() {
                self.log_w[i] += self.config.lambda * r - self.log_phi[i];
            }
            let k = self.particles;
            let esses: Vec<f64> = (0..self.groups)
                .map(|g| ess(&self.log_w[g * k..(g + 1) * k]))
                .collect();
            self.ess_trace.push(esses);
            for g in 0..self.groups {
                self.log_z[g] += log_sum_exp(&self.log_w[g * k..(g + 1) * k]) - (k as f64).ln();
            }
            self.step += 1;
            return StepOutput::new(x0.clone(), x0);
        }
        let (x_t, x0, grad) = match self.maybe_resample() {
            Some(idx) => (
                select_rows(x_t, &idx),
                select_rows(x0, &idx),
                grad.map(|g| select_rows(g, &idx)),
            ),
            None => (x_t, x0, grad),
        };
        let x0_mean = if self.config.clip {
            x0.clone().clamp(-1.0, 1.0)
        } else {
            x0.clone()
        };
        let mean = tr.posterior_mean(x_t.clone(), x0_mean);
        let var = tr.posterior_variance();
        let sd = var.sqrt();
        let z = noise.normal(mean.dims(), &device);
        let zv = tweedie_core::host_values(z.clone());
        let mut x_prev = mean + z.clone().mul_scalar(sd);
        // log p(x_prev | x_t) − log q(x_prev | x_t) with x_prev = μ + s + σz:
        // (‖σz‖² − ‖σz + s‖²)/(2σ²) … written with z: (‖z‖² − ‖z + s/σ‖²)/2.
        let log_ratio = match grad {
            Some(g) => {
                let shift = g.mul_scalar(tr.beta() / (1.0 - tr.beta()).sqrt());
                let zs = z + shift.clone().div_scalar(sd);
                x_prev = x_prev + shift;
                let a = per_row_sq_norm(&zv, n);
                let b = per_row_sq_norm(&tweedie_core::host_values(zs), n);
                a.iter().zip(&b).map(|(a, b)| 0.5 * (a - b)).collect()
            }
            None => vec![0.0; n],
        };
        for ((p, r), phi) in self.pending.iter_mut().zip(&log_ratio).zip(&self.log_phi) {
            *p = r - phi;
        }
        self.step += 1;
        StepOutput::new(x_prev, x0)
    }
}
