//! What `train` does with a file, as library functions: load the data a plan names (downloading
//! when asked), train a diffusion model or a classifier, and summarise. The binary only parses
//! flags and prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tweedie_core::device::{BackendKind, DeviceSpec};
use tweedie_core::run_dir::{Claim, RunDir};
use tweedie_datasets::{DatasetKind, Split, download, load, resolve_dir};

use crate::classify::{ClassifierFile, ClassifierReport, train_classifier};
use crate::config::{Plan, TrainFile};
use crate::trainer::{self, Report, RunOptions};
use tweedie_sample::experiment::{Set, apply_sets};

/// The data directory of `kind`: the explicit one, else the default places; with `download`,
/// missing files are fetched (into `data/<name>` unless a directory is given) and verified.
pub fn data_dir(kind: DatasetKind, explicit: Option<&Path>, download: bool) -> Result<PathBuf> {
    let dir = match resolve_dir(kind, explicit) {
        Ok(d) => d,
        Err(_) if download => {
            let d = explicit
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data").join(kind.name()));
            download::ensure(kind, &d)?;
            d
        }
        Err(e) => return Err(e.into()),
    };
    if download {
        download::ensure(kind, &dir)?;
    }
    Ok(dir)
}

/// How to run a diffusion training file.
#[derive(Debug, Clone)]
pub struct DiffusionRun {
    pub backend: BackendKind,
    /// Data parallelism across these devices (`--devices`); empty: `backend`'s one device.
    pub devices: Vec<DeviceSpec>,
    /// How long a node of `devices` may take to answer (`--node-timeout`, `--step-timeout`).
    pub nodes: tweedie_core::device::NodeTimeouts,
    /// Stop after this many seconds of training (`--time-limit`), saving as at the last step.
    pub time_limit: Option<f64>,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    pub restart: bool,
    /// Skip the bound evaluations of `[train] eval_every` and the FID scores of `fid_every`.
    pub no_eval: bool,
    pub download: bool,
    pub quiet: bool,
}

/// Trains the diffusion model `plan` describes; announces what it will do on stderr first.
pub fn diffusion(plan: &Plan, o: &DiffusionRun) -> Result<Report> {
    let download = o.download || plan.file.data.download;
    let dir = data_dir(plan.dataset, plan.file.data.dir.as_deref(), download)?;
    let mut data = load(plan.dataset, Split::Train, &dir)?;
    if plan.file.data.limit > 0 {
        data.truncate(plan.file.data.limit);
    }
    let on = if o.devices.is_empty() {
        o.backend.to_string()
    } else {
        let names: Vec<String> = o.devices.iter().map(|d| d.to_string()).collect();
        format!("devices {}", names.join(", "))
    };
    let until = match o.time_limit {
        Some(s) => format!(", or {s} s of training, whichever comes first"),
        None => String::new(),
    };
    eprintln!(
        "training {} ({} parameters) on {} {} images from {} with {on} for {} steps{until} → {}",
        tweedie_core::choice::name(&plan.file.model.preset),
        plan.unet.num_params(),
        data.len(),
        plan.dataset.name(),
        dir.display(),
        plan.file.train.steps,
        plan.run_dir.display()
    );
    let eval_data = if plan.file.train.eval_every > 0 && !o.no_eval {
        Some(load(plan.dataset, Split::Test, &dir)?)
    } else {
        None
    };
    let opts = RunOptions {
        // The first of several devices decides what the CPU-only paths (shards, timing) see.
        backend: o
            .devices
            .first()
            .and_then(|d| d.backend())
            .unwrap_or(o.backend),
        devices: o.devices.clone(),
        nodes: o.nodes,
        time_limit: o.time_limit,
        resume: o.resume.clone(),
        restart: o.restart,
        progress: !o.quiet,
        eval_data,
        score_fid: !o.no_eval,
        fid_cache: tweedie_sample::inception_fid::default_cache(),
    };
    trainer::train(plan, &data, &opts)
}

/// The one-line summary of a finished run.
pub fn summary(r: &Report) -> String {
    let n = r.losses.len();
    let k = 20.min(n).max(1) as f64;
    let head = r.losses.iter().take(20).sum::<f64>() / k;
    let tail = r.losses.iter().skip(n.saturating_sub(20)).sum::<f64>() / k;
    let mixed = r.loss_scale.as_ref().map_or(String::new(), |s| {
        format!(
            "; mixed precision: loss scale {}, {} steps skipped for overflow in all",
            s.scale, s.skipped
        )
    });
    format!(
        "done: steps {}..{} in {:.1} s ({:.3} s/step), loss {head:.4} → {tail:.4} (mean of \
         first/last 20), checkpoint {}{mixed}",
        r.first_step,
        r.last_step,
        r.seconds,
        r.seconds / n.max(1) as f64,
        r.checkpoint.display()
    )
}

/// How to run a classifier file.
#[derive(Debug, Clone)]
pub struct ClassifierRun {
    pub backend: BackendKind,
    pub restart: bool,
    pub download: bool,
    pub quiet: bool,
}

/// Trains the classifier `file` describes into `run_dir` (claimed first: a directory that holds
/// a classifier is refused unless `restart` moves it aside).
pub fn classifier(
    file: &ClassifierFile,
    run_dir: &Path,
    o: &ClassifierRun,
) -> Result<ClassifierReport> {
    file.validate()?;
    if file.data.dataset == tweedie_datasets::DatasetName::Folder && file.data.channels.is_none() {
        bail!("[data] dataset = \"folder\" needs `channels` (1 or 3)");
    }
    let kind = file.data.dataset.kind(file.data.channels);
    let dir = data_dir(kind, file.data.dir.as_deref(), o.download)?;
    let data = load(kind, Split::Train, &dir)?;
    let test = load(kind, Split::Test, &dir)?;
    let claim = if o.restart {
        Claim::Restart
    } else {
        Claim::Fresh
    };
    let owned = RunDir::claim(run_dir, claim).map_err(|e| match e {
        tweedie_core::CoreError::RunExists { path } => anyhow::anyhow!(
            "{0} already holds a classifier: start over with --restart (moves it to {0}.old-N)",
            path.display()
        ),
        e => e.into(),
    })?;
    if let Some(old) = owned.moved_to() {
        eprintln!("moved the previous classifier to {}", old.display());
    }
    eprintln!(
        "training the classifier on {} {} images for {} steps → {}",
        data.len(),
        kind.name(),
        file.train.steps,
        run_dir.display()
    );
    train_classifier(file, run_dir, &data, &test, o.backend, !o.quiet)
        .with_context(|| run_dir.display().to_string())
}

/// Reads the training file a checkpoint keeps (`<step>/config.toml`) for `--resume` without
/// `--config`; the run stays in its own directory.
pub fn resumed_file(resume: &Path, sets: &[Set]) -> Result<TrainFile> {
    let dir = tweedie_core::checkpoint::resolve(resume)?;
    let p = dir.join(trainer::CONFIG_FILE);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    let invalid = || format!("{}: invalid experiment file", p.display());
    let text = apply_sets(&text, sets).with_context(invalid)?;
    let mut f = TrainFile::parse_checkpoint_copy(&text).with_context(invalid)?;
    // The run continues where it is, unless the overrides move it.
    if !sets.iter().any(|s| s.key == "run_dir") {
        f.run_dir = Some(
            dir.parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| resume.to_path_buf()),
        );
    }
    Ok(f)
}

/// Writes the checkpoint `checkpoint` (a run or step directory) as a diffusers `DDPMPipeline`
/// folder `out` (its EMA weights unless `raw`), with a model card holding the training
/// configuration and the last logged metrics. `out` must not hold anything yet.
pub fn export(checkpoint: &Path, out: &Path, raw: bool) -> Result<PathBuf> {
    use tweedie_core::checkpoint::{self, diffusers};
    use tweedie_core::elbo::ModelVariance;
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} already holds files: choose another --out",
            out.display()
        );
    }
    let dir = checkpoint::resolve(checkpoint)?;
    let meta = checkpoint::read_meta(&dir)?;
    let device = BackendKind::Flex.device()?;
    let (unet, weights) = checkpoint::load_for_inference(&dir, &meta, &device, raw)?;
    let defaults = meta.sampling.unwrap_or_default();
    let (variance, clip) = (
        defaults.variance.unwrap_or(ModelVariance::Small),
        defaults.clip.unwrap_or(true),
    );
    let config = std::fs::read_to_string(dir.join(trainer::CONFIG_FILE)).unwrap_or_default();
    let metrics = dir
        .parent()
        .map(|run| run.join(trainer::METRICS_FILE))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let last = |has: &str| {
        metrics
            .lines()
            .rev()
            .find(|l| l.contains(has))
            .map(str::to_string)
    };
    let mut card = format!(
        "---\nlibrary_name: diffusers\ntags:\n- ddpm\n- tweedie\n---\n\n# {name}\n\nA DDPM ε-prediction \
         model ({params} parameters, {c}×{r}×{r} images) trained with \
         [Tweedie](https://github.com/) and exported with `train export`: the {which} weights at \
         step {step}. Load it with `diffusers.DDPMPipeline.from_pretrained` or \
         `UNet2DModel.from_pretrained(path, subfolder=\"unet\")`.\n\n\
         Scheduler: {sched:?}, variance {variance:?}, x̂₀ clipped: {clip}.\n",
        name = out
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().to_string()),
        params = meta.unet.num_params(),
        c = meta.unet.in_channels,
        r = meta.unet.resolution,
        which = weights.name(),
        step = meta.step,
        sched = meta.schedule,
    );
    if !config.is_empty() {
        card.push_str(&format!(
            "\n## Training configuration\n\n```toml\n{config}```\n"
        ));
    }
    if let Some(l) = last("\"loss\"") {
        card.push_str(&format!("\n## Last logged step\n\n```json\n{l}\n```\n"));
    }
    if let Some(l) = last("\"eval\"") {
        card.push_str(&format!(
            "\n## Last evaluation (test L_simple, bits/dim)\n\n```json\n{l}\n```\n"
        ));
    }
    diffusers::export(
        &unet,
        &meta.unet,
        &meta.schedule,
        variance,
        clip,
        out,
        &card,
    )
    .with_context(|| format!("exporting {}", dir.display()))?;
    Ok(out.to_path_buf())
}
