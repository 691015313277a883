//! The conditional Schrödinger bridge (Shi, De Bortoli, Deligiannidis & Doucet 2022,
//! "Conditional simulation using diffusion Schrödinger bridges", Algorithm 1) by iterative
//! proportional fitting with mean matching (De Bortoli et al. 2021, "Diffusion Schrödinger
//! bridge", Algorithm 1 and Proposition 3), on a short horizon.
//!
//! Reference: the Ornstein–Uhlenbeck chain X_{k+1} = X_k − γ X_k + √(2γ) Z, N steps of γ = S/N
//! (S the horizon), whose law at time s is that of DDPM's forward process at ᾱ = e^{−2s}. On a
//! short horizon X_N is far from N(0, I), so a diffusion model started from N(0, I) there is
//! biased; the bridge is not.
//! - Backward maps B_{k+1}(x, y) = x + γ x − 2γ ε_b(x, t_{k+1}, y) / σ_{k+1}, σ_k = √(1 − e^{−2 s_k}):
//!   the reverse-time Euler step of the reference with the score −ε/σ, so that iteration 0 is the
//!   amortized ε-network itself (t_k is the training timestep whose ᾱ is nearest e^{−2 s_k}).
//! - Forward maps F_k(x, y) = x − γ x + γ g(x, t_k, y), g starting at zero (the reference).
//! - Each IPF iteration fits F on backward paths (from N(0, I) × p(y)) and then B on forward
//!   paths (from the pairs) by the mean-matching losses of [`tweedie_core::bridge`], whose
//!   Gaussian closed forms test this code's algebra.
//! - Sampling a new y: X_N ~ N(0, I), X_k = B_{k+1}(X_{k+1}, y) + √(2γ) Z, the last step without
//!   noise: N network calls per sample.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::Deserialize;
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
        if self.steps == 0 || self.train_steps == 0 || self.batch_size == 0 || self.refresh == 0 {
            bail!("{section}.steps, train_steps, batch_size and refresh must be positive");
        }
        check::float(&format!("{section}.horizon"), self.horizon, Range::Positive)?;
        check::float(&format!("{section}.lr"), self.lr, Range::Positive)?;
        Ok(())
    }
}

/// The bridge's grid: γ, and per grid point k = 0..N the network's timestep and σ_k.
#[derive(Debug, Clone)]
struct Grid {
    gamma: f64,
    t: Vec<usize>,
    sigma: Vec<f64>,
}

impl Grid {
    fn new(schedule: &NoiseSchedule, steps: usize, horizon: f64) -> Self {
        let gamma = horizon / steps as f64;
        let ab = &schedule.alphas_cumprod;
        let t = (0..=steps)
            .map(|k| {
                let target = (-2.0 * gamma * k as f64).exp();
                (0..ab.len())
                    .min_by(|&i, &j| (ab[i] - target).abs().total_cmp(&(ab[j] - target).abs()))
                    .expect("a schedule has steps")
            })
            .collect();
        let sigma = (0..=steps)
            .map(|k| (1.0 - (-2.0 * gamma * k as f64).exp()).sqrt())
            .collect();
        Self { gamma, t, sigma }
    }

    fn steps(&self) -> usize {
        self.t.len() - 1
    }
}

fn column(values: impl Iterator<Item = f64>, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = values.map(|x| x as f32).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n, 1]), device)
}

fn rows(v: Vec<f32>, width: usize, device: &Device) -> Tensor<2> {
    let n = v.len() / width;
    Tensor::from_data(TensorData::new(v, [n, width]), device)
}

/// A trained bridge: the backward (ε-parameterised) and forward (drift correction) networks.
pub struct ConditionalBridge {
    pub backward: CondMlp,
    pub forward: CondMlp,
    grid: Grid,
}

/// Per-iteration record of the training.
#[derive(Debug, Clone, Default)]
pub struct CsbTrace {
    /// The last mean-matching loss (per coordinate, ÷ 2γ) of each half-iteration: (F, B).
    pub losses: Vec<(f64, f64)>,
    pub seconds: f64,
}

impl ConditionalBridge {
    /// Iteration 0: the amortized ε-network as the backward maps, the reference as the forward.
    pub fn from_eps(eps: CondMlp, schedule: &NoiseSchedule, s: &CsbSettings) -> Self {
        let forward = eps
            .config()
            .with_zero_output(true)
            .init(s.seed ^ 0xf0, &Device::flex());
        Self {
            backward: eps,
            forward,
            grid: Grid::new(schedule, s.steps, s.horizon),
        }
    }

    pub fn steps(&self) -> usize {
        self.grid.steps()
    }

    /// B_{k+1}(x, y) for per-row k + 1 in `k1`.
    fn backward_mean(&self, net: &CondMlp, x: Tensor<2>, k1: &[usize], y: Tensor<2>) -> Tensor<2> {
        let g = self.grid.gamma;
        let device = x.device();
        let t: Vec<usize> = k1.iter().map(|&k| self.grid.t[k]).collect();
        let coef = column(k1.iter().map(|&k| 2.0 * g / self.grid.sigma[k]), &device);
        let eps = net.forward(x.clone(), &t, y);
        x * (1.0 + g) - eps * coef
    }

    /// F_k(x, y) for per-row k in `k`.
    fn forward_mean(&self, net: &CondMlp, x: Tensor<2>, k: &[usize], y: Tensor<2>) -> Tensor<2> {
        let g = self.grid.gamma;
        let t: Vec<usize> = k.iter().map(|&k| self.grid.t[k]).collect();
        let drift = net.forward(x.clone(), &t, y);
        x * (1.0 - g) + drift * g
    }

    /// The backward chain from X_N ~ N(0, I) given `y` `[n, d_y]` (row-major): every state,
    /// X_N first; the last step (to X_0) without noise when `final_mean`.
    fn backward_path(&self, y: &[f32], n: usize, rng: &mut Rng, final_mean: bool) -> Vec<Vec<f32>> {
        let device = Device::flex();
        let d = self.backward.dim();
        let dy = y.len() / n;
        let yt = rows(y.to_vec(), dy, &device);
        let mut x = rows(rng.normals(n * d), d, &device);
        let mut path = vec![tweedie_core::host_values(x.clone())];
        let noise = (2.0 * self.grid.gamma).sqrt() as f32;
        for k in (0..self.steps()).rev() {
            let mean = self.backward_mean(&self.backward, x, &vec![k + 1; n], yt.clone());
            x = if k == 0 && final_mean {
                mean
            } else {
                mean + rows(rng.normals(n * d), d, &device) * noise
            };
            path.push(tweedie_core::host_values(x.clone()));
        }
        path
    }

    /// The forward chain from pairs' x `[n, d]` given their y: every state, X_0 first.
    fn forward_path(&self, x0: Vec<f32>, y: &[f32], n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
        let device = Device::flex();
        let d = self.backward.dim();
        let dy = y.len() / n;
        let yt = rows(y.to_vec(), dy, &device);
        let mut x = rows(x0, d, &device);
        let mut path = vec![tweedie_core::host_values(x.clone())];
        let noise = (2.0 * self.grid.gamma).sqrt() as f32;
        for k in 0..self.steps() {
            let mean = self.forward_mean(&self.forward, x, &vec![k; n], yt.clone());
            x = mean + rows(rng.normals(n * d), d, &device) * noise;
            path.push(tweedie_core::host_values(x.clone()));
        }
        path
    }

    /// Posterior samples: one backward trajectory per row of `y` (`[n, d_y]` row-major);
    /// returns `[n, d]` row-major.
    pub fn sample(&self, y: &[f32], n: usize, rng: &mut Rng) -> Vec<f32> {
        self.backward_path(y, n, rng, true).pop().expect("a path")
    }

    /// One half-iteration: trains the forward (`fit_forward`) or backward network by mean
    /// matching on the other chain's paths; returns the last loss.
    fn fit(
        &mut self,
        fit_forward: bool,
        pairs: &dyn PairSource,
        s: &CsbSettings,
        stream: u64,
    ) -> Result<f64> {
        let train_dev = Device::flex().autodiff();
        let device = Device::flex();
        let (d, dy) = (pairs.dim(), pairs.cond_dim());
        let n_steps = self.steps();
        let b = s.batch_size;
        let g = self.grid.gamma;
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
            if step % s.refresh == 0 {
                let (x0, y) = pairs.draw(b, &mut rng);
                paths = if fit_forward {
                    // Backward paths in time order X_0..X_N.
                    let mut p = self.backward_path(&y, b, &mut rng, false);
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
            let y_plain = rows(yv.clone(), dy, &device);
            let (xk_p, xk1_p) = (rows(xk.clone(), d, &device), rows(xk1.clone(), d, &device));
            // Targets from the frozen other network; the prediction through the trainee.
            let (target, pred) = if fit_forward {
                let target = xk_p.clone()
                    + self.backward_mean(&self.backward, xk1_p, &k1s, y_plain.clone())
                    - self.backward_mean(&self.backward, xk_p, &k1s, y_plain);
                let pred = self.forward_mean(
                    &trainee,
                    rows(xk, d, &train_dev),
                    &ks,
                    rows(yv, dy, &train_dev),
                );
                (target, pred)
            } else {
                let target = xk1_p.clone()
                    + self.forward_mean(&self.forward, xk_p, &ks, y_plain.clone())
                    - self.forward_mean(&self.forward, xk1_p, &ks, y_plain);
                let pred = self.backward_mean(
                    &trainee,
                    rows(xk1, d, &train_dev),
                    &k1s,
                    rows(yv, dy, &train_dev),
                );
                (target, pred)
            };
            let target = Tensor::<2>::from_data(target.into_data(), &train_dev);
            let loss = (pred - target).square().mean() / (2.0 * g);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                bail!("the bridge's mean-matching loss became {value}");
            }
            last = value;
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            trainee = optim.step(lr_at(s.lr, step, s.train_steps), trainee, grads);
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

/// Builds the bridge from the amortized network `eps` (iteration 0) with `s.iterations` IPF
/// iterations; `on_iteration(i)` after each.
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
    for it in 0..s.iterations {
        let lf = bridge.fit(true, pairs, s, 2 * it as u64 + 1)?;
        let lb = bridge.fit(false, pairs, s, 2 * it as u64 + 2)?;
        trace.losses.push((lf, lb));
        on_iteration(it + 1, &bridge);
    }
    trace.seconds = clock.elapsed().as_secs_f64();
    Ok((bridge, trace))
}
