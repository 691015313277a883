//! Quality against network evaluations: for each sampler and NFE budget, one sample set from
//! the same seed, each scored by classifier-FID against the same reference moments. Each run
//! writes `<out>/<sampler>-<steps>/` (grid.png, samples.npy, run.json) as it finishes; a run
//! directory whose `run.json` matches the request is reused, so an interrupted sweep resumes.
//! [`run`] returns an [`NfeReport`] (`nfe.json`, the curve `nfe.png`, a Markdown table).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::parallel::Sharded;
use tweedie_core::rng::Rng;

use crate::fid::{FidReference, ReferenceSpec};
use crate::output::{write_file, write_samples};
use crate::plot::fid_vs_nfe_png;
use crate::prior::Prior;
use crate::progress::say;
use crate::sampler::{SamplerKind, draw_images};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct NfeOptions {
    /// A run directory (its newest step) or a step directory.
    pub checkpoint: PathBuf,
    pub samplers: Vec<SamplerKind>,
    /// Budgets of network evaluations per image.
    pub nfe: Vec<usize>,
    /// Images per sample set.
    pub n: usize,
    pub batch_size: usize,
    pub shards: usize,
    pub seed: u64,
    pub raw_weights: bool,
    pub out: PathBuf,
    pub backend: BackendKind,
    pub quiet: bool,
    pub reference: ReferenceSpec,
}

/// What a run was asked for: a run directory whose `run.json` has the same key is reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunKey {
    checkpoint: String,
    step: usize,
    weights: String,
    sampler: SamplerKind,
    steps: usize,
    n: usize,
    batch_size: usize,
    seed: u64,
    reference: String,
    n_reference: usize,
}

/// One row of the sweep (`run.json`, and `nfe.json` lists them all).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    key: RunKey,
    /// Network evaluations per image.
    pub nfe: usize,
    pub classifier_fid: f64,
    /// Wall-clock seconds of the sampling alone (not the scoring).
    pub seconds: f64,
}

impl RunRecord {
    pub fn sampler(&self) -> SamplerKind {
        self.key.sampler
    }
    pub fn steps(&self) -> usize {
        self.key.steps
    }
}

/// What a sweep produced.
pub struct NfeReport {
    /// One record per (sampler, steps), in sweep order.
    pub rows: Vec<RunRecord>,
    /// Title of the curve.
    pub title: String,
    pub n: usize,
}

/// One (sampler, steps) run of the sweep: where it goes, what it is asked for, and its record
/// when an earlier sweep already made it.
struct Run {
    kind: SamplerKind,
    steps: usize,
    timesteps: Vec<usize>,
    out: PathBuf,
    key: RunKey,
    done: Option<RunRecord>,
}

fn read_record(path: &Path) -> Option<RunRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Runs the sweep (reusing finished runs) and returns its records.
pub fn run(a: &NfeOptions) -> Result<NfeReport> {
    if a.n < 2 || a.batch_size == 0 || a.shards == 0 {
        bail!("--n must be at least 2, --batch-size and --shards positive");
    }
    if a.samplers.is_empty() || a.nfe.is_empty() || a.nfe.contains(&0) {
        bail!(
            "--samplers and --nfe need at least one entry each, and every budget must be positive"
        );
    }
    let device = a.backend.device()?;
    let prior = Prior::load(&a.checkpoint, &device, a.raw_weights)?;
    let (dir, meta, schedule, weights) = (&prior.dir, &prior.meta, &prior.schedule, prior.weights);
    let r = a.reference.load(&device)?;
    let (classifier, set, label) = (&r.classifier, &r.set, &r.label);
    let cfg = &r.meta.config;
    let (c, r) = (meta.unet.in_channels, meta.unet.resolution);
    if [r, r, c] != [cfg.resolution, cfg.resolution, cfg.in_channels] {
        bail!(
            "{}: the model makes {r}×{r}×{c} images, the classifier takes {}×{}×{}",
            dir.display(),
            cfg.resolution,
            cfg.resolution,
            cfg.in_channels
        );
    }
    let reference = FidReference::new(classifier, set, cfg.features, &device);
    let den = Sharded {
        inner: &prior.model,
        backend: a.backend,
        shards: a.shards,
    };

    let key_of = |kind: SamplerKind, steps: usize| RunKey {
        checkpoint: dir.display().to_string(),
        step: meta.step,
        weights: weights.name().to_string(),
        sampler: kind,
        steps,
        n: a.n,
        batch_size: a.batch_size,
        seed: a.seed,
        reference: label.clone(),
        n_reference: reference.n,
    };
    // Every (sampler, budget) pair, with the steps that fit the budget; duplicates (Heun's odd
    // budgets) are run once.
    let mut plan: Vec<Run> = Vec::new();
    for &kind in &a.samplers {
        for &budget in &a.nfe {
            let steps = kind.steps_for_nfe(budget).min(schedule.len());
            if plan.iter().any(|r| r.kind == kind && r.steps == steps) {
                continue;
            }
            let out = a.out.join(format!("{}-{steps}", kind.as_str()));
            let key = key_of(kind, steps);
            plan.push(Run {
                kind,
                steps,
                timesteps: schedule.timesteps(steps, kind.default_spacing())?,
                done: read_record(&out.join("run.json")).filter(|r| r.key == key),
                out,
                key,
            });
        }
    }
    let todo: usize = plan
        .iter()
        .filter(|r| r.done.is_none())
        .map(|r| r.timesteps.len() * a.n.div_ceil(a.batch_size))
        .sum();
    let bar = crate::progress::bar(
        todo,
        a.quiet,
        "{spinner} {msg} [{bar:30}] {pos}/{len} steps ETA {eta}",
    );

    let mut rows = Vec::new();
    for Run {
        kind,
        steps,
        timesteps,
        out,
        key,
        done,
    } in plan
    {
        let record_path = out.join("run.json");
        if let Some(rec) = done {
            say(&bar, format!("reusing {}", record_path.display()));
            rows.push(rec);
            continue;
        }
        bar.set_message(format!("{} {steps} steps", kind.as_str()));
        // The DDPM variance and DDIM's η: the `sample` defaults (β̃_t, η = 0); x̂_0 clipped.
        let mut sampler = kind.build(0.0, ModelVariance::Small, true);
        let mut rng = Rng::new(a.seed);
        let clock = Instant::now();
        let (images, calls) = draw_images(
            &den,
            sampler.as_mut(),
            schedule,
            &timesteps,
            a.n,
            a.batch_size,
            [c, r, r],
            &mut rng,
            &device,
            || bar.inc(1),
        );
        let seconds = clock.elapsed().as_secs_f64();
        let shape = [a.n, r, r, c];
        let fid = reference.fid(&images, shape, &device);
        write_samples(&out, &images, shape)?;
        let rec = RunRecord {
            key,
            nfe: calls / a.n.div_ceil(a.batch_size),
            classifier_fid: fid,
            seconds,
        };
        write_file(&record_path, &serde_json::to_vec_pretty(&rec)?)?;
        say(
            &bar,
            format!(
                "{} {steps} steps ({} NFE): classifier-FID {fid:.1}, {seconds:.1} s",
                kind.as_str(),
                rec.nfe
            ),
        );
        rows.push(rec);
    }
    bar.finish_and_clear();

    Ok(NfeReport {
        rows,
        title: format!(
            "{}: classifier-FID of {} samples against {label}",
            dir.display(),
            a.n
        ),
        n: a.n,
    })
}

impl NfeReport {
    /// Writes `out/nfe.json` and the curve `out/nfe.png`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
        write_file(
            &out.join("nfe.json"),
            &serde_json::to_vec_pretty(&self.rows)?,
        )?;
        let points: Vec<(String, usize, f64)> = self
            .rows
            .iter()
            .map(|r| (r.key.sampler.as_str().to_string(), r.nfe, r.classifier_fid))
            .collect();
        write_file(&out.join("nfe.png"), &fid_vs_nfe_png(&points, &self.title)?)
    }

    /// The sweep as a Markdown table.
    pub fn table(&self) -> String {
        let mut t = format!(
            "| sampler | steps | NFE | classifier-FID | seconds ({} images) |\n|---|---|---|---|---|\n",
            self.n
        );
        for r in &self.rows {
            t.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} |\n",
                r.key.sampler.as_str(),
                r.key.steps,
                r.nfe,
                r.classifier_fid,
                r.seconds
            ));
        }
        t
    }
}
