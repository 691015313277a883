//! `train`: fits a DDPM ε-model to a dataset from a TOML experiment file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tweedie_core::checkpoint;
use tweedie_core::device::BackendKind;
use tweedie_core::run_dir::{Claim, RunDir};
use tweedie_datasets::{Split, download, load, resolve_dir};
use tweedie_train::config::TrainFile;
use tweedie_train::trainer::{self, RunOptions};

/// Train a denoising diffusion model (DDPM, L_simple) from a TOML experiment file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Experiment file, e.g. experiments/mnist-tiny.toml. With --resume it may be left out:
    /// the checkpoint's own copy is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue a run from its newest checkpoint (a run directory) or from a step directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Backend: flex (CPU, default), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Seed of the run (overrides the file's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Total optimiser steps (overrides `[train] steps`).
    #[arg(long)]
    steps: Option<usize>,
    /// Output directory (overrides `run_dir`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Checkpoint every N steps (overrides `[train] checkpoint_every`).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Split each batch into N shards, one per CPU core, trained concurrently (overrides
    /// `[train] shards`; CPU backends).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Start over in a run directory that already holds a run: the old run is moved to
    /// `<run_dir>.old-<n>` first (without this flag such a directory is refused).
    #[arg(long, conflicts_with = "resume")]
    restart: bool,
    /// Skip the test-split evaluations of `[train] eval_every` (the bound costs T network calls
    /// per batch of test images), the one at the end of the run included.
    #[arg(long)]
    no_eval: bool,
    /// Download the dataset's files if they are missing (same as `[data] download = true`).
    #[arg(long)]
    download: bool,
    /// Redraw RUN_DIR/loss.png from RUN_DIR/metrics.jsonl and exit.
    #[arg(long, value_name = "RUN_DIR")]
    replot: Option<PathBuf>,
    /// Print the model's parameter count (`parameters: N`) and exit.
    #[arg(long)]
    dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    match run(tweedie_sample::cli::parse_args::<Args>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.replot {
        let png = trainer::replot(dir)?;
        println!("wrote {}", png.display());
        return Ok(());
    }
    let (mut file, stem) = match (&args.config, &args.resume) {
        (Some(p), _) => (
            TrainFile::load(p)?,
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run")
                .to_string(),
        ),
        (None, Some(r)) => {
            let dir = checkpoint::resolve(r)?;
            let p = dir.join(trainer::CONFIG_FILE);
            let mut f = TrainFile::load(&p)?;
            // A resumed run stays in its own directory unless told otherwise.
            f.run_dir = Some(dir.parent().map(PathBuf::from).unwrap_or_else(|| r.clone()));
            (f, "run".to_string())
        }
        (None, None) => anyhow::bail!("give --config FILE (or --resume DIR)"),
    };
    if let Some(s) = args.seed {
        file.seed = s;
    }
    if let Some(s) = args.steps {
        file.train.steps = s;
    }
    if let Some(d) = &args.run_dir {
        file.run_dir = Some(d.clone());
    }
    if let Some(n) = args.checkpoint_every {
        file.train.checkpoint_every = n;
    }
    if let Some(n) = args.shards {
        file.train.shards = n;
    }
    if file.model.preset == "classifier" {
        return train_classifier(&file, &stem, &args);
    }
    let plan = file.resolve(&stem).with_context(|| match &args.config {
        Some(p) => format!("{}", p.display()),
        None => "the checkpoint's config.toml".into(),
    })?;
    if args.dry_run {
        println!("parameters: {}", plan.unet.num_params());
        return Ok(());
    }
    let explicit = plan.file.data.dir.as_deref();
    let dir = match resolve_dir(plan.dataset, explicit) {
        Ok(d) => d,
        Err(_) if args.download || plan.file.data.download => {
            let d = explicit
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data").join(plan.dataset.name()));
            download::ensure(plan.dataset, &d)?;
            d
        }
        Err(e) => return Err(e.into()),
    };
    if args.download || plan.file.data.download {
        download::ensure(plan.dataset, &dir)?;
    }
    let mut data = load(plan.dataset, Split::Train, &dir)?;
    if plan.file.data.limit > 0 {
        data.truncate(plan.file.data.limit);
    }
    eprintln!(
        "training {} ({} parameters) on {} {} images from {} with {} for {} steps → {}",
        plan.file.model.preset,
        plan.unet.num_params(),
        data.len(),
        plan.dataset.name(),
        dir.display(),
        args.backend,
        plan.file.train.steps,
        plan.run_dir.display()
    );
    let eval_data = if plan.file.train.eval_every > 0 && !args.no_eval {
        Some(load(plan.dataset, Split::Test, &dir)?)
    } else {
        None
    };
    let opts = RunOptions {
        backend: args.backend,
        resume: args.resume.clone(),
        restart: args.restart,
        progress: !args.quiet,
        eval_data,
    };
    let report = trainer::train(&plan, &data, &opts)?;
    let n = report.losses.len();
    let head = report.losses.iter().take(20.min(n)).sum::<f64>() / 20.min(n).max(1) as f64;
    let tail =
        report.losses.iter().skip(n.saturating_sub(20)).sum::<f64>() / 20.min(n).max(1) as f64;
    println!(
        "done: steps {}..{} in {:.1} s ({:.3} s/step), loss {head:.4} → {tail:.4} (mean of first/last 20), checkpoint {}",
        report.first_step,
        report.last_step,
        report.seconds,
        report.seconds / n.max(1) as f64,
        report.checkpoint.display()
    );
    Ok(())
}

/// `[model] preset = "classifier"`: the classifier of guidance and classifier-FID.
fn train_classifier(file: &TrainFile, stem: &str, args: &Args) -> Result<()> {
    let kind: tweedie_datasets::DatasetKind = file
        .data
        .dataset
        .parse()
        .map_err(|e: String| anyhow::anyhow!("data.dataset: {e}"))?;
    let dir = resolve_dir(kind, file.data.dir.as_deref())?;
    let data = load(kind, Split::Train, &dir)?;
    let test = load(kind, Split::Test, &dir)?;
    let run_dir = file
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(stem));
    if args.dry_run {
        println!(
            "classifier for {} images → {}",
            kind.name(),
            run_dir.display()
        );
        return Ok(());
    }
    let claim = if args.restart {
        Claim::Restart
    } else {
        Claim::Fresh
    };
    let owned = RunDir::claim(&run_dir, claim).map_err(|e| match e {
        tweedie_core::CoreError::RunExists { path } => anyhow::anyhow!(
            "{0} already holds a classifier: start over with --restart (moves it to {0}.old-N)",
            path.display()
        ),
        e => e.into(),
    })?;
    if let Some(old) = owned.moved_to() {
        eprintln!("moved the previous classifier to {}", old.display());
    }
    tweedie_train::classify::train_classifier(
        file,
        &run_dir,
        &data,
        &test,
        args.backend,
        !args.quiet,
    )?;
    Ok(())
}
