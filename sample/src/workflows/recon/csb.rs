//! The `csb` method: the conditional Schrödinger bridge (Shi et al. 2022) on images. Iteration 0
//! is the amortized conditional U-Net as the backward maps; each IPF iteration fits a forward
//! drift U-Net (same architecture, no preconditioning, output starting at zero) and then refines
//! the backward one by mean matching ([`crate::amortized::csb`]) on pairs x ~ the dataset's
//! train split, y ~ the file's observation model. Iterations are written to `[csb] dir` as they
//! finish and read back on the next run with the same settings and conditional model, so a run
//! resumes between iterations and a finished bridge is trained once. Sampling: one bridge
//! trajectory of `steps` network calls per posterior sample.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::checkpoint::{load_module, module_bytes, write_atomic, write_dir_atomic};
use tweedie_core::rng::Rng;
use tweedie_core::run_dir::{Claim, RunDir};
use tweedie_core::unet::{UNet, UNetConfig};

use super::amortized::{load_for, training_seconds};
use super::{Method, MethodRun, Models, Problem, ReconFile};
use crate::amortized::csb::forward_init_seed;
use crate::amortized::image::{ConditionSpec, ImagePairs};
use crate::amortized::{ConditionalBridge, CsbSettings};

const RECORD: &str = "bridge.json";

/// `bridge.json`: what the iterations in the directory were trained from and with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct BridgeRecord {
    /// The conditional model's step directory.
    conditional: String,
    /// The settings that shape every iteration (all of `[csb]` but `iterations`).
    settings: serde_json::Value,
    /// Per finished iteration: its last mean-matching losses (forward, backward) and seconds.
    iterations: Vec<IterationLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct IterationLog {
    losses: (f64, f64),
    seconds: f64,
}

fn settings_key(s: &CsbSettings) -> serde_json::Value {
    serde_json::json!({
        // Iterations trained on the Euler–Maruyama chain (records without this key) are refused.
        "chain": "exact Ornstein-Uhlenbeck transitions, seeds by substream",
        "steps": s.steps, "horizon": s.horizon, "spacing": format!("{:?}", s.spacing),
        "train_steps": s.train_steps,
        "batch_size": s.batch_size, "lr": s.lr, "refresh": s.refresh, "seed": s.seed,
    })
}

fn iteration_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("iteration-{i:03}"))
}

/// Reads `dir`'s record, if any, and checks that it was made from `want`'s model and settings.
fn read_record(dir: &Path, want: &BridgeRecord) -> Result<Vec<IterationLog>> {
    let path = dir.join(RECORD);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let got: BridgeRecord = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a bridge record", path.display()))?;
    if got.conditional != want.conditional || got.settings != want.settings {
        bail!(
            "{}: holds a bridge built from {} with {}, not from {} with {}; give [csb] another \
             dir (or delete this one)",
            dir.display(),
            got.conditional,
            got.settings,
            want.conditional,
            want.settings
        );
    }
    Ok(got.iterations)
}

/// Writes iteration `i`'s networks (the checkpoint module's atomic directory write), then the
/// record: a crash leaves either the old record or the new one, both readable.
fn save_iteration(
    dir: &Path,
    i: usize,
    bridge: &ConditionalBridge<UNet>,
    record: &BridgeRecord,
) -> Result<()> {
    let final_dir = iteration_dir(dir, i);
    let files = [
        ("backward.bpk", module_bytes(bridge.backward.clone())?),
        ("forward.bpk", module_bytes(bridge.forward.clone())?),
    ];
    if let Err(e) = write_dir_atomic(&final_dir, &files) {
        bail!("{}: iteration {i} not written ({e})", final_dir.display());
    }
    let json = serde_json::to_vec_pretty(record).expect("plain data serialises");
    write_atomic(&dir.join(RECORD), &json)?;
    Ok(())
}

/// Runs the method on every image of `problem`; `on_step` after each reverse step of each batch.
pub(super) fn reconstruct(
    file: &ReconFile,
    problem: &Problem,
    models: &Models,
    rng: &mut Rng,
    mut on_step: impl FnMut(),
) -> Result<MethodRun> {
    let sec = &file.csb;
    let device = models.device.clone();
    let path = sec
        .checkpoint
        .as_ref()
        .or(file.amortized.checkpoint.as_ref())
        .expect("validated: csb has a conditional model");
    let dir = sec.dir.clone().expect("validated: csb has a dir");
    let (prior, observer) = load_for(file, path, problem, &device)?;
    let settings = sec.settings();
    let [c, h, w] = problem.shape;
    let cond_shape = [ConditionSpec::channels(c), h, w];
    let forward_config: UNetConfig = prior.meta.unet.clone().with_precondition(None);
    settings.check_schedule("csb", &prior.schedule)?;
    let forward = forward_config.init_seeded(&device, forward_init_seed(settings.seed));
    let mut bridge = ConditionalBridge::new(
        prior.model.clone(),
        forward,
        &prior.schedule,
        &settings,
        problem.shape,
        cond_shape,
        device.clone(),
    )?;
    let conditional = std::fs::canonicalize(&prior.dir).unwrap_or_else(|_| prior.dir.clone());
    let mut record = BridgeRecord {
        conditional: format!(
            "{} ({} weights)",
            conditional.display(),
            prior.weights.name()
        ),
        settings: settings_key(&settings),
        iterations: Vec::new(),
    };
    record.iterations = read_record(&dir, &record)?;
    let done = record.iterations.len().min(settings.iterations);
    if done > 0 {
        let it = iteration_dir(&dir, done);
        bridge.backward = load_module(bridge.backward.clone(), &it.join("backward.bpk"))?;
        bridge.forward = load_module(bridge.forward.clone(), &it.join("forward.bpk"))?;
    }
    if done < settings.iterations {
        // The directory's lock for as long as iterations are written (a second run on it is
        // refused, naming this one's pid); it also clears temporaries a killed run left.
        let _lock = RunDir::claim(&dir, Claim::Resume)?;
        let kind = file.data.dataset.kind(None);
        let data_dir = tweedie_datasets::resolve_dir(kind, file.data.dir.as_deref())?;
        let set = tweedie_datasets::load(kind, tweedie_datasets::Split::Train, &data_dir)?;
        let pairs = ImagePairs {
            set: &set,
            observer: &observer,
            device: device.clone(),
        };
        let bar = crate::progress::bar(
            (settings.iterations - done).saturating_mul(2 * settings.train_steps),
            models.quiet,
            "{spinner} csb IPF [{bar:30}] {pos}/{len} optimiser steps {per_sec} ETA {eta}",
        );
        crate::progress::say(
            &bar,
            format!(
                "csb: IPF iterations {}..={} on {} train images ({} optimiser steps of {} pairs per \
             half-iteration, paths of {} steps) → {}",
                done + 1,
                settings.iterations,
                set.len(),
                settings.train_steps,
                settings.batch_size,
                settings.steps,
                dir.display()
            ),
        );
        let mut clock = Instant::now();
        record.iterations.truncate(done);
        bridge.refine(
            &pairs,
            &settings,
            done,
            &mut |i, b, losses| {
                record.iterations.push(IterationLog {
                    losses,
                    seconds: clock.elapsed().as_secs_f64(),
                });
                save_iteration(&dir, i, b, &record)?;
                clock = Instant::now();
                Ok(())
            },
            &|| bar.inc(1),
        )?;
        bar.finish_and_clear();
    }
    let bridge_seconds: f64 = record.iterations[..settings.iterations]
        .iter()
        .map(|l| l.seconds)
        .sum();

    let clock = Instant::now();
    let k = file.run.samples;
    let per_batch = (file.run.batch_size / k).max(1);
    let mut values = Vec::with_capacity(problem.len() * k * c * h * w);
    let mut start = 0;
    while start < problem.len() {
        let range = start..(start + per_batch).min(problem.len());
        start = range.end;
        let rows = range.len() * k;
        let cond = tweedie_core::host_values(observer.condition(problem.y_rows(range, k, &device)));
        let x0 = bridge.sample(&cond, rows, rng);
        values.extend(x0.into_iter().map(|v| v.clamp(-1.0, 1.0)));
        for _ in 0..bridge.steps() {
            on_step();
        }
    }
    Ok(MethodRun {
        method: Method::Csb,
        samples: k,
        values,
        nfe: bridge.steps(),
        vjps: 0,
        seconds: clock.elapsed().as_secs_f64(),
        particles: None,
        train_seconds: Some(training_seconds(&prior).unwrap_or(0.0) + bridge_seconds),
    })
}
