//! `train`: runs a training experiment file (`kind = "diffusion-training"` or
//! `"classifier-training"`). The workflows are library functions of `tweedie_train::launch`; this
//! binary parses flags, calls them and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tweedie_core::device::{BackendKind, DeviceSpec};
use tweedie_core::precision::Precision;
use tweedie_sample::check::{self, Range};
use tweedie_sample::experiment::{self, Binary, ExperimentFile, ExperimentKind, Set};
use tweedie_train::classify::ClassifierFile;
use tweedie_train::config::TrainFile;
use tweedie_train::launch::{self, ClassifierRun, DiffusionRun};
use tweedie_train::trainer;

/// Train a denoising diffusion model (DDPM, L_simple), or the classifier of class guidance, from
/// a TOML experiment file whose `kind` says which.
#[derive(clap::Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Experiment file of kind diffusion-training (e.g. experiments/mnist-tiny.toml) or
    /// classifier-training (experiments/mnist-classifier.toml). With --resume it may be left
    /// out: the checkpoint's own copy is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue a run from its newest checkpoint (a run directory) or from a step directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value_t = BackendKind::default())]
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
    /// Data parallelism across devices, a comma-separated list: `flex,ndarray`, `wgpu:0,wgpu:1`
    /// (`wgpu:N` is the N-th discrete GPU). Each step's batch is split into one contiguous shard
    /// per device (in place of the file's `[train] shards`); the first device holds the model, the
    /// EMA and the checkpoints.
    /// `remote:HOST:PORT[/INDEX]` is a device of a node server (`train node`) on another
    /// machine, mixed freely with local ones after the first.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["backend", "shards"])]
    devices: Option<String>,
    /// Seconds a node of `--devices` may take to answer when the run connects to it.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    node_timeout: f64,
    /// Seconds a training step with nodes in `--devices` may take before the run stops, naming
    /// the nodes that have not answered (one that hangs with its connection open would
    /// otherwise be waited on for ever). The default, ten minutes, is torch.distributed's for
    /// NCCL; lower it when steps are short, leaving room for a GPU node's first step (kernel
    /// compilation and autotuning).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    step_timeout: f64,
    /// Arithmetic of a training step: f32, or mixed-f16 (wgpu: f16 forward and backward on a copy
    /// of the f32 weights, dynamic loss scaling; overrides `[train] precision`).
    #[arg(long, value_parser = tweedie_core::choice::parse::<Precision>)]
    precision: Option<Precision>,
    /// Stop after the step during which this many seconds of training have passed, saving a
    /// checkpoint and samples as at the last step (`--resume` continues the run).
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Start over in a run directory that already holds a run: the old run is moved to
    /// `<run_dir>.old-<n>` first (without this flag such a directory is refused).
    #[arg(long, conflicts_with = "resume")]
    restart: bool,
    /// Skip the test-split evaluations of `[train] eval_every` (the bound costs T network calls
    /// per batch of test images) and the FID scores of `[train] fid_every`, the ones at the end
    /// of the run included.
    #[arg(long)]
    no_eval: bool,
    /// Download the dataset's files if they are missing (same as `[data] download = true`).
    #[arg(long)]
    download: bool,
    /// Redraw RUN_DIR/loss.png from RUN_DIR/metrics.jsonl and exit.
    #[arg(long, value_name = "RUN_DIR")]
    replot: Option<PathBuf>,
    /// Override any key of the file, `--set train.lr=1e-3` (repeatable; a dotted path and a TOML
    /// value, a bare word being a string); checked like the file's own values. `--seed`,
    /// `--steps`, `--run-dir`, `--checkpoint-every`, `--shards` and `--precision` are the same
    /// as `--set seed=…`, `train.steps=…`, `run_dir=…`, `train.checkpoint_every=…`,
    /// `train.shards=…`, `train.precision=…`, applied before any `--set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the model's parameter count (`parameters: N`) and exit.
    #[arg(long)]
    dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes a checkpoint as a diffusers DDPMPipeline folder (model_index.json,
    /// unet/{config.json, diffusion_pytorch_model.safetensors}, scheduler/scheduler_config.json,
    /// README.md with the training configuration and metrics), loadable by
    /// `DDPMPipeline.from_pretrained(OUT)`.
    Export(ExportArgs),
    /// Serves this machine's device to training runs on other machines (burn's remote backend,
    /// over WebSocket): `train --devices flex,remote:THIS_HOST:PORT` on the training machine
    /// sends it a shard of every step. Runs until stopped (Ctrl+C). burn's protocol is plain
    /// WebSocket without authentication or encryption: bind to a private network, or to
    /// 127.0.0.1 and reach it through an SSH tunnel.
    Node(NodeArgs),
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// Address to listen on, HOST:PORT (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:7000")]
    bind: String,
    /// The backend whose device is served: flex (CPU) or wgpu (GPU; needs the `wgpu` feature).
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    /// A run directory (its newest step) or a step directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The folder to write (must not hold files yet).
    #[arg(long)]
    out: PathBuf,
    /// Export the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
}

fn main() -> ExitCode {
    tweedie_sample::cli::main::<Args>(run)
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Node(n)) = &args.command {
        let listener = std::net::TcpListener::bind(&n.bind)
            .map_err(|e| anyhow::anyhow!("--bind {}: {e}", n.bind))?;
        return tweedie_train::node::serve(listener, n.backend);
    }
    if let Some(Command::Export(e)) = &args.command {
        let out = launch::export(&e.checkpoint, &e.out, e.raw_weights)?;
        println!("wrote {}", out.display());
        return Ok(());
    }
    if let Some(dir) = &args.replot {
        let png = trainer::replot(dir)?;
        println!("wrote {}", png.display());
        return Ok(());
    }
    let sets = sets(&args)?;
    let (file, stem, source) = match (&args.config, &args.resume) {
        (Some(p), _) => {
            let (kind, text) = experiment::read_for(p, Binary::Train)?;
            let invalid = || format!("{}: invalid experiment file", p.display());
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run")
                .to_string();
            if kind == ExperimentKind::ClassifierTraining {
                let text = experiment::apply_sets(&text, &sets).with_context(invalid)?;
                let file = ClassifierFile::parse(&text).with_context(invalid)?;
                return classifier(&file, &stem, &args);
            }
            let mut sets = sets;
            if args.devices.is_some() {
                // Several devices split the batch themselves: the file's CPU shards do not apply.
                sets.insert(0, Set::new("train.shards", 1));
            }
            let text = experiment::apply_sets(&text, &sets).with_context(invalid)?;
            let file = TrainFile::parse(&text).with_context(invalid)?;
            (file, stem, p.display().to_string())
        }
        (None, Some(r)) => (
            launch::resumed_file(r, &sets)?,
            "run".to_string(),
            "the checkpoint's config.toml".into(),
        ),
        (None, None) => bail!("give --config FILE (or --resume DIR)"),
    };
    let plan = file.resolve(&stem).context(source)?;
    if args.dry_run {
        println!("parameters: {}", plan.unet.num_params());
        return Ok(());
    }
    let report = launch::diffusion(
        &plan,
        &DiffusionRun {
            backend: args.backend,
            devices: match &args.devices {
                Some(list) => DeviceSpec::parse_list(list).context("--devices")?,
                None => Vec::new(),
            },
            nodes: tweedie_core::device::NodeTimeouts {
                connect: seconds("--node-timeout", args.node_timeout)?,
                step: seconds("--step-timeout", args.step_timeout)?,
            },
            time_limit: args
                .time_limit
                .map(|s| check::float("--time-limit", s, Range::Positive))
                .transpose()?,
            resume: args.resume.clone(),
            restart: args.restart,
            no_eval: args.no_eval,
            download: args.download,
            quiet: args.quiet,
        },
    )?;
    println!("{}", launch::summary(&report));
    Ok(())
}

/// The flags that name a key of the file, then `--set`, as overrides.
fn sets(args: &Args) -> Result<Vec<Set>> {
    let mut sets = Vec::new();
    if let Some(s) = args.seed {
        sets.push(Set::unsigned("seed", s, "--seed")?);
    }
    if let Some(n) = args.steps {
        sets.push(Set::unsigned("train.steps", n as u64, "--steps")?);
    }
    if let Some(d) = &args.run_dir {
        sets.push(Set::new("run_dir", d.display().to_string()));
    }
    if let Some(n) = args.checkpoint_every {
        sets.push(Set::unsigned(
            "train.checkpoint_every",
            n as u64,
            "--checkpoint-every",
        )?);
    }
    if let Some(n) = args.shards {
        sets.push(Set::unsigned("train.shards", n as u64, "--shards")?);
    }
    if let Some(p) = args.precision {
        sets.push(Set::new("train.precision", tweedie_core::choice::name(&p)));
    }
    for s in &args.set {
        sets.push(Set::parse(s)?);
    }
    Ok(sets)
}

/// A classifier-training file (its overrides already written in).
fn classifier(file: &ClassifierFile, stem: &str, args: &Args) -> Result<()> {
    if args.resume.is_some() {
        bail!("--resume is for diffusion runs (a classifier trains in one go)");
    }
    let run_dir = file.run_dir(stem);
    if args.dry_run {
        println!(
            "classifier for {} images → {}",
            tweedie_core::choice::name(&file.data.dataset),
            run_dir.display()
        );
        return Ok(());
    }
    let r = launch::classifier(
        file,
        &run_dir,
        &ClassifierRun {
            backend: args.backend,
            restart: args.restart,
            download: args.download,
            quiet: args.quiet,
        },
    )?;
    eprintln!(
        "classifier: {} steps in {:.1} s, test accuracy {:.4} (validation loss {}) → {}",
        file.train.steps,
        r.seconds,
        r.test_accuracy,
        r.valid_loss.map_or("-".into(), |l| format!("{l:.4}")),
        run_dir.display()
    );
    Ok(())
}

/// A flag's number of seconds, at least a millisecond, as a duration (beyond `Duration`'s range:
/// for ever).
fn seconds(flag: &str, s: f64) -> Result<std::time::Duration> {
    let s = check::float(flag, s, Range::AtLeast(0.001))?;
    Ok(std::time::Duration::try_from_secs_f64(s).unwrap_or(std::time::Duration::MAX))
}
