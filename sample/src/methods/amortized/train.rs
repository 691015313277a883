//! Conditional diffusion training for vector problems: L_simple of ε_θ(x_t, t, y) on pairs drawn
//! on the fly (Ho et al. 2020, eq. 14, with y as an extra input: the "train with (x, y) pairs"
//! baseline of the conditioning survey; Batzolis et al. 2021, "Conditional image generation with
//! score-based diffusion models", §3). Adam with a constant rate, then a linear decay to zero
//! over the second half.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::Deserialize;
use tweedie_core::denoiser::Conditioned;
use tweedie_core::loss::l_simple;
use tweedie_core::mlp::{CondMlp, CondMlpConfig};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::NoiseSchedule;

use super::PairSource;
use crate::check::{self, Range};

/// How to train (a file's `[amortized]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Optimiser steps.
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Width and residual layers of the MLP.
    pub width: usize,
    pub depth: usize,
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 4000,
            batch_size: 256,
            lr: 2e-3,
            width: 128,
            depth: 3,
            seed: 0,
        }
    }
}

impl TrainSettings {
    /// Checks every value, naming the key under `section`.
    pub fn validate(&self, section: &str) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.width == 0 {
            bail!("{section}.steps, batch_size and width must be positive");
        }
        check::float(&format!("{section}.lr"), self.lr, Range::Positive)?;
        Ok(())
    }

    pub fn net(&self, pairs: &dyn PairSource) -> CondMlpConfig {
        CondMlpConfig::new(pairs.dim(), pairs.cond_dim())
            .with_width(self.width)
            .with_depth(self.depth)
    }
}

/// Adam's rate at `step`: constant, then linearly down to zero over the second half.
pub fn lr_at(lr: f64, step: usize, steps: usize) -> f64 {
    let left = 1.0 - step as f64 / steps as f64;
    lr * (2.0 * left).min(1.0)
}

/// What training did.
#[derive(Debug, Clone)]
pub struct TrainLog {
    /// L_simple (mean over elements) of each step.
    pub losses: Vec<f64>,
    pub seconds: f64,
}

/// Trains ε_θ(x_t, t, y) on pairs from `pairs` under `schedule` (t uniform over all its steps).
pub fn train_eps(
    pairs: &dyn PairSource,
    schedule: &NoiseSchedule,
    s: &TrainSettings,
    on_step: &mut dyn FnMut(usize),
) -> Result<(CondMlp, TrainLog)> {
    let clock = Instant::now();
    let device = Device::flex().autodiff();
    let (d, dy) = (pairs.dim(), pairs.cond_dim());
    let mut net = s.net(pairs).init(s.seed, &device);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(s.steps);
    let b = s.batch_size;
    for step in 0..s.steps {
        let mut rng = Rng::derive(s.seed, step as u64);
        let (x, y) = pairs.draw(b, &mut rng);
        let x0 = Tensor::<4>::from_data(TensorData::new(x, [b, d, 1, 1]), &device);
        let cond = Tensor::<4>::from_data(TensorData::new(y, [b, dy, 1, 1]), &device);
        let t: Vec<usize> = (0..b).map(|_| rng.below(schedule.len())).collect();
        let eps = rng.normal_tensor([b, d, 1, 1], &device);
        let loss = l_simple(&Conditioned { net: &net, cond }, schedule, x0, &t, eps);
        let value = f64::from(loss.clone().into_scalar::<f32>());
        if !value.is_finite() {
            bail!(
                "the amortized network's loss became {value} at step {}",
                step + 1
            );
        }
        losses.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(lr_at(s.lr, step, s.steps), net, grads);
        on_step(step);
    }
    Ok((
        net.valid(),
        TrainLog {
            losses,
            seconds: clock.elapsed().as_secs_f64(),
        },
    ))
}

/// L_simple of `net` at the fixed timestep `t`, summed over coordinates and averaged over `n`
/// fresh pairs (to compare with the closed-form least loss).
pub fn loss_at(
    net: &CondMlp,
    pairs: &dyn PairSource,
    schedule: &NoiseSchedule,
    t: usize,
    n: usize,
    rng: &mut Rng,
) -> f64 {
    let device = Device::flex();
    let (d, dy) = (pairs.dim(), pairs.cond_dim());
    let (x, y) = pairs.draw(n, rng);
    let x0 = Tensor::<4>::from_data(TensorData::new(x, [n, d, 1, 1]), &device);
    let cond = Tensor::<4>::from_data(TensorData::new(y, [n, dy, 1, 1]), &device);
    let eps = rng.normal_tensor([n, d, 1, 1], &device);
    let loss = l_simple(&Conditioned { net, cond }, schedule, x0, &vec![t; n], eps);
    f64::from(loss.into_scalar::<f32>()) * d as f64
}
