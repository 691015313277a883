//! The `amortized` method: a conditional network trained for the file's observation model
//! (`[amortized] checkpoint`, see [`crate::amortized::image`]) draws each posterior sample with
//! one ancestral trajectory, the observation in its input channels; no guidance, no particles.

use std::path::Path;
use std::time::Instant;

use burn::prelude::Device;

use anyhow::{Result, bail};
use tweedie_core::denoiser::Conditioned;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::Spacing;

use super::{Method, MethodRun, Models, Problem, ReconFile};
use crate::amortized::image::{ConditionSpec, Observer};
use crate::prior::Prior;
use crate::sampler::{self, Ddpm};

/// The conditional model at `path` with its observation model, checked against the file's:
/// one line naming both when they differ.
pub(super) fn load_for(
    file: &ReconFile,
    path: &Path,
    problem: &Problem,
    device: &Device,
) -> Result<(Prior, Observer)> {
    let (prior, spec) = Prior::load_conditional(path, device, file.run.raw_weights)?;
    if prior.image_shape() != problem.shape {
        bail!(
            "{}: the conditional model takes {:?} images, the file's are {:?}",
            prior.dir.display(),
            prior.image_shape(),
            problem.shape
        );
    }
    let observer = spec.observer(problem.shape, device)?;
    let wanted = ConditionSpec {
        operator: file.operator.clone(),
        noise: file.noise.clone(),
    };
    if spec != wanted {
        bail!(
            "{}: trained for {}, but this file observes {} (train one for it with a [condition] \
             section)",
            prior.dir.display(),
            observer.describe(),
            wanted.observer(problem.shape, device)?.describe()
        );
    }
    Ok((prior, observer))
}

/// Wall seconds the conditional model's run had trained for when `prior`'s step was written
/// (its `metrics.jsonl`), if the log is there.
pub(super) fn training_seconds(prior: &Prior) -> Option<f64> {
    let log = std::fs::read_to_string(prior.dir.parent()?.join("metrics.jsonl")).ok()?;
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["step"]
                .as_u64()
                .is_some_and(|s| s as usize <= prior.meta.step)
        })
        .find_map(|v| v["seconds"].as_f64())
}

/// Runs the method on every image of `problem`; `on_step` after each reverse step of each batch.
pub(super) fn reconstruct(
    file: &ReconFile,
    problem: &Problem,
    models: &Models,
    rng: &mut Rng,
    mut on_step: impl FnMut(),
) -> Result<MethodRun> {
    let clock = Instant::now();
    let path = file
        .amortized
        .checkpoint
        .as_ref()
        .expect("validated: amortized has a checkpoint");
    let (prior, observer) = load_for(file, path, problem, &models.device)?;
    let [c, h, w] = problem.shape;
    let k = file.run.samples;
    let timesteps = prior
        .schedule
        .timesteps(file.amortized.steps, Spacing::Trailing)?;
    let per_batch = (file.run.batch_size / k).max(1);
    let mut values = Vec::with_capacity(problem.len() * k * c * h * w);
    let mut nfe = 0;
    let mut start = 0;
    while start < problem.len() {
        let range = start..(start + per_batch).min(problem.len());
        start = range.end;
        let rows = range.len() * k;
        let cond = observer.condition(problem.y_rows(range, k, &models.device));
        let model = Conditioned {
            net: &prior.model,
            cond,
        };
        let mut ddpm = Ddpm {
            variance: tweedie_core::elbo::ModelVariance::Small,
            clip: true,
        };
        let x_t = rng.normal_tensor([rows, c, h, w], &models.device);
        let (x0, n) = sampler::run(
            &model,
            &mut ddpm,
            &prior.schedule,
            &timesteps,
            x_t,
            rng,
            |_, _| on_step(),
        );
        nfe = n;
        values.extend(tweedie_core::host_values(x0.clamp(-1.0, 1.0)));
    }
    Ok(MethodRun {
        method: Method::Amortized,
        samples: k,
        values,
        nfe,
        vjps: 0,
        seconds: clock.elapsed().as_secs_f64(),
        particles: None,
        train_seconds: training_seconds(&prior),
    })
}
