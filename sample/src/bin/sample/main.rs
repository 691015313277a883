//! `sample`: draws images from a trained checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tweedie_core::checkpoint;
use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::parallel::Sharded;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::Spacing;
use tweedie_sample::check::{self, Range};
use tweedie_sample::output::write_samples;
use tweedie_sample::sampler::{SamplerKind, draw_images};

mod experiment;
mod nfe;

/// Draw samples from a trained diffusion model, or run an experiment file.
///
/// Without --config: unconditional samples (grid.png, samples.npy). With --config FILE, the
/// experiment the TOML file describes: an inverse problem (experiments/mnist-sr4.toml and the other
/// mnist-<task> presets: posterior samples by the methods it lists; panels/, metrics.json), the
/// Gaussian-mixture exactness benchmark (a file with [gmm]: JSON on stdout, plots) or
/// class-conditional generation (a file with [class]); --checkpoint, --n-images, --out and
/// --seed then override the file.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// An experiment file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Checkpoint: a run directory (its newest step) or a step directory.
    #[arg(long, required_unless_present = "config")]
    checkpoint: Option<PathBuf>,
    /// Reconstruction experiments: the number of dataset images (the first N of the file's list).
    #[arg(long)]
    n_images: Option<usize>,
    /// Reverse-process sampler.
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerKind,
    /// Number of sampling steps (network calls; Heun makes 2 per step but the last); default: 50,
    /// or T for DDPM.
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM's η (0: deterministic, 1: DDPM-like noise).
    #[arg(long, default_value_t = 0.0, value_parser = tweedie_sample::check::finite_flag)]
    eta: f64,
    /// Timestep spacing: leading, trailing, linspace or logsnr (uniform in log-SNR) [default:
    /// logsnr for heun and dpmpp2m, trailing for ddpm and ddim].
    #[arg(long)]
    spacing: Option<Spacing>,
    /// DDPM variance: small (β̃_t) or large (β_t).
    #[arg(long, default_value = "small")]
    variance: ModelVariance,
    /// Do not clamp x̂_0 to [−1, 1] at each step.
    #[arg(long)]
    no_clip: bool,
    /// Use the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Images per network call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Unconditional sampling on a CPU backend: split each network call's batch into N shards,
    /// one per core, evaluated concurrently (set it to the number of cores; same images up to
    /// floating-point rounding).
    #[arg(long, default_value_t = 1, value_name = "N")]
    shards: usize,
    /// Output directory [default: samples, or the experiment file's `out`].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the initial noise and of every sampler draw [default: 0, or the file's `seed`].
    #[arg(long)]
    seed: Option<u64>,
    /// Backend: flex (CPU, default), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Classifier-FID of a sample set against a dataset split: the Fréchet distance between
    /// Gaussians fitted to the MNIST classifier's penultimate features (lower is better).
    Fid(FidArgs),
    /// Quality against network evaluations: for each sampler and NFE budget, draws --n images
    /// from the same seed and scores their classifier-FID against one set of reference moments.
    /// Writes <out>/<sampler>-<steps>/ (grid.png, samples.npy, run.json), <out>/nfe.json, the
    /// curve <out>/nfe.png and a Markdown table on stdout. A run directory whose run.json matches
    /// the request is reused, so an interrupted sweep resumes where it stopped.
    Nfe(NfeArgs),
}

#[derive(clap::Args, Debug)]
struct FidArgs {
    /// Samples: a .npy of uint8 images N×H×W×C (what `sample` writes).
    #[arg(long)]
    samples: PathBuf,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// The classifier and the reference images classifier-FID compares with.
#[derive(clap::Args, Debug)]
struct ReferenceArgs {
    /// The classifier's run directory.
    #[arg(long, default_value = "checkpoints/mnist-classifier")]
    classifier: PathBuf,
    /// Reference dataset (mnist, fashion-mnist, cifar10) and split (test or train).
    #[arg(long, default_value = "mnist")]
    dataset: String,
    #[arg(long, default_value = "test")]
    split: String,
    /// Reference images (the first N of the split; 0: all).
    #[arg(long, default_value_t = 0)]
    n_reference: usize,
    /// Directory of the dataset's files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct NfeArgs {
    /// Checkpoint: a run directory (its newest step) or a step directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Samplers to compare, comma-separated (each with its default spacing: trailing for ddpm
    /// and ddim, logsnr for heun and dpmpp2m; DDPM's β̃ variance, DDIM's η = 0, x̂_0 clipped).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ddpm,ddim,dpmpp2m,heun"
    )]
    samplers: Vec<SamplerKind>,
    /// Budgets of network evaluations per image, comma-separated; each sampler takes the most
    /// steps within each (Heun: ⌈NFE/2⌉ steps, 2·steps − 1 calls; log-SNR spacing may merge a
    /// few steps, and the table reports the NFE actually made).
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100,1000")]
    nfe: Vec<usize>,
    /// Images per sample set (the same initial noise for every sampler).
    #[arg(long, default_value_t = 128)]
    n: usize,
    /// Images per network call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Split each network call's batch into N concurrent shards (CPU backends; same images).
    #[arg(long, default_value_t = 1, value_name = "N")]
    shards: usize,
    /// Seed of the initial noise and of every sampler draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
    /// Output directory.
    #[arg(long, default_value = "nfe")]
    out: PathBuf,
    /// Backend: flex (CPU, default), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// A progress bar of `len` units in `template`'s style; hidden with `--quiet`.
fn progress_bar(len: usize, quiet: bool, template: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(ProgressStyle::with_template(template).expect("template"));
    bar
}

fn main() -> ExitCode {
    match run_cli(tweedie_sample::cli::parse_args::<Args>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(a: Args) -> Result<()> {
    match &a.command {
        Some(Command::Fid(f)) => return experiment::run_fid(f, a.backend),
        Some(Command::Nfe(n)) => return nfe::run_nfe(n),
        None => {}
    }
    if let Some(config) = a.config.clone() {
        return experiment::run_file(&config, &a);
    }
    if a.n == 0 || a.batch_size == 0 || a.shards == 0 {
        bail!("--n, --batch-size and --shards must be positive");
    }
    check::float("--eta", a.eta, Range::Unit)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("samples"));
    let dir = checkpoint::resolve(a.checkpoint.as_ref().expect("clap requires it"))?;
    let meta = checkpoint::read_meta(&dir)?;
    let schedule = meta.schedule.build()?;
    let device = a.backend.device()?;
    let (model, weights) = checkpoint::load_for_inference(&dir, &meta, &device, a.raw_weights)?;
    if !a.raw_weights && weights == checkpoint::Weights::Raw {
        eprintln!(
            "note: {} has no EMA weights; using the raw weights",
            dir.display()
        );
    }
    let big_t = schedule.len();
    let steps = a.steps.unwrap_or(match a.sampler {
        SamplerKind::Ddpm => big_t,
        _ => 50.min(big_t),
    });
    let timesteps = schedule.timesteps(steps, a.spacing.unwrap_or(a.sampler.default_spacing()))?;
    let clip = !a.no_clip;
    let mut sampler = a.sampler.build(a.eta, a.variance, clip);
    let (c, r) = (meta.unet.in_channels, meta.unet.resolution);
    let mut rng = Rng::new(a.seed.unwrap_or(0));
    let bar = progress_bar(
        a.n.div_ceil(a.batch_size) * timesteps.len(),
        a.quiet,
        "{spinner} sampling [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}",
    );
    let clock = Instant::now();
    let den = Sharded {
        inner: &model,
        backend: a.backend,
        shards: a.shards,
    };
    let (all, nfe) = draw_images(
        &den,
        sampler.as_mut(),
        &schedule,
        &timesteps,
        a.n,
        a.batch_size,
        [c, r, r],
        &mut rng,
        &device,
        || bar.inc(1),
    );
    bar.finish_and_clear();
    write_samples(&out, &all, [a.n, r, r, c])?;
    println!(
        "wrote {} and {} ({} images, {} at step {}, {} sampler, {} steps, {nfe} network calls, {:.1} s)",
        out.join("grid.png").display(),
        out.join("samples.npy").display(),
        a.n,
        weights.name(),
        meta.step,
        sampler.name(),
        timesteps.len(),
        clock.elapsed().as_secs_f64()
    );
    Ok(())
}
