//! A reconstruction file, run end to end: the prior, the images and their observation, every
//! method, the scores. [`run`] returns a [`ReconReport`]; [`ReconReport::write`] writes what
//! people look at (panels, grids, samples, `metrics.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use tweedie_core::device::BackendKind;
use tweedie_core::lpips::{Lpips, LpipsFiles};
use tweedie_core::rng::Rng;
use tweedie_datasets::DatasetKind;

use super::{Method, MethodReport, MethodRun, Models, Problem, ReconFile, panel_png};
use super::{add_lpips, reconstruct, score};
use crate::output::{grid_png, npy_bytes, u8_nhwc, write_file};
use crate::prior::Prior;

/// How to run a file (what is not in it).
#[derive(Debug, Clone)]
pub struct ReconOptions {
    /// The file's path, recorded in `metrics.json`.
    pub path: PathBuf,
    pub backend: BackendKind,
    /// Use the raw trained weights (also when the file says so).
    pub raw_weights: bool,
    pub quiet: bool,
    /// LPIPS weights (`sample --lpips DIR`); `None` looks for them where
    /// [`LpipsFiles::locate`] does, and scores without LPIPS (saying so) when they are not there.
    pub lpips: Option<LpipsFiles>,
}

/// What a run produced.
pub struct ReconReport {
    pub file: ReconFile,
    pub problem: Problem,
    /// One per method, in the file's order.
    pub runs: Vec<MethodRun>,
    /// Scores by method name.
    pub scores: BTreeMap<String, MethodReport>,
    /// The record written as `metrics.json`.
    pub record: serde_json::Value,
    /// "sr×4 on 20 mnist images, gaussian σ_y = 0.05 (ema weights, step 2500):".
    pub title: String,
}

/// Runs every method of `file` on its images.
pub fn run(file: &ReconFile, opts: &ReconOptions) -> Result<ReconReport> {
    file.validate()?;
    // `--raw-weights` reaches every model the run loads (the prior and the conditional ones).
    let mut file = file.clone();
    file.run.raw_weights |= opts.raw_weights;
    let file = &file;
    let device = opts.backend.device()?;
    let grad_device = device.clone().autodiff();
    let prior = Prior::load(&file.checkpoint, &device, file.run.raw_weights)?;
    let grad_model = prior.grad_model(&grad_device);

    let (problem, kind) = load_problem(file, &prior, &opts.path, &device)?;

    // The methods, each with its own random stream (adding one does not change another's draws).
    let models = Models {
        plain: &prior.model,
        grad: &grad_model,
        device: device.clone(),
        grad_device,
        quiet: opts.quiet,
    };
    let specs = file.specs();
    let images = problem.indices.len();
    let total: usize = specs
        .iter()
        .map(|m| file.steps(m.method) * file.method_chunks(*m, images))
        .sum();
    let bar = crate::progress::bar(
        total,
        opts.quiet,
        "{spinner} {msg:12} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}",
    );
    let mut runs: Vec<MethodRun> = Vec::new();
    for &m in &specs {
        bar.set_message(m.key());
        let mut rng = Rng::derive(file.seed, m.stream());
        let run = reconstruct(
            file,
            m,
            &problem,
            &models,
            &prior.schedule,
            &mut rng,
            || bar.inc(1),
        )
        .with_context(|| format!("method {}", m.key()))?;
        runs.push(run);
    }
    bar.finish_and_clear();

    let lpips_files = opts.lpips.clone().or_else(LpipsFiles::locate);
    let lpips = match &lpips_files {
        Some(files) => Some(Lpips::read(files, &device)?),
        None => None,
    };
    let mut scores: BTreeMap<String, MethodReport> = BTreeMap::new();
    for run in &runs {
        let mut report = score(run, &problem, file.steps(run.method));
        if let Some(net) = &lpips {
            add_lpips(&mut report, run, &problem, net, &device);
        }
        scores.insert(run.spec().key(), report);
    }
    let lpips_note = match &lpips_files {
        Some(f) => format!(
            "AlexNet, lpips v0.1 ({}, {})",
            f.trunk.display(),
            f.linear.display()
        ),
        None => format!("not computed: {}", crate::lpips::NOT_FOUND),
    };
    let [_, h, w] = problem.shape;
    let operator = file.operator(h, w)?.name();
    let noise = file.noise_model()?.name();
    let rows: Vec<String> = specs
        .iter()
        .filter(|m| m.method != Method::Pinv)
        .map(|m| m.key())
        .collect();
    let record = serde_json::json!({
        "experiment": opts.path.display().to_string(),
        "checkpoint": prior.dir.display().to_string(),
        "weights": prior.weights.name(),
        "step": prior.meta.step,
        "dataset": kind.name(),
        "split": file.data.split.name(),
        "images": problem.indices,
        "operator": operator,
        "noise": noise,
        "seed": file.seed,
        "backend": opts.backend.name(),
        "panel_rows": rows,
        "panel_columns": ["truth", "observation", "pinv", "samples…", "posterior mean", "posterior std"],
        "lpips": lpips_note,
        "methods": scores,
    });
    let title = format!(
        "{operator} on {} {} images, {noise} ({} weights, step {}):",
        problem.indices.len(),
        kind.name(),
        prior.weights.name(),
        prior.meta.step
    );
    Ok(ReconReport {
        file: file.clone(),
        problem,
        runs,
        scores,
        record,
        title,
    })
}

/// The images `file` names and their observation y = A(x) + noise, drawn from
/// `Rng::derive(file.seed, 1)`; `path` names the file in errors.
pub(super) fn load_problem(
    file: &ReconFile,
    prior: &Prior,
    path: &Path,
    device: &Device,
) -> Result<(Problem, DatasetKind)> {
    let kind = file.data.dataset.kind(None);
    let data_dir = tweedie_datasets::resolve_dir(kind, file.data.dir.as_deref())?;
    let set = tweedie_datasets::load(kind, file.data.split, &data_dir)?;
    let want = prior.image_shape();
    if set.shape != want {
        bail!(
            "{}: the checkpoint's model takes {:?} images, {} has {:?}",
            prior.dir.display(),
            want,
            kind.name(),
            set.shape
        );
    }
    let indices = file.image_indices();
    if let Some(bad) = indices.iter().find(|i| **i >= set.len()) {
        bail!(
            "{}: image index {bad} is out of range ({} has {} images)",
            path.display(),
            kind.name(),
            set.len()
        );
    }
    let truth: Vec<f32> = indices
        .iter()
        .flat_map(|i| {
            set.image(*i)
                .iter()
                .map(|b| tweedie_datasets::to_model_scale(*b))
        })
        .collect();
    let problem = Problem::observe(
        file,
        set.shape,
        indices,
        truth,
        &mut Rng::derive(file.seed, 1),
        device,
    )?;
    Ok((problem, kind))
}

impl ReconReport {
    /// Writes `out/<method>/{samples.npy, grid.png}`, `out/panels/<index>.png` and
    /// `out/metrics.json`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let panels = out.join("panels");
        std::fs::create_dir_all(&panels)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", panels.display()))?;
        let [c, h, w] = self.problem.shape;
        for run in &self.runs {
            let n = run.values.len() / (c * h * w);
            let (bytes, shape) = u8_nhwc(&run.values, [n, c, h, w]);
            let mdir = out.join(run.spec().key());
            std::fs::create_dir_all(&mdir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", mdir.display()))?;
            write_file(&mdir.join("samples.npy"), &npy_bytes(&bytes, &shape))?;
            write_file(
                &mdir.join("grid.png"),
                &grid_png(&bytes, shape, run.samples.max(1) * 4)?,
            )?;
        }
        let pinv = self.runs.iter().find(|r| r.method == Method::Pinv);
        for (i, index) in self.problem.indices.iter().enumerate() {
            let png = panel_png(
                &self.file,
                &self.problem,
                i,
                &self.runs,
                pinv,
                self.file.run.show_samples,
            )?;
            write_file(&panels.join(format!("{index:05}.png")), &png)?;
        }
        write_file(
            &out.join("metrics.json"),
            serde_json::to_string_pretty(&self.record)?.as_bytes(),
        )
    }

    /// The results as a text table, one line per method.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{}\n{:<12} {:>10} {:>9} {:>10} {:>9} {:>7} {:>6} {:>6} {:>6} {:>9}\n",
            self.title,
            "method",
            "PSNR",
            "SSIM",
            "PSNR(mean)",
            "SSIM(mean)",
            "LPIPS",
            "NFE",
            "VJP",
            "ESS",
            "seconds"
        );
        for run in &self.runs {
            let spec = run.spec();
            let r = &self.scores[&spec.key()];
            let name = match spec.particles {
                Some(k) => format!("{} K={k}", spec.method.name()),
                None => spec.method.name().to_string(),
            };
            t.push_str(&format!(
                "{:<12} {:>10.2} {:>9.4} {:>10.2} {:>9.4} {:>7} {:>6} {:>6} {:>6} {:>9.1}\n",
                name,
                r.psnr_mean,
                r.ssim_mean,
                r.psnr_posterior_mean,
                r.ssim_posterior_mean,
                r.lpips_mean.map_or("-".into(), |v| format!("{v:.4}")),
                r.nfe,
                r.vjps,
                r.ess_mean.map_or("-".into(), |e| format!("{e:.2}")),
                r.seconds
            ));
        }
        t
    }
}
