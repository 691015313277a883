//! The conditional Schrödinger bridge (Shi, De Bortoli, Deligiannidis & Doucet 2022,
//! "Conditional simulation using diffusion Schrödinger bridges", Algorithm 1) by iterative
//! proportional fitting with mean matching (De Bortoli et al. 2021, "Diffusion Schrödinger
//! bridge", Algorithm 1), on a short horizon.
//!
//! Reference: the Ornstein–Uhlenbeck process dX = −X ds + √2 dW with its exact transitions
//! X_{k+1} = a_{k+1} X_k + √v_{k+1} Z, a = e^{−γ}, v = 1 − e^{−2γ} (γ_{k+1} = s_{k+1} − s_k), on a
//! grid 0 = s_0 < … < s_N ≈ S ([`BridgeSpacing`]) snapped to the model's schedule: s_k =
//! −½ ln ᾱ_{t_k} for the timestep t_k whose ᾱ is nearest e^{−2 s_k}. Its law at s_k is then DDPM's
//! forward process at the network's own ᾱ_{t_k}, and each step is DDPM's forward kernel between
//! two of its timesteps. On a short horizon X_N is far from N(0, I), so a diffusion model started
//! from N(0, I) there is biased; the bridge is not.
//! - Backward maps B_{k+1}(x, y) = (x − v_{k+1} ε_b(x, t_{k+1}, y) / σ_{k+1}) / a_{k+1},
//!   σ_k = √(1 − ᾱ_{t_k}): the reference's exact backward mean E[X_k | X_{k+1}] through the
//!   ε-predictor ([`tweedie_core::bridge::eps_backward_coefs`]; DDPM's μ_θ, Ho et al. 2020,
//!   eq. 11), so that iteration 0, the amortized ε-network itself, is DDPM's ancestral sampler on
//!   the grid's timesteps with variance β.
//! - Forward maps F_k(x, y) = a_{k+1} x + (1 − a_{k+1}) g(x, t_k, y), g starting at zero (the
//!   reference): the exact step of dX = (g − X) ds + √2 dW for g constant over the step.
//! - Each IPF iteration fits F on backward paths (from N(0, I) × p(y)) and then B on forward
//!   paths (from the pairs) with [`tweedie_core::bridge::mean_matching_loss`], whose exact
//!   affine minimisers are the Gaussian closed forms of [`tweedie_core::bridge::GaussianIpf`].
//! - Sampling a new y: X_N ~ N(0, I), X_k = B_{k+1}(X_{k+1}, y) + √v_{k+1} Z (both chains' noise
//!   is the reference's, as mean matching assumes: DDPM's σ_t² = β_t), the last step without
//!   noise: N network calls per sample.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::bridge::{Reference, eps_backward_coefs, mean_matching_loss};
use tweedie_core::denoiser::ConditionalDenoiser;
use tweedie_core::diffusion::per_sample;
use tweedie_core::mlp::CondMlp;
use tweedie_core::rng::{Rng, substream};
use tweedie_core::schedule::NoiseSchedule;

use super::PairSource;
use super::train::lr_at;
use crate::check::{self, Range};

/// How to build the bridge (a file's `[csb]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsbSettings {
    /// IPF iterations after the amortized network (each fits F, then B).
    pub iterations: usize,
    /// Steps N of the chain (network calls per posterior sample).
    pub steps: usize,
    /// The horizon S of the reference (ᾱ = e^{−2S} at its end).
    pub horizon: f64,
    /// Where the N steps lie on [0, S].
    pub spacing: BridgeSpacing,
    /// Optimiser steps per half-iteration.
    pub train_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Optimiser steps between fresh simulated paths.
    pub refresh: usize,
    pub seed: u64,
}

impl Default for CsbSettings {
    fn default() -> Self {
        Self {
            iterations: 3,
            steps: 20,
            horizon: 1.0,
            spacing: BridgeSpacing::Uniform,
            train_steps: 1500,
            batch_size: 256,
            lr: 1e-3,
            refresh: 5,
            seed: 0,
        }
    }
}

impl CsbSettings {
    pub fn validate(&self, section: &str) -> Result<()> {
        for (key, v) in [
            ("steps", self.steps),
            ("train_steps", self.train_steps),
            ("batch_size", self.batch_size),
            ("refresh", self.refresh),
        ] {
            if v == 0 {
                bail!("{section}.{key} must be positive");
            }
        }
        check::float(&format!("{section}.horizon"), self.horizon, Range::Positive)?;
        check::float(&format!("{section}.lr"), self.lr, Range::Positive)?;
        Ok(())
    }

    /// The horizon must lie inside the model's schedule: e^{−2S} ≥ ᾱ at its last timestep.
    pub fn check_schedule(&self, section: &str, schedule: &NoiseSchedule) -> Result<()> {
        let last = *schedule
            .alphas_cumprod
            .last()
            .expect("a schedule has steps");
        if (-2.0 * self.horizon).exp() < last {
            bail!(
                "{section}.horizon = {} runs past the model's schedule (ᾱ = e^(-2S) = {:.2e} < \
                 ᾱ_T = {last:.2e}): at most {:.3}",
                self.horizon,
                (-2.0 * self.horizon).exp(),
                -0.5 * last.ln()
            );
        }
        Ok(())
    }
}

pub use tweedie_core::bridge::BridgeSpacing;

/// The bridge's grid, snapped to the model's schedule: per grid point k = 0..N its time s_k
/// (s_0 = 0, the data; s_k = −½ ln ᾱ_{t_k} after), the network's timestep t_k, and per step
/// k → k + 1 (index k) the reference's (a, v) and the backward map's coefficients of x and ε.
#[derive(Debug, Clone)]
struct Grid {
    s: Vec<f64>,
    t: Vec<usize>,
    a: Vec<f64>,
    var: Vec<f64>,
    keep: Vec<f64>,
    eps_coef: Vec<f64>,
}

impl Grid {
    fn new(
        schedule: &NoiseSchedule,
        steps: usize,
        horizon: f64,
        spacing: BridgeSpacing,
    ) -> Result<Self> {
        let ab = &schedule.alphas_cumprod;
        let t: Vec<usize> = spacing
            .times(steps, horizon)
            .iter()
            .map(|sk| {
                let target = (-2.0 * sk).exp();
                (0..ab.len())
                    .min_by(|&i, &j| (ab[i] - target).abs().total_cmp(&(ab[j] - target).abs()))
                    .expect("a schedule has steps")
            })
            .collect();
        if let Some(k) = (1..steps).find(|&k| t[k + 1] <= t[k]) {
            bail!(
                "the bridge's grid points {k} and {} both fall on the model's timestep {}: \
                 {steps} {spacing:?} steps to horizon {horizon} are too many for its schedule",
                k + 1,
                t[k]
            );
        }
        let s: Vec<f64> = t
            .iter()
            .enumerate()
            .map(|(k, &tk)| if k == 0 { 0.0 } else { -0.5 * ab[tk].ln() })
            .collect();
        let (a, var) = s
            .windows(2)
            .map(|w| Reference::OrnsteinUhlenbeck.transition(w[1] - w[0]))
            .unzip();
        let (keep, eps_coef) = s.windows(2).map(|w| eps_backward_coefs(w[0], w[1])).unzip();
        Ok(Self {
            s,
            t,
            a,
            var,
            keep,
            eps_coef,
        })
    }

    fn steps(&self) -> usize {
        self.t.len() - 1
    }
}

/// The roles of the bridge's random streams, the first label of [`substream`] under `[csb] seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// The forward network's initialisation.
    ForwardInit = 1,
    /// A half-iteration's pairs, paths and picks (per optimiser step).
    Paths = 2,
    /// The device RNG's per-step seeds (dropout masks) of a half-iteration.
    Dropout = 3,
}

/// The seed of `role`'s stream in IPF iteration `iteration` (1-based), half `fit_forward` or
/// not, under `seed`: distinct for every (seed, iteration, half, role), where `seed ^ stream`
/// gave seed 1's first backward fit the stream of seed 2's first forward one.
fn ipf_seed(seed: u64, role: Stream, iteration: usize, fit_forward: bool) -> u64 {
    substream(
        seed,
        &[role as u64, iteration as u64, u64::from(fit_forward)],
    )
}

/// The seed of the forward network's initialisation for a bridge seeded `seed`.
pub fn forward_init_seed(seed: u64) -> u64 {
    substream(seed, &[Stream::ForwardInit as u64])
}

/// Called after each IPF iteration with its number, the bridge and its last (F, B) losses.
pub type OnIteration<'a, B> = dyn FnMut(usize, &B, (f64, f64)) -> Result<()> + 'a;

/// A network the bridge can use on either side: any conditional ε-shaped module (the
/// [`CondMlp`] of vector problems, the conditional U-Net of images).
pub trait BridgeNet: Module + ConditionalDenoiser {}
impl<N: Module + ConditionalDenoiser> BridgeNet for N {}

/// Row-major values as `[n, shape]`.
fn rows(v: Vec<f32>, [c, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
    let n = v.len() / (c * h * w);
    Tensor::from_data(TensorData::new(v, [n, c, h, w]), device)
}

fn size([c, h, w]: [usize; 3]) -> usize {
    c * h * w
}

/// A trained bridge: the backward (ε-parameterised) and forward (drift correction) networks,
/// on states of `shape` given conditions of `cond_shape` (vectors as `[d, 1, 1]`).
pub struct ConditionalBridge<N = CondMlp> {
    pub backward: N,
    pub forward: N,
    grid: Grid,
    shape: [usize; 3],
    cond_shape: [usize; 3],
    device: Device,
}

/// Per-iteration record of the training.
#[derive(Debug, Clone, Default)]
pub struct CsbTrace {
    /// The last mean-matching loss (per coordinate, ÷ v) of each half-iteration: (F, B).
    pub losses: Vec<(f64, f64)>,
    pub seconds: f64,
}

impl ConditionalBridge<CondMlp> {
    /// Iteration 0 for a vector problem: the amortized ε-network as the backward maps, the
    /// reference as the forward.
    pub fn from_eps(eps: CondMlp, schedule: &NoiseSchedule, s: &CsbSettings) -> Result<Self> {
        let device = Device::flex();
        let forward = eps
            .config()
            .with_zero_output(true)
            .init(forward_init_seed(s.seed), &device);
        let (d, dy) = (eps.dim(), eps.config().cond_dim);
        Self::new(eps, forward, schedule, s, [d, 1, 1], [dy, 1, 1], device)
    }
}

impl<N: BridgeNet> ConditionalBridge<N> {
    /// A bridge from its two networks: `backward` an ε-network (iteration 0: the amortized one),
    /// `forward` a drift correction (iteration 0: one whose output is zero, the reference).
    /// Fails when the grid has more points than the schedule has timesteps to put them on.
    pub fn new(
        backward: N,
        forward: N,
        schedule: &NoiseSchedule,
        s: &CsbSettings,
        shape: [usize; 3],
        cond_shape: [usize; 3],
        device: Device,
    ) -> Result<Self> {
        Ok(Self {
            backward,
            forward,
            grid: Grid::new(schedule, s.steps, s.horizon, s.spacing)?,
            shape,
            cond_shape,
            device,
        })
    }

    pub fn steps(&self) -> usize {
        self.grid.steps()
    }

    /// The grid's times s_0 = 0 < … < s_N (snapped to the model's timesteps).
    pub fn times(&self) -> &[f64] {
        &self.grid.s
    }

    /// B_{k+1}(x, y) = (x − v_{k+1} ε(x, t_{k+1}, y) / σ_{k+1}) / a_{k+1} for per-row k + 1 in
    /// `k1`.
    fn backward_mean(&self, net: &N, x: Tensor<4>, k1: &[usize], y: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let t: Vec<usize> = k1.iter().map(|&k| self.grid.t[k]).collect();
        let keep: Vec<f64> = k1.iter().map(|&k| self.grid.keep[k - 1]).collect();
        let coef: Vec<f64> = k1.iter().map(|&k| self.grid.eps_coef[k - 1]).collect();
        let eps = net.eps_given(x.clone(), &t, y);
        x * per_sample(&keep, &device) - eps * per_sample(&coef, &device)
    }

    /// F_k(x, y) = a_{k+1} x + (1 − a_{k+1}) g(x, t_k, y) for per-row k in `k`.
    fn forward_mean(&self, net: &N, x: Tensor<4>, k: &[usize], y: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let a: Vec<f64> = k.iter().map(|&k| self.grid.a[k]).collect();
        let t: Vec<usize> = k.iter().map(|&k| self.grid.t[k]).collect();
        let drift = net.eps_given(x.clone(), &t, y);
        let gain: Vec<f64> = a.iter().map(|a| 1.0 - a).collect();
        x * per_sample(&a, &device) + drift * per_sample(&gain, &device)
    }

    /// The noise's standard deviation √v_{k+1} on the step between grid points k and k + 1, both
    /// chains (mean matching's kernels).
    fn noise(&self, k: usize) -> f32 {
        self.grid.var[k].sqrt() as f32
    }

    /// The backward chain from X_N ~ N(0, I) given conditions `y` (n rows, row-major): every
    /// state, X_N first, or only X_0 unless `keep_path`; the last step (to X_0) without noise
    /// when `final_mean`.
    fn backward_path(
        &self,
        y: &[f32],
        n: usize,
        rng: &mut Rng,
        final_mean: bool,
        keep_path: bool,
    ) -> Vec<Vec<f32>> {
        let d = size(self.shape);
        let yt = rows(y.to_vec(), self.cond_shape, &self.device);
        let mut x = rows(rng.normals(n * d), self.shape, &self.device);
        let mut path = if keep_path {
            vec![tweedie_core::host_values(x.clone())]
        } else {
            Vec::new()
        };
        for k in (0..self.steps()).rev() {
            let mean = self.backward_mean(&self.backward, x, &vec![k + 1; n], yt.clone());
            x = if k == 0 && final_mean {
                mean
            } else {
                mean + rows(rng.normals(n * d), self.shape, &self.device) * self.noise(k)
            };
            if keep_path {
                path.push(tweedie_core::host_values(x.clone()));
            }
        }
        if !keep_path {
            path = vec![tweedie_core::host_values(x)];
        }
        path
    }

    /// The forward chain from pairs' x (n rows) given their conditions: every state, X_0 first.
    fn forward_path(&self, x0: Vec<f32>, y: &[f32], n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
        let d = size(self.shape);
        let yt = rows(y.to_vec(), self.cond_shape, &self.device);
        let mut x = rows(x0, self.shape, &self.device);
        let mut path = vec![tweedie_core::host_values(x.clone())];
        for k in 0..self.steps() {
            let mean = self.forward_mean(&self.forward, x, &vec![k; n], yt.clone());
            x = mean + rows(rng.normals(n * d), self.shape, &self.device) * self.noise(k);
            path.push(tweedie_core::host_values(x.clone()));
        }
        path
    }

    /// Posterior samples: one backward trajectory per row of the conditions `y` (n rows,
    /// row-major); returns n states, row-major.
    pub fn sample(&self, y: &[f32], n: usize, rng: &mut Rng) -> Vec<f32> {
        self.backward_path(y, n, rng, true, false)
            .pop()
            .expect("a path")
    }

    /// IPF iterations `from + 1 ..= s.iterations` (each fits F, then B); `on_iteration(i, self)`
    /// after each, e.g. to save it. Iteration i's random streams depend on (seed, i) alone, so a
    /// run resumed after iteration `from` continues as an uninterrupted one would.
    pub fn refine(
        &mut self,
        pairs: &dyn PairSource,
        s: &CsbSettings,
        from: usize,
        on_iteration: &mut OnIteration<'_, Self>,
        on_step: &dyn Fn(),
    ) -> Result<()> {
        if pairs.dim() != size(self.shape) || pairs.cond_dim() != size(self.cond_shape) {
            bail!(
                "the pairs have {} values and {} condition values per row, the bridge takes {:?} \
                 and {:?}",
                pairs.dim(),
                pairs.cond_dim(),
                self.shape,
                self.cond_shape
            );
        }
        for it in from..s.iterations {
            let lf = self.fit(true, pairs, s, it + 1, on_step)?;
            let lb = self.fit(false, pairs, s, it + 1, on_step)?;
            on_iteration(it + 1, self, (lf, lb))?;
        }
        Ok(())
    }

    /// One half-iteration: trains the forward (`fit_forward`) or backward network by mean
    /// matching on the other chain's paths in IPF iteration `iteration`; returns the last loss.
    fn fit(
        &mut self,
        fit_forward: bool,
        pairs: &dyn PairSource,
        s: &CsbSettings,
        iteration: usize,
        on_step: &dyn Fn(),
    ) -> Result<f64> {
        let train_dev = self.device.clone().autodiff();
        let (d, dy) = (size(self.shape), size(self.cond_shape));
        let (shape, cond_shape) = (self.shape, self.cond_shape);
        let n_steps = self.steps();
        let b = s.batch_size;
        let mut trainee = if fit_forward {
            self.forward.clone()
        } else {
            self.backward.clone()
        }
        .fork(&train_dev)
        .train();
        let mut optim = AdamConfig::new().init();
        let mut paths: Vec<Vec<f32>> = Vec::new();
        let mut ys: Vec<f32> = Vec::new();
        let mut last = f64::NAN;
        let paths_seed = ipf_seed(s.seed, Stream::Paths, iteration, fit_forward);
        let dropout_seed = ipf_seed(s.seed, Stream::Dropout, iteration, fit_forward);
        for step in 0..s.train_steps {
            let mut rng = Rng::derive(paths_seed, step as u64);
            // Dropout (networks that have it) draws from the device RNG: reseed it per step so a
            // resumed build draws the same masks, and hold the lock for the step.
            let _guard = tweedie_core::rng::device_rng_lock();
            train_dev.seed(Rng::derive(dropout_seed, step as u64).next_u64());
            if step % s.refresh == 0 {
                let (x0, y) = pairs.draw(b, &mut rng);
                paths = if fit_forward {
                    // Backward paths in time order X_0..X_N.
                    let mut p = self.backward_path(&y, b, &mut rng, false, true);
                    p.reverse();
                    p
                } else {
                    self.forward_path(x0, &y, b, &mut rng)
                };
                ys = y;
            }
            // One (path, k) per row: the pair of states (X_k, X_{k+1}).
            let picks: Vec<(usize, usize)> =
                (0..b).map(|_| (rng.below(b), rng.below(n_steps))).collect();
            let gather = |k_off: usize| -> Vec<f32> {
                picks
                    .iter()
                    .flat_map(|&(i, k)| paths[k + k_off][i * d..(i + 1) * d].to_vec())
                    .collect()
            };
            let (xk, xk1) = (gather(0), gather(1));
            let yv: Vec<f32> = picks
                .iter()
                .flat_map(|&(i, _)| ys[i * dy..(i + 1) * dy].to_vec())
                .collect();
            let ks: Vec<usize> = picks.iter().map(|p| p.1).collect();
            let k1s: Vec<usize> = ks.iter().map(|k| k + 1).collect();
            // The trainee's mean at one state regressed on the other state of the pair
            // (tweedie_core::bridge's module docs): B_{k+1}(X_{k+1}) on X_k, F_k(X_k) on X_{k+1}.
            let (pred, target) = if fit_forward {
                let pred = self.forward_mean(
                    &trainee,
                    rows(xk, shape, &train_dev),
                    &ks,
                    rows(yv, cond_shape, &train_dev),
                );
                (pred, xk1)
            } else {
                let pred = self.backward_mean(
                    &trainee,
                    rows(xk1, shape, &train_dev),
                    &k1s,
                    rows(yv, cond_shape, &train_dev),
                );
                (pred, xk)
            };
            let target = rows(target, shape, &train_dev);
            let var: Vec<f64> = ks.iter().map(|&k| self.grid.var[k]).collect();
            let loss = mean_matching_loss(pred, target, &var);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                bail!(
                    "the bridge's mean-matching loss became {value} ({} network, IPF iteration \
                     {iteration}, optimiser step {step}): try a smaller lr",
                    if fit_forward { "forward" } else { "backward" }
                );
            }
            last = value;
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            trainee = optim.step(lr_at(s.lr, step, s.train_steps), trainee, grads);
            on_step();
        }
        let trained = trainee.valid();
        if fit_forward {
            self.forward = trained;
        } else {
            self.backward = trained;
        }
        Ok(last)
    }
}

/// Builds a vector problem's bridge from the amortized network `eps` (iteration 0) with
/// `s.iterations` IPF iterations; `on_iteration(i, bridge)` after each.
pub fn train_csb(
    eps: CondMlp,
    pairs: &dyn PairSource,
    schedule: &NoiseSchedule,
    s: &CsbSettings,
    on_iteration: &mut dyn FnMut(usize, &ConditionalBridge),
) -> Result<(ConditionalBridge, CsbTrace)> {
    let clock = Instant::now();
    let mut bridge = ConditionalBridge::from_eps(eps, schedule, s)?;
    let mut trace = CsbTrace::default();
    bridge.refine(
        pairs,
        s,
        0,
        &mut |it, b, losses| {
            trace.losses.push(losses);
            on_iteration(it, b);
            Ok(())
        },
        &|| {},
    )?;
    trace.seconds = clock.elapsed().as_secs_f64();
    Ok((bridge, trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tweedie_core::schedule::BetaSchedule;

    #[test]
    fn grids_cover_the_horizon_on_the_models_timesteps() {
        let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let ab = &schedule.alphas_cumprod;
        for spacing in [BridgeSpacing::Uniform, BridgeSpacing::Quadratic] {
            let g = Grid::new(&schedule, 50, 3.0, spacing).unwrap();
            assert_eq!(g.steps(), 50);
            assert_eq!((g.s[0], g.t[0]), (0.0, 0));
            // Timesteps rise with s; each grid time is its timestep's ᾱ = e^{−2s}, within the
            // schedule's spacing of the asked one.
            assert!(g.t.windows(2).skip(1).all(|w| w[0] < w[1]));
            for (k, want) in spacing.times(50, 3.0).iter().enumerate().skip(1) {
                assert!((ab[g.t[k]] - (-2.0 * g.s[k]).exp()).abs() < 1e-12);
                assert!((ab[g.t[k]] - (-2.0 * want).exp()).abs() < 1e-2, "k {k}");
            }
            // The steps are the exact transitions between the grid's times, and the backward
            // chain DDPM's between its timesteps: mean μ_θ (Ho et al. 2020, eq. 11), variance β.
            for k in 0..50 {
                let (abk, ab1) = (if k == 0 { 1.0 } else { ab[g.t[k]] }, ab[g.t[k + 1]]);
                let alpha = ab1 / abk;
                assert!((g.a[k] - alpha.sqrt()).abs() < 1e-12);
                assert!((g.var[k] - (1.0 - alpha)).abs() < 1e-12);
                assert!((g.keep[k] - 1.0 / alpha.sqrt()).abs() < 1e-9);
                let beta_coef = (1.0 - alpha) / (alpha.sqrt() * (1.0 - ab1).sqrt());
                assert!((g.eps_coef[k] - beta_coef).abs() < 1e-9);
            }
        }
        let q = Grid::new(&schedule, 50, 3.0, BridgeSpacing::Quadratic).unwrap();
        // Short steps near the data, long ones at the noisy end (v = 1 − e^{−2γ}, γ from
        // S / N² = 0.0012 to S (2N − 1) / N² = 0.119 before snapping).
        assert!(q.var[0] < 0.005 && q.var[49] > 0.15, "{:?}", q.var);
        // The first point after the data sits at σ ≈ 0.05.
        assert!(((1.0 - ab[q.t[1]]).sqrt() - 0.049).abs() < 2e-3);
        // More points than the schedule has timesteps near the data are refused.
        let err = Grid::new(&schedule, 2000, 3.0, BridgeSpacing::Quadratic).unwrap_err();
        assert!(err.to_string().contains("too many"), "{err}");
    }

    #[test]
    fn the_ipf_streams_differ_for_every_seed_iteration_half_and_role() {
        // `seed ^ stream` with stream = 2 i − 1 (forward) or 2 i (backward) made seed 1's first
        // backward fit draw seed 2's first forward fit's pairs and paths: (1 ^ 2) = (2 ^ 1).
        assert_eq!(1 ^ 2, 2 ^ 1);
        assert_ne!(
            ipf_seed(1, Stream::Paths, 1, false),
            ipf_seed(2, Stream::Paths, 1, true)
        );
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            assert!(seen.insert(forward_init_seed(seed)));
            for it in 1..=8 {
                for half in [false, true] {
                    for role in [Stream::Paths, Stream::Dropout] {
                        assert!(
                            seen.insert(ipf_seed(seed, role, it, half)),
                            "seed {seed}, iteration {it}, forward {half}, {role:?}"
                        );
                    }
                }
            }
        }
    }
}
