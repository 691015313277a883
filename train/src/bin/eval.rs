//! `eval`: L_simple and the variational bound (bits/dim) of a checkpoint on a dataset split.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_datasets::{DatasetKind, DatasetName, Split, load, resolve_dir};
use tweedie_train::eval::{EvalOptions, evaluate};

/// Evaluate a checkpoint: L_simple and the full ELBO in bits/dim (DDPM/iDDPM), printed as JSON.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Checkpoint: a run directory (its newest step), a step directory, or a diffusers model
    /// folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Number of images (the first N of the split). The bound costs T network calls per batch.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Images per network call.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Dataset to evaluate on [default: the one the model was trained on; needed for an
    /// imported diffusers model]: mnist, fashion-mnist, cifar10 or folder.
    #[arg(long, value_parser = tweedie_core::choice::parse::<DatasetName>)]
    dataset: Option<DatasetName>,
    /// Split: test or train.
    #[arg(long, default_value = "test", value_parser = tweedie_core::choice::parse::<Split>)]
    split: Split,
    /// Directory of the dataset's files (default: $TWEEDIE_DATA/<name>, then data/<name>).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
    /// Fixed variance of p(x_{t-1} | x_t): small (β̃_t) or large (β_t).
    #[arg(long, default_value = "small")]
    variance: ModelVariance,
    /// Do not clamp x̂_0 to [−1, 1] in the model mean.
    #[arg(long)]
    no_clip: bool,
    /// Seed of t, ε and the noise of the bound's terms.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tweedie_sample::cli::main::<Args>(run)
}

fn run(a: Args) -> Result<()> {
    let device = a.backend.device()?;
    let tweedie_sample::prior::Prior {
        dir,
        meta,
        schedule,
        model,
        weights,
    } = tweedie_sample::prior::Prior::load(&a.checkpoint, &device, a.raw_weights)?;
    let mut kind: DatasetKind = match a.dataset {
        Some(d) => d.kind(None),
        None => meta.dataset.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: the model does not name its dataset ({}): give --dataset",
                dir.display(),
                meta.dataset
            )
        })?,
    };
    if let DatasetKind::Folder { channels } = &mut kind {
        *channels = meta.unet.in_channels;
    }
    let data = load(kind, a.split, &resolve_dir(kind, a.data_dir.as_deref())?)?;
    let n = a.n.min(data.len());
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((n.div_ceil(a.batch_size.max(1)) * schedule.len()) as u64)
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} ELBO [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    )?);
    let clock = Instant::now();
    let opts = EvalOptions {
        n,
        batch_size: a.batch_size.max(1),
        seed: a.seed,
        variance: a.variance,
        clip: !a.no_clip,
    };
    let r = evaluate(&model, &schedule, &data, &device, &opts, || bar.inc(1));
    bar.finish_and_clear();
    let mut json = serde_json::to_value(&r)?;
    json["checkpoint"] = dir.display().to_string().into();
    json["step"] = meta.step.into();
    json["weights"] = weights.name().into();
    json["split"] = a.split.name().into();
    json["variance"] = format!("{:?}", a.variance).to_lowercase().into();
    json["seconds"] = clock.elapsed().as_secs_f64().into();
    println!("{json}");
    Ok(())
}
