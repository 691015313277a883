//! The conditional Schrödinger bridge (Shi, De Bortoli, Deligiannidis & Doucet 2022,
//! "Conditional simulation using diffusion Schrödinger bridges", Algorithm 1) by iterative
//! proportional fitting with mean matching (De Bortoli et al. 2021, "Diffusion Schrödinger
//! bridge", Algorithm 1 and Proposition 3), on a short horizon.
//!
//! Reference: the Ornstein–Uhlenbeck chain X_{k+1} = X_k − γ_{k+1} X_k + √(2γ_{k+1}) Z on a grid
//! 0 = s_0 < … < s_N = S (S the horizon, γ_k = s_k − s_{k−1}; [`BridgeSpacing`]), whose law at
//! time s is that of DDPM's forward process at ᾱ = e^{−2s}. On a short horizon X_N is far from
//! N(0, I), so a diffusion model started from N(0, I) there is biased; the bridge is not.
//! - Backward maps B_{k+1}(x, y) = x + γ_{k+1} x − 2γ_{k+1} ε_b(x, t_{k+1}, y) / σ_{k+1},
//!   σ_k = √(1 − e^{−2 s_k}): the reverse-time Euler step of the reference with the score −ε/σ,
//!   so that iteration 0 is the amortized ε-network itself (t_k is the training timestep whose ᾱ
//!   is nearest e^{−2 s_k}).
//! - Forward maps F_k(x, y) = x − γ_{k+1} x + γ_{k+1} g(x, t_k, y), g starting at zero (the
//!   reference).
//! - Each IPF iteration fits F on backward paths (from N(0, I) × p(y)) and then B on forward
//!   paths (from the pairs) by the mean-matching losses of [`tweedie_core::bridge`], whose
//!   Gaussian closed forms test this code's algebra.
//! - Sampling a new y: X_N ~ N(0, I), X_k = B_{k+1}(X_{k+1}, y) + √(2γ_{k+1}) Z, the last step without
//!   noise: N network calls per sample.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::ConditionalDenoiser;
use tweedie_core::diffusion::per_sample;
use tweedie_core::mlp::CondMlp;
use tweedie_core::rng::Rng;
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
        // The Euler steps of the reference must stay short: x(1 − γ) flips sign at γ = 1, and the
        // chain is far from the OU process well before (γ_max ≥ 0.5 refused).
        let n = self.steps as f64;
        let gamma_max = match self.spacing {
            BridgeSpacing::Uniform => self.horizon / n,
            BridgeSpacing::Quadratic => self.horizon * (2.0 * n - 1.0) / (n * n),
        };
        if gamma_max >= 0.5 {
            bail!(
                "{section}.steps = {} is too few for horizon = {}: the longest step would be \
                 γ = {gamma_max:.3} (must be < 0.5)",
                self.steps,
                self.horizon
            );
        }
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

/// Where the grid's times s_k lie on [0, S].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeSpacing {
    /// s_k = S k / N: one γ for every step (De Bortoli et al. 2021's analysis; the Gaussian
    /// closed forms of `tweedie_core::bridge` use it).
    Uniform,
    /// s_k = S (k / N)²: short steps near the data, where images get their detail (a 50-step
    /// uniform grid's last step starts at σ ≈ 0.34; this one's at σ ≈ 0.05).
    Quadratic,
}

/// The bridge's grid: per grid point k = 0..N its time s_k, the step γ_k = s_k − s_{k−1} that
/// ends there (γ_0 unused), the network's timestep and σ_k = √(1 − e^{−2 s_k}).
#[derive(Debug, Clone)]
struct Grid {
    gamma: Vec<f64>,
    t: Vec<usize>,
    sigma: Vec<f64>,
}

impl Grid {
    fn new(schedule: &NoiseSchedule, steps: usize, horizon: f64, spacing: BridgeSpacing) -> Self {
        let s: Vec<f64> = (0..=steps)
            .map(|k| {
                let u = k as f64 / steps as f64;
                horizon
                    * match spacing {
                        BridgeSpacing::Uniform => u,
                        BridgeSpacing::Quadratic => u * u,
                    }
            })
            .collect();
        let gamma = (0..=steps)
            .map(|k| if k == 0 { 0.0 } else { s[k] - s[k - 1] })
            .collect();
        let ab = &schedule.alphas_cumprod;
        let t = s
            .iter()
            .map(|sk| {
                let target = (-2.0 * sk).exp();
                (0..ab.len())
                    .min_by(|&i, &j| (ab[i] - target).abs().total_cmp(&(ab[j] - target).abs()))
                    .expect("a schedule has steps")
            })
            .collect();
        let sigma = s
            .iter()
            .map(|sk| (1.0 - (-2.0 * sk).exp()).sqrt())
            .collect();
        Self { gamma, t, sigma }
    }

    fn steps(&self) -> usize {
        self.t.len() - 1
    }
}

/// The stream of the device RNG's per-step seeds (dropout masks), apart from the pairs' and paths'.
const DROPOUT_STREAM: u64 = 0xD5_0F;

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
    /// The last mean-matching loss (per coordinate, ÷ 2γ) of each half-iteration: (F, B).
    pub losses: Vec<(f64, f64)>,
    pub seconds: f64,
}

impl ConditionalBridge<CondMlp> {
    /// Iteration 0 for a vector problem: the amortized ε-network as the backward maps, the
    /// reference as the forward.
    pub fn from_eps(eps: CondMlp, schedule: &NoiseSchedule, s: &CsbSettings) -> Self {
        let device = Device::flex();
        let forward = eps
            .config()
            .with_zero_output(true)
            .init(s.seed ^ 0xf0, &device);
        let (d, dy) = (eps.dim(), eps.config().cond_dim);
        Self::new(eps, forward, schedule, s, [d, 1, 1], [dy, 1, 1], device)
    }
}

impl<N: BridgeNet> ConditionalBridge<N> {
    /// A bridge from its two networks: `backward` an ε-network (iteration 0: the amortized one),
    /// `forward` a drift correction (iteration 0: one whose output is zero, the reference).
    pub fn new(
        backward: N,
        forward: N,
        schedule: &NoiseSchedule,
        s: &CsbSettings,
        shape: [usize; 3],
        cond_shape: [usize; 3],
        device: Device,
    ) -> Self {
        Self {
            backward,
            forward,
            grid: Grid::new(schedule, s.steps, s.horizon, s.spacing),
            shape,
            cond_shape,
            device,
        }
    }

    pub fn steps(&self) -> usize {
        self.grid.steps()
    }

    /// B_{k+1}(x, y) = x + γ_{k+1} x − 2γ_{k+1} ε(x, t_{k+1}, y) / σ_{k+1} for per-row k + 1 in
    /// `k1`.
    fn backward_mean(&self, net: &N, x: Tensor<4>, k1: &[usize], y: Tensor<4>) -> Tensor<4> {
        let g = &self.grid.gamma;
        let device = x.device();
        let t: Vec<usize> = k1.iter().map(|&k| self.grid.t[k]).collect();
        let keep: Vec<f64> = k1.iter().map(|&k| 1.0 + g[k]).collect();
        let coef: Vec<f64> = k1
            .iter()
            .map(|&k| 2.0 * g[k] / self.grid.sigma[k])
            .collect();
        let eps = net.eps_given(x.clone(), &t, y);
        x * per_sample(&keep, &device) - eps * per_sample(&coef, &device)
    }

    /// F_k(x, y) = x − γ_{k+1} x + γ_{k+1} g(x, t_k, y) for per-row k in `k`.
    fn forward_mean(&self, net: &N, x: Tensor<4>, k: &[usize], y: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let g: Vec<f64> = k.iter().map(|&k| self.grid.gamma[k + 1]).collect();
        let t: Vec<usize> = k.iter().map(|&k| self.grid.t[k]).collect();
        let drift = net.eps_given(x.clone(), &t, y);
        let keep: Vec<f64> = g.iter().map(|g| 1.0 - g).collect();
        x * per_sample(&keep, &device) + drift * per_sample(&g, &device)
    }

    /// The noise's standard deviation on the step between grid points k and k + 1.
    fn noise(&self, k: usize) -> f32 {
        (2.0 * self.grid.gamma[k + 1]).sqrt() as f32
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
    /// after each, e.g. to save it. Iteration i's random streams depend on i alone, so a run
    /// resumed after iteration `from` continues as an uninterrupted one would.
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
            let lf = self.fit(true, pairs, s, 2 * it as u64 + 1, on_step)?;
            let lb = self.fit(false, pairs, s, 2 * it as u64 + 2, on_step)?;
            on_iteration(it + 1, self, (lf, lb))?;
        }
        Ok(())
    }

    /// One half-iteration: trains the forward (`fit_forward`) or backward network by mean
    /// matching on the other chain's paths; returns the last loss.
    fn fit(
        &mut self,
        fit_forward: bool,
        pairs: &dyn PairSource,
        s: &CsbSettings,
        stream: u64,
        on_step: &dyn Fn(),
    ) -> Result<f64> {
        let train_dev = self.device.clone().autodiff();
        let device = self.device.clone();
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
        for step in 0..s.train_steps {
            let mut rng = Rng::derive(s.seed ^ stream, step as u64);
            // Dropout (networks that have it) draws from the device RNG: reseed it per step so a
            // resumed build draws the same masks, and hold the lock for the step.
            let _guard = tweedie_core::rng::device_rng_lock();
            train_dev.seed(Rng::derive(s.seed ^ stream ^ DROPOUT_STREAM, step as u64).next_u64());
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
            let y_plain = rows(yv.clone(), cond_shape, &device);
            let (xk_p, xk1_p) = (
                rows(xk.clone(), shape, &device),
                rows(xk1.clone(), shape, &device),
            );
            // Targets from the frozen other network; the prediction through the trainee.
            let (target, pred) = if fit_forward {
                let target = xk_p.clone()
                    + self.backward_mean(&self.backward, xk1_p, &k1s, y_plain.clone())
                    - self.backward_mean(&self.backward, xk_p, &k1s, y_plain);
                let pred = self.forward_mean(
                    &trainee,
                    rows(xk, shape, &train_dev),
                    &ks,
                    rows(yv, cond_shape, &train_dev),
                );
                (target, pred)
            } else {
                let target = xk1_p.clone()
                    + self.forward_mean(&self.forward, xk_p, &ks, y_plain.clone())
                    - self.forward_mean(&self.forward, xk1_p, &ks, y_plain);
                let pred = self.backward_mean(
                    &trainee,
                    rows(xk1, shape, &train_dev),
                    &k1s,
                    rows(yv, cond_shape, &train_dev),
                );
                (target, pred)
            };
            let target = Tensor::<4>::from_data(target.into_data(), &train_dev);
            // Mean matching per coordinate, each pair of states weighted by 1 / 2γ of its step.
            let weight: Vec<f64> = ks
                .iter()
                .map(|&k| 1.0 / (2.0 * self.grid.gamma[k + 1]))
                .collect();
            let weight = per_sample(&weight, &train_dev);
            let loss = ((pred - target).square() * weight).mean();
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                bail!(
                    "the bridge's mean-matching loss became {value} ({} network, IPF stream \
                     {stream}, optimiser step {step}): try a smaller lr",
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
    let mut bridge = ConditionalBridge::from_eps(eps, schedule, s);
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
    fn grids_cover_the_horizon_and_the_quadratic_one_is_fine_near_the_data() {
        let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        for spacing in [BridgeSpacing::Uniform, BridgeSpacing::Quadratic] {
            let g = Grid::new(&schedule, 50, 3.0, spacing);
            assert_eq!(g.steps(), 50);
            assert!((g.gamma.iter().sum::<f64>() - 3.0).abs() < 1e-12);
            assert!((g.sigma[50] - (1.0 - (-6.0f64).exp()).sqrt()).abs() < 1e-12);
            assert_eq!((g.sigma[0], g.t[0]), (0.0, 0));
            // Timesteps rise with s and land where ᾱ_t is nearest e^{−2s}.
            assert!(g.t.windows(2).all(|w| w[0] <= w[1]));
            let ab = schedule.alphas_cumprod[g.t[25]];
            let s25: f64 = g.gamma[..=25].iter().sum();
            assert!((ab - (-2.0 * s25).exp()).abs() < 2e-3, "{ab}");
        }
        let u = Grid::new(&schedule, 50, 3.0, BridgeSpacing::Uniform);
        let q = Grid::new(&schedule, 50, 3.0, BridgeSpacing::Quadratic);
        assert!(u.gamma[1..].iter().all(|g| (g - 0.06).abs() < 1e-12));
        assert!(q.gamma[1..].windows(2).all(|w| w[0] < w[1]));
        assert!((u.sigma[1] - 0.336).abs() < 1e-3 && (q.sigma[1] - 0.049).abs() < 1e-3);
    }
}
