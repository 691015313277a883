//! `sample`: draws images from a trained checkpoint, or runs a sampling experiment file. The
//! workflows are library functions of `tweedie_sample`; this binary parses flags, calls them,
//! and writes and prints their reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tweedie_core::checkpoint::hub;
use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::schedule::Spacing;
use tweedie_datasets::{DatasetName, Split};
use tweedie_sample::class_cond::{self, ClassFile, ClassOptions};
use tweedie_sample::experiment::{self, Binary, ExperimentKind, Set};
use tweedie_sample::fid::{self, ReferenceSpec};
use tweedie_sample::generate::{self, GenerateOptions};
use tweedie_sample::gmm_bench::{self, GmmFile, GmmOptions};
use tweedie_sample::nfe::{self, NfeOptions};
use tweedie_sample::recon::{self, ReconFile, ReconOptions};
use tweedie_sample::sampler::SamplerKind;

/// Draw samples from a trained diffusion model, or run a sampling experiment file.
///
/// Without --config: unconditional samples (grid.png, samples.npy). With --config FILE, the
/// experiment the file's `kind` names: `reconstruction` (an inverse problem, e.g.
/// experiments/mnist-sr4.toml: posterior samples by the methods it lists; panels/,
/// metrics.json), `gmm-benchmark` (the Gaussian-mixture exactness benchmark: JSON on stdout,
/// plots) or `class-conditional`; --checkpoint, --n-images, --out and --seed then override the
/// file. Training files (`diffusion-training`, `classifier-training`) are for `train`.
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
    /// An experiment file (TOML) of kind reconstruction, gmm-benchmark or class-conditional.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Checkpoint: a run directory (its newest step), a step directory, a diffusers model folder
    /// or hf:<org>/<model> (from the Hugging Face cache; see `sample download`).
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
    /// DDIM's η in [0, 1] (0: deterministic, 1: DDPM-like noise).
    #[arg(long, default_value_t = 0.0, value_parser = tweedie_sample::check::finite_flag)]
    eta: f64,
    /// Timestep spacing: leading, trailing, linspace or logsnr (uniform in log-SNR) [default:
    /// logsnr for heun and dpmpp2m, trailing for ddpm and ddim].
    #[arg(long)]
    spacing: Option<Spacing>,
    /// DDPM variance: small (β̃_t) or large (β_t) [default: the model's (an imported
    /// scheduler's variance_type), else small].
    #[arg(long)]
    variance: Option<ModelVariance>,
    /// Do not clamp x̂_0 to [−1, 1] at each step [default: clamp, unless the model's scheduler
    /// says clip_sample = false].
    #[arg(long)]
    no_clip: bool,
    /// Use the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
    /// LPIPS weights for a reconstruction file's metrics: a folder with alexnet-owt-7be5be79.pth
    /// and alex.pth [default: $TWEEDIE_LPIPS, else ~/.cache/tweedie/lpips and the torch hub
    /// cache; without them metrics.json says LPIPS was not computed].
    #[arg(long)]
    lpips: Option<PathBuf>,
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
    /// Output directory [default: samples, or the experiment file's `out`, else out/<file stem>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the initial noise and of every sampler draw [default: 0, or the file's `seed`].
    #[arg(long)]
    seed: Option<u64>,
    /// Override any key of the experiment file, `--set dps.zeta=0.5` (repeatable; a dotted path
    /// and a TOML value, a bare word being a string); checked like the file's own values.
    /// `--checkpoint` and `--seed` are `--set checkpoint=…` and `--set seed=…` (`run.seed` in a
    /// gmm-benchmark file), applied before any `--set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// FID of a sample set (lower is better). With --reference: Inception FID and KID on
    /// pytorch-fid's network (CIFAR-10, the papers' number). Without: classifier-FID, the
    /// Fréchet distance between Gaussians fitted to the MNIST classifier's penultimate features.
    Fid(FidArgs),
    /// LPIPS (Zhang et al. 2018, AlexNet, the lpips package's v0.1 layers) between the image
    /// pairs of two .npy files; prints one JSON line with the distance per pair and the mean.
    Lpips(LpipsArgs),
    /// pool3 features (2048 per image) of pytorch-fid's Inception-v3 for the images of a .npy
    /// file (float32 N×3×H×W on [−1, 1] or uint8 N×H×W×3), written as float32 N×2048: what FID and
    /// KID are computed from (scripts/fid-parity.py checks them against pytorch-fid).
    Inception(InceptionArgs),
    /// FID and KID between two feature files (float32 N×d, what `sample inception` writes): the
    /// Fréchet distance of their Gaussians (pytorch-fid's) and the kernel inception distance
    /// (torchmetrics'), printed as one JSON line.
    FeatureDistance(FeatureDistanceArgs),
    /// Quality against network evaluations: for each sampler and NFE budget, draws --n images
    /// from the same seed and scores their classifier-FID against one set of reference moments.
    /// Writes <out>/<sampler>-<steps>/ (grid.png, samples.npy, run.json), <out>/nfe.json, the
    /// curve <out>/nfe.png and a Markdown table on stdout. A run directory whose run.json matches
    /// the request is reused, so an interrupted sweep resumes where it stopped.
    Nfe(NfeArgs),
    /// Tunes the step sizes of a reconstruction file's methods (DPS's ζ, DiffPIR's λ and ζ,
    /// ΠGDM's weight) by the PSNR of posterior samples on images of the train split (never the
    /// test images the file reports on); prints the search as a Markdown table and writes a copy
    /// of the file with the chosen values.
    Tune(TuneArgs),
    /// ε̂ = ε_θ(x_t, t) of a checkpoint (or diffusers model folder) on given inputs: float32 .npy
    /// in, N×C×H×W on the model's [−1, 1] scale; float32 .npy out. For parity checks against
    /// other implementations (scripts/diffusers-parity.py).
    Eps(EpsArgs),
    /// Fetches published weights and prints where they went. `inception`: pytorch-fid's FID
    /// Inception into ~/.cache/tweedie/inception/; `lpips`: torchvision's AlexNet and the lpips
    /// package's linear layers into ~/.cache/tweedie/lpips/ (both with `curl`, checked against
    /// their published digests; nothing is fetched when the metric already finds its files). hf:<org>/<model>: a diffusers model
    /// (e.g. hf:google/ddpm-cifar10-32) into the Hugging Face cache; afterwards
    /// `--checkpoint hf:<org>/<model>` (or `checkpoint = "hf:..."` in a file) reads it from
    /// there, offline (needs a build with the `hub` feature: cargo build --release --features
    /// tweedie-core/hub).
    Download(DownloadArgs),
}

#[derive(clap::Args, Debug)]
struct DownloadArgs {
    /// What: inception, lpips, or hf:<org>/<model> (the `hf:` may be left out).
    model: String,
}

#[derive(clap::Args, Debug)]
struct EpsArgs {
    /// A run or step directory, or a diffusers model folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// x_t: a float32 .npy of shape N×C×H×W.
    #[arg(long)]
    x: PathBuf,
    /// Training timesteps, comma-separated: one for every input, or one per input.
    #[arg(long, value_delimiter = ',', required = true)]
    t: Vec<usize>,
    /// Where ε̂ goes (float32 .npy, N×C×H×W).
    #[arg(long)]
    out: PathBuf,
    /// Use the raw trained weights instead of their EMA.
    #[arg(long)]
    raw_weights: bool,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu or tch.
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
}

#[derive(clap::Args, Debug)]
struct TuneArgs {
    /// A reconstruction file.
    #[arg(long)]
    config: PathBuf,
    /// Train images to tune on (a seeded random pick of the train split).
    #[arg(long, default_value_t = 8)]
    images: usize,
    /// Posterior samples per image during the search.
    #[arg(long, default_value_t = 2)]
    samples: usize,
    /// Seed of the image pick, the observation noise and the samplers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint (overrides the file's).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Where the tuned copy goes [default: out/<file stem>/tuned.toml].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override any key of the file before tuning, `--set operator.sigma=2.0` (repeatable), as
    /// `sample --config` takes it; the tuned copy carries the overrides.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu or tch.
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct FidArgs {
    /// Samples: a .npy of uint8 images N×H×W×C (what `sample` writes), or float32 N×C×H×W on
    /// [−1, 1].
    #[arg(long)]
    samples: PathBuf,
    /// Inception FID and KID (pytorch-fid's network, the papers' CIFAR-10 number) against a
    /// dataset NAME[:SPLIT] (split train unless given; --n-reference and --data-dir apply), a
    /// folder of images, or an .npz of statistics (mu, sigma; pytorch-fid's --save-stats
    /// writes one). Without it: classifier-FID against --dataset/--split with --classifier (MNIST).
    #[arg(long)]
    reference: Option<String>,
    /// Inception: pytorch-fid's weights file (else $TWEEDIE_INCEPTION,
    /// ~/.cache/tweedie/inception/ or the torch hub cache).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Inception: where reference statistics are cached (default ~/.cache/tweedie/fid).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Inception: compute the reference statistics without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,
    /// Inception: also write the reference statistics to this .npz (mu, sigma, features,
    /// image_shape; pytorch-fid reads it).
    #[arg(long)]
    save_stats: Option<PathBuf>,
    /// KID: random subsets drawn from each set.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID: rows per subset (capped at the smaller set's size).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// Seed of the KID subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    reference_set: ReferenceArgs,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu or tch.
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
}

#[derive(clap::Args, Debug)]
struct FeatureDistanceArgs {
    /// Features of the samples (.npy, float32 N×d).
    #[arg(long)]
    a: PathBuf,
    /// Features of the reference set (.npy, float32 N×d).
    #[arg(long)]
    b: PathBuf,
    /// KID: random subsets drawn from each set.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID: rows per subset (capped at the smaller set's size).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// Seed of the KID subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct InceptionArgs {
    /// Images: float32 N×3×H×W on [−1, 1], or uint8 N×H×W×3 (what `sample` writes).
    #[arg(long)]
    images: PathBuf,
    /// pytorch-fid's weights file, pt_inception-2015-12-05-6726825d.pth (else
    /// $TWEEDIE_INCEPTION, ~/.cache/tweedie/inception/ or the torch hub cache).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Where to write the features (.npy).
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu or tch.
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
}

#[derive(clap::Args, Debug)]
struct LpipsArgs {
    /// Images: float32 N×C×H×W on [−1, 1], or uint8 N×H×W×C (what `sample` writes).
    #[arg(long)]
    a: PathBuf,
    /// Images to compare with, pair by pair: the same shape as --a.
    #[arg(long)]
    b: PathBuf,
    /// Folder with alexnet-owt-7be5be79.pth and alex.pth; by default $TWEEDIE_LPIPS, else
    /// ~/.cache/tweedie/lpips (and the trunk in the torch hub cache).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu or tch.
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
}

/// The classifier and the reference images classifier-FID compares with.
#[derive(clap::Args, Debug)]
struct ReferenceArgs {
    /// Classifier-FID: the classifier's run directory.
    #[arg(long, default_value = "checkpoints/mnist-classifier")]
    classifier: PathBuf,
    /// Reference dataset: mnist, fashion-mnist, cifar10 or folder.
    #[arg(long, default_value = "mnist", value_parser = tweedie_core::choice::parse::<DatasetName>)]
    dataset: DatasetName,
    /// Reference split: test or train.
    #[arg(long, default_value = "test", value_parser = tweedie_core::choice::parse::<Split>)]
    split: Split,
    /// Reference images (the first N of the split; 0: all).
    #[arg(long, default_value_t = 0)]
    n_reference: usize,
    /// Directory of the dataset's files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ReferenceArgs {
    fn spec(&self) -> ReferenceSpec {
        ReferenceSpec {
            classifier: self.classifier.clone(),
            dataset: self.dataset,
            split: self.split,
            n_reference: self.n_reference,
            data_dir: self.data_dir.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
struct NfeArgs {
    /// Checkpoint: a run directory (its newest step), a step directory, a diffusers model folder
    /// or hf:<org>/<model> (from the Hugging Face cache; see `sample download`).
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
    /// Backend: flex (CPU; the default, tch in a `tch` build), ndarray (CPU), wgpu (GPU; needs the `wgpu` feature) or tch (libtorch CPU; needs the `tch` feature).
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    reference: ReferenceArgs,
}

fn main() -> ExitCode {
    tweedie_sample::cli::main::<Args>(run)
}

fn run(a: Args) -> Result<()> {
    match &a.command {
        Some(Command::Fid(f)) => {
            let json = match &f.reference {
                Some(text) => {
                    use tweedie_sample::inception_fid::{FidOptions, FidReference, default_cache};
                    let r = &f.reference_set;
                    let reference =
                        FidReference::parse(text, r.n_reference, r.data_dir.as_deref())?;
                    let o = FidOptions {
                        weights: f.weights.clone(),
                        cache: if f.no_cache {
                            None
                        } else {
                            f.cache_dir.clone().or_else(default_cache)
                        },
                        save_stats: f.save_stats.clone(),
                        kid_subsets: f.kid_subsets,
                        kid_subset_size: f.kid_subset_size,
                        seed: f.seed,
                        backend: f.backend,
                        quiet: f.quiet,
                    };
                    tweedie_sample::inception_fid::score_npy(&f.samples, &reference, &o)?
                }
                None => fid::score_npy(&f.samples, &f.reference_set.spec(), f.backend)?,
            };
            println!("{json}");
            return Ok(());
        }
        Some(Command::Lpips(l)) => {
            let json =
                tweedie_sample::lpips::score_npy(&l.a, &l.b, l.weights.as_deref(), l.backend)?;
            println!("{json}");
            return Ok(());
        }
        Some(Command::Inception(i)) => {
            let weights = tweedie_sample::inception_fid::weights_file(i.weights.as_deref())?;
            return tweedie_sample::inception::features_npy(
                &i.images, &weights, &i.out, i.backend, i.quiet,
            );
        }
        Some(Command::FeatureDistance(f)) => {
            let json = tweedie_sample::inception::distance_npy(
                &f.a,
                &f.b,
                f.kid_subsets,
                f.kid_subset_size,
                f.seed,
            )?;
            println!("{json}");
            return Ok(());
        }
        Some(Command::Nfe(n)) => return run_nfe(n),
        Some(Command::Tune(t)) => return run_tune(t),
        Some(Command::Eps(e)) => return run_eps(e),
        Some(Command::Download(d)) => {
            use tweedie_sample::workflows::weights::{self, Published};
            let published = match d.model.as_str() {
                "inception" => Some(Published::Inception),
                "lpips" => Some(Published::Lpips),
                _ => None,
            };
            match published {
                Some(what) => {
                    for path in weights::download(what)? {
                        println!("{}", path.display());
                    }
                }
                None => {
                    let repo = d.model.strip_prefix(hub::PREFIX).unwrap_or(&d.model);
                    println!("{}", hub::fetch(repo)?.display());
                }
            }
            return Ok(());
        }
        None => {}
    }
    if let Some(config) = &a.config {
        return run_file(config, &a);
    }
    let opts = GenerateOptions {
        checkpoint: a.checkpoint.clone().expect("clap requires it"),
        sampler: a.sampler,
        steps: a.steps,
        eta: a.eta,
        spacing: a.spacing,
        variance: a.variance,
        clip: a.no_clip.then_some(false),
        raw_weights: a.raw_weights,
        n: a.n,
        batch_size: a.batch_size,
        shards: a.shards,
        seed: a.seed.unwrap_or(0),
        backend: a.backend,
        quiet: a.quiet,
    };
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("samples"));
    let g = generate::run(&opts)?;
    g.write(&out)?;
    println!(
        "wrote {} and {} ({})",
        out.join("grid.png").display(),
        out.join("samples.npy").display(),
        g.summary
    );
    Ok(())
}

/// The flags that name a key of an experiment file (`--checkpoint`, `--seed` under `seed_key`),
/// then `--set`, as overrides.
fn overrides(
    checkpoint: Option<&Path>,
    seed: Option<(&str, u64)>,
    set: &[String],
) -> Result<Vec<Set>> {
    let mut sets = Vec::new();
    if let Some(c) = checkpoint {
        sets.push(Set::new("checkpoint", c.display().to_string()));
    }
    if let Some((key, s)) = seed {
        sets.push(Set::unsigned(key, s, "--seed")?);
    }
    for s in set {
        sets.push(Set::parse(s)?);
    }
    Ok(sets)
}

/// `sample --config FILE`: the experiment its `kind` names.
fn run_file(path: &Path, a: &Args) -> Result<()> {
    let (kind, text) = experiment::read_for(path, Binary::Sample)?;
    let invalid = || format!("{}: invalid experiment file", path.display());
    let seed_key = if kind == ExperimentKind::GmmBenchmark {
        "run.seed"
    } else {
        "seed"
    };
    let sets = overrides(
        a.checkpoint.as_deref(),
        a.seed.map(|s| (seed_key, s)),
        &a.set,
    )?;
    let text = experiment::apply_sets(&text, &sets).with_context(invalid)?;
    let stem = path
        .file_stem()
        .map_or("experiment".into(), |s| s.to_string_lossy().to_string());
    let out_dir = |file_out: &Option<PathBuf>| {
        a.out
            .clone()
            .or(file_out.clone())
            .unwrap_or_else(|| PathBuf::from("out").join(&stem))
    };
    match kind {
        ExperimentKind::Reconstruction => {
            let mut file = ReconFile::parse(&text).with_context(invalid)?;
            file.validate().with_context(invalid)?;
            if let Some(n) = a.n_images {
                file.limit_images(n)?;
            }
            let opts = ReconOptions {
                path: path.to_path_buf(),
                backend: a.backend,
                raw_weights: a.raw_weights,
                quiet: a.quiet,
                lpips: a
                    .lpips
                    .as_deref()
                    .map(tweedie_core::lpips::LpipsFiles::in_dir),
            };
            let report = recon::run(&file, &opts)?;
            let out = out_dir(&file.out);
            report.write(&out)?;
            print!("{}", report.table());
            println!(
                "wrote {} and {}",
                out.join("metrics.json").display(),
                out.join("panels").display()
            );
        }
        ExperimentKind::GmmBenchmark => {
            let file = GmmFile::parse(&text).with_context(invalid)?;
            let opts = GmmOptions {
                stem: stem.clone(),
                quiet: a.quiet,
            };
            let report = gmm_bench::run(&file, &opts).with_context(invalid)?;
            let out = out_dir(&file.out);
            report.write(&out)?;
            eprint!("{}", report.table());
            eprintln!("wrote {} and its plots", out.join("results.json").display());
            println!("{}", report.record);
        }
        ExperimentKind::ClassConditional => {
            let file = ClassFile::parse(&text).with_context(invalid)?;
            let opts = ClassOptions {
                backend: a.backend,
                raw_weights: a.raw_weights,
                quiet: a.quiet,
            };
            let report = class_cond::run(&file, &opts)?;
            let out = out_dir(&file.out);
            report.write(&out)?;
            print!("{}", report.table());
            println!(
                "wrote {} (grids: one row per requested class)",
                out.join("results.json").display()
            );
        }
        ExperimentKind::DiffusionTraining | ExperimentKind::ClassifierTraining => {
            unreachable!("read_for refuses training files")
        }
    }
    Ok(())
}

/// `sample eps`.
fn run_eps(e: &EpsArgs) -> Result<()> {
    let bytes = std::fs::read(&e.x).with_context(|| format!("{}: cannot read", e.x.display()))?;
    let (x, dims) = tweedie_sample::output::parse_npy_f32(&bytes)
        .map_err(|m| anyhow::anyhow!("{}: {m}", e.x.display()))?;
    let [n, c, h, w] = dims[..] else {
        anyhow::bail!("{}: expected N×C×H×W, shape is {dims:?}", e.x.display());
    };
    if x.iter().any(|v| !v.is_finite()) {
        anyhow::bail!("{}: holds NaN or infinite values", e.x.display());
    }
    let device = e.backend.device()?;
    let prior = tweedie_sample::prior::Prior::load(&e.checkpoint, &device, e.raw_weights)?;
    let eps = prior.eps(x, [n, c, h, w], &e.t)?;
    tweedie_sample::output::write_file(
        &e.out,
        &tweedie_sample::output::npy_bytes_f32(&eps, &dims),
    )?;
    println!(
        "wrote {} (ε̂ of {n} inputs, {} weights of {})",
        e.out.display(),
        prior.weights.name(),
        prior.dir.display()
    );
    Ok(())
}

/// `sample tune`.
fn run_tune(t: &TuneArgs) -> Result<()> {
    let (kind, text) = experiment::read_for(&t.config, Binary::Sample)?;
    if kind != ExperimentKind::Reconstruction {
        anyhow::bail!(
            "{}: `sample tune` takes a reconstruction file, this is a {} file",
            t.config.display(),
            kind.name()
        );
    }
    let invalid = || format!("{}: invalid experiment file", t.config.display());
    let sets = overrides(t.checkpoint.as_deref(), None, &t.set)?;
    let text = experiment::apply_sets(&text, &sets).with_context(invalid)?;
    let file = ReconFile::parse(&text).with_context(invalid)?;
    let opts = recon::TuneOptions {
        path: t.config.clone(),
        images: t.images,
        samples: t.samples,
        seed: t.seed,
        backend: t.backend,
        quiet: t.quiet,
    };
    let report = recon::tune(&file, &opts).with_context(invalid)?;
    let stem = t
        .config
        .file_stem()
        .map_or("experiment".into(), |s| s.to_string_lossy().to_string());
    let out = t
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&stem).join("tuned.toml"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tweedie_sample::output::write_file(&out, report.tuned_text(&text, &t.config)?.as_bytes())?;
    print!("{}", report.table());
    for (section, key, value) in &report.chosen {
        println!("{section}.{key} = {value:.4}");
    }
    if let Some(p) = report.pinv_psnr {
        println!("A⁺y on the same images: {p:.2} dB");
    }
    for line in report.below_pinv() {
        println!("warning: {line}");
    }
    println!(
        "wrote {} (tuned on {} train images: {:?})",
        out.display(),
        report.images.len(),
        report.images
    );
    Ok(())
}

/// `sample nfe`.
fn run_nfe(n: &NfeArgs) -> Result<()> {
    let opts = NfeOptions {
        checkpoint: n.checkpoint.clone(),
        samplers: n.samplers.clone(),
        nfe: n.nfe.clone(),
        n: n.n,
        batch_size: n.batch_size,
        shards: n.shards,
        seed: n.seed,
        raw_weights: n.raw_weights,
        out: n.out.clone(),
        backend: n.backend,
        quiet: n.quiet,
        reference: n.reference.spec(),
    };
    let report = nfe::run(&opts)?;
    report.write(&n.out)?;
    print!("{}", report.table());
    eprintln!(
        "wrote {} and {}",
        n.out.join("nfe.json").display(),
        n.out.join("nfe.png").display()
    );
    Ok(())
}
