//! TDS and FK steering on a reconstruction problem: one particle system of K particles per
//! posterior sample, each system's draw taken from its final weights.
//!
//! Why one system per sample, not several draws from one weighted set: draws from one system
//! share its resampled ancestors (with K = 4 two draws are often the same particle), so their
//! spread would understate the posterior's; independent systems give independent draws, whose
//! spread is the posterior's as K grows, and one log Ẑ each (their mean estimates p(y) with a
//! standard error from their spread). The cost is K·steps network calls per sample.
//!
//! Systems go through the network in batches of whole systems, ⌊batch_size / K⌋ of them (at
//! least one), so memory is bounded by the batch size, not by the number of images.

use std::time::Instant;

use anyhow::Result;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

use super::config::ParticleSettings;
use super::{MethodRun, Models, ParticleRun, Problem, ReconFile, ReconMethod};
use crate::likelihood::Observation;
use crate::sampler;
use crate::sampler::SpectralData;
use crate::smc::{Mcgdiff, Smc};

#[allow(clippy::too_many_arguments)]
pub(super) fn reconstruct(
    file: &ReconFile,
    method: ReconMethod,
    settings: ParticleSettings,
    problem: &Problem,
    models: &Models,
    schedule: &NoiseSchedule,
    rng: &mut Rng,
    mut on_step: impl FnMut(),
) -> Result<MethodRun> {
    let clock = Instant::now();
    let [c, h, w] = problem.shape;
    let per = c * h * w;
    let k = settings.particles;
    let samples = file.run.samples;
    let systems = problem.indices.len() * samples;
    let per_batch = (file.run.batch_size / k).max(1);
    let timesteps = schedule.timesteps(settings.steps, Spacing::Trailing)?;
    let guided = settings.config.guided;
    let (device, model) = if guided {
        (&models.grad_device, models.grad)
    } else {
        (&models.device, models.plain)
    };
    let mut values = Vec::with_capacity(systems * per);
    let mut stats = ParticleRun {
        k,
        ess_mean: Vec::with_capacity(systems),
        resamplings: Vec::with_capacity(systems),
        dropped: Vec::with_capacity(systems),
        log_z: Vec::with_capacity(systems),
    };
    let mut start = 0;
    while start < systems {
        let range = start..(start + per_batch).min(systems);
        start = range.end;
        let groups = range.len();
        // System s observes image s / samples; its K particles are consecutive rows.
        let y = problem.y_of(range.clone().map(|s| s / samples), k, device);
        let reward = Observation {
            op: file.operator(h, w)?,
            noise: file.noise_model()?,
            y,
        };
        let mut smc = Smc::new(
            method.name(),
            Box::new(reward),
            settings.config,
            groups,
            k,
            rng.next_u64(),
        );
        let x_t = rng.normal_tensor([groups * k, c, h, w], device);
        let (x0, _) = sampler::run(model, &mut smc, schedule, &timesteps, x_t, rng, |_, _| {
            on_step()
        });
        let all = tweedie_core::host_values(x0.clamp(-1.0, 1.0));
        for (g, row) in smc.pick()?.into_iter().enumerate() {
            values.extend_from_slice(&all[row * per..(row + 1) * per]);
            stats.ess_mean.push(smc.ess_mean_of(g));
            stats.resamplings.push(smc.resamplings()[g]);
            stats.dropped.push(smc.dropped()[g]);
            stats.log_z.push(smc.log_z()[g]);
        }
    }
    let nfe = k * timesteps.len();
    Ok(MethodRun {
        method,
        samples,
        values,
        nfe,
        vjps: if guided { nfe } else { 0 },
        seconds: clock.elapsed().as_secs_f64(),
        particles: Some(stats),
        train_seconds: None,
    })
}

/// MCGdiff: one system of `k` particles per posterior sample, as TDS and FK, in A's spectral
/// basis ([`crate::smc::Mcgdiff`]).
pub(super) fn reconstruct_mcgdiff(
    file: &ReconFile,
    k: usize,
    problem: &Problem,
    models: &Models,
    schedule: &NoiseSchedule,
    rng: &mut Rng,
    mut on_step: impl FnMut(),
) -> Result<MethodRun> {
    let clock = Instant::now();
    let [c, h, w] = problem.shape;
    let per = c * h * w;
    let samples = file.run.samples;
    let systems = problem.indices.len() * samples;
    let per_batch = (file.run.batch_size / k).max(1);
    let settings = &file.mcgdiff;
    let timesteps = schedule.timesteps(settings.steps, Spacing::Trailing)?;
    let device = &models.device;
    let op = file.operator(h, w)?;
    let (Some(_), Some(sigma)) = (op.spectral(), file.gaussian_sigma()) else {
        anyhow::bail!("mcgdiff needs gaussian noise and an operator with a closed-form SVD");
    };
    let mut values = Vec::with_capacity(systems * per);
    let mut stats = ParticleRun {
        k,
        ess_mean: Vec::with_capacity(systems),
        resamplings: Vec::with_capacity(systems),
        dropped: Vec::with_capacity(systems),
        log_z: Vec::with_capacity(systems),
    };
    let mut start = 0;
    while start < systems {
        let range = start..(start + per_batch).min(systems);
        start = range.end;
        let groups = range.len();
        let y = problem.y_of(range.clone().map(|s| s / samples), k, device);
        let spectral = op.spectral().expect("checked above");
        let data = SpectralData::new(spectral, y.clone(), [c, h, w], sigma);
        let jac = log_jacobian(op.as_ref(), &data, y, [c, h, w], k);
        let mut mcg = Mcgdiff::new(data, groups, k, settings, rng.next_u64(), jac);
        let x_t = rng.normal_tensor([groups * k, c, h, w], device);
        let (x0, _) = sampler::run(
            models.plain,
            &mut mcg,
            schedule,
            &timesteps,
            x_t,
            rng,
            |_, _| on_step(),
        );
        let all = tweedie_core::host_values(x0.clamp(-1.0, 1.0));
        let log_z = mcg.log_z();
        for (g, row) in mcg.pick().into_iter().enumerate() {
            values.extend_from_slice(&all[row * per..(row + 1) * per]);
            stats.ess_mean.push(mcg.ess_mean_of(g));
            stats.resamplings.push(timesteps.len());
            stats.dropped.push(0);
            stats.log_z.push(log_z[g]);
        }
    }
    Ok(MethodRun {
        method: ReconMethod::Mcgdiff,
        samples,
        values,
        nfe: k * timesteps.len(),
        vjps: 0,
        seconds: clock.elapsed().as_secs_f64(),
        particles: Some(stats),
        train_seconds: None,
    })
}

/// log p(y) − log p(ȳ) per system (its `k` rows share one y): y's part outside A's range,
/// N(y_⊥; 0, σ² I) over m − r coordinates, and the Jacobian Πᵢ 1/sᵢ of ȳ = Σ⁺Uᵀy.
fn log_jacobian(
    op: &dyn crate::operator::ForwardOperator,
    data: &SpectralData,
    y: burn::prelude::Tensor<4>,
    shape: [usize; 3],
    k: usize,
) -> Vec<f64> {
    let (on, safe) = data.observed_and_safe_s();
    let [c, h, w] = shape;
    let (on, safe) = (on.expand([1, c, h, w]), safe.expand([1, c, h, w]));
    let rows = y.dims()[0];
    let m: usize = y.dims().iter().skip(1).product();
    let r = tweedie_core::host_values(on.clone().sum())[0] as f64;
    let log_s = tweedie_core::host_values((safe.log() * on.clone()).sum())[0] as f64;
    let in_range = op.apply(data.spectral.spectral_to_image(data.y_bar.clone() * on));
    let perp = tweedie_core::host_values(
        (y - in_range)
            .square()
            .reshape([rows as i32, -1])
            .sum_dim(1),
    );
    let s2 = data.sigma * data.sigma;
    (0..rows / k)
        .map(|g| {
            -0.5 * (m as f64 - r) * (2.0 * std::f64::consts::PI * s2).ln()
                - perp[g * k] as f64 / (2.0 * s2)
                - log_s
        })
        .collect()
}
