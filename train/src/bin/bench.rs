//! `bench`: times training or sampling steps of the DDPM U-Net and prints one JSON line with the
//! fields of the PyTorch reference (`testdata/ref/ddpm_ref.py`).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::AdamConfig;
use clap::{Parser, ValueEnum};
use tweedie_core::denoiser::Denoiser;
use tweedie_core::device::BackendKind;
use tweedie_core::diffusion::Transition;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::loss::l_simple;
use tweedie_core::parallel::{self, Sharded};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};
use tweedie_core::unet::{UNetConfig, UNetPreset};
use tweedie_sample::sampler::{Ddpm, NoiseSource, Sampler};
use tweedie_train::clip::clip_global_norm;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Forward + backward + global-norm clip + Adam on random data (L_simple).
    Train,
    /// One no-grad U-Net forward plus the DDPM ancestral update.
    Sample,
}

/// Time DDPM U-Net steps; prints one JSON line (impl, config, device, mode, batch, params,
/// ms_per_step, images_per_s, dtype, peak_rss_mib, ...).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model preset: tiny, mnist or cifar10 (params.json).
    #[arg(long, default_value = "tiny", value_parser = tweedie_core::choice::parse::<UNetPreset>)]
    config: UNetPreset,
    /// Time the architecture of this checkpoint or diffusers model folder instead of a preset.
    #[arg(long)]
    checkpoint: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value = "train")]
    mode: Mode,
    /// Backend: flex, ndarray, wgpu (needs the `wgpu` feature) or tch (needs the `tch` feature).
    #[arg(long, default_value_t = BackendKind::default())]
    backend: BackendKind,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps (kernel compilation, autotuning, allocator).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also report where a train step's time goes: `phases_ms` (forward, backward, clip, optim),
    /// each phase ended by a device synchronisation (which costs a little on a GPU).
    #[arg(long)]
    phases: bool,
    /// CPU backends: split each batch into this many shards, each run on its own core (training:
    /// gradients summed; sampling: outputs concatenated). 1 = off.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

/// Milliseconds spent in each phase of the timed steps, summed; `mark` synchronises the device
/// and charges the time since the previous mark to the named phase.
struct Phases {
    on: bool,
    device: burn::tensor::Device,
    last: Instant,
    ms: Vec<(&'static str, f64)>,
}

impl Phases {
    fn mark(&mut self, phase: &'static str) {
        if !self.on {
            return;
        }
        self.device.sync().ok();
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        match self.ms.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += ms,
            None => self.ms.push((phase, ms)),
        }
    }
}

/// One timed step: its output value (to check it is finite), phases marked as it goes.
type Step = dyn FnMut(&mut Rng, &mut Phases) -> f32;

fn main() -> ExitCode {
    match run(tweedie_sample::cli::parse_args::<Args>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Peak resident set size of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run(a: Args) -> Result<()> {
    // The architecture of a checkpoint or diffusers folder (its weights do not change timings).
    let cfg = match &a.checkpoint {
        Some(c) => {
            let mut cfg =
                tweedie_core::checkpoint::read_meta(&tweedie_core::checkpoint::resolve(c)?)?.unet;
            cfg.precondition = None;
            cfg
        }
        None => UNetConfig::preset(a.config),
    };
    let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000)?;
    let plain = a.backend.device()?;
    let mut rng = Rng::new(a.seed);
    let shape = [a.batch, cfg.in_channels, cfg.resolution, cfg.resolution];
    let params;
    let mut phases = Phases {
        on: false,
        device: plain.clone(),
        last: Instant::now(),
        ms: Vec::new(),
    };
    let mut step: Box<Step> = match a.mode {
        Mode::Train => {
            let device = plain.clone().autodiff();
            let mut model = cfg.init_seeded(&device, a.seed);
            params = model.num_params();
            let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
            let x0 = rng.normal_tensor(shape, &device);
            Box::new(move |rng: &mut Rng, ph: &mut Phases| {
                let t: Vec<usize> = (0..a.batch).map(|_| rng.below(1000)).collect();
                let eps = rng.normal_tensor(shape, &device);
                ph.mark("data");
                let (loss, mut grads) =
                    parallel::loss_and_grads(a.backend, a.shards, &model, a.batch, |m, _, r| {
                        let (x0, eps) = (parallel::rows(&x0, &r), parallel::rows(&eps, &r));
                        l_simple(m, &schedule, x0, &t[r], eps)
                    });
                ph.mark("backward");
                clip_global_norm(&model, &mut grads, 1.0);
                ph.mark("clip");
                model = optim.step(2e-4, model.clone(), grads);
                ph.mark("optim");
                loss as f32
            })
        }
        Mode::Sample => {
            let model = cfg.init_seeded(&plain, a.seed);
            params = model.num_params();
            let mut x = rng.normal(shape, &plain);
            let mut i = 999usize;
            let mut sampler = Ddpm {
                variance: ModelVariance::Large,
                clip: false,
            };
            Box::new(move |rng: &mut Rng, _: &mut Phases| {
                let tr = Transition::new(&schedule, i, i.checked_sub(1));
                let den = Sharded {
                    inner: &model,
                    backend: a.backend,
                    shards: a.shards,
                };
                let eps = den.eps(x.clone(), &vec![i; a.batch]);
                x = sampler.step(&tr, x.clone(), eps, &den, rng).x_prev;
                i = if i == 0 { 999 } else { i - 1 };
                // Reading one value synchronises the device.
                x.clone()
                    .slice([0..1, 0..1, 0..1, 0..1])
                    .into_scalar::<f32>()
            })
        }
    };
    for _ in 0..a.warmup {
        step(&mut rng, &mut phases);
    }
    plain.sync().ok();
    phases.on = a.phases && matches!(a.mode, Mode::Train);
    phases.last = Instant::now();
    let clock = Instant::now();
    let mut last = 0.0;
    for _ in 0..a.steps {
        last = step(&mut rng, &mut phases);
    }
    plain.sync().ok();
    let secs = clock.elapsed().as_secs_f64();
    if !last.is_finite() {
        anyhow::bail!("non-finite output");
    }
    let mut json = serde_json::json!({
        "impl": "tweedie",
        "config": a.checkpoint.as_ref().map_or(tweedie_core::choice::name(&a.config), |c| c.display().to_string()),
        "device": a.backend.name(),
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "batch": a.batch,
        "params": params,
        "ms_per_step": (secs / a.steps as f64 * 1e3 * 1000.0).round() / 1000.0,
        "images_per_s": (a.batch as f64 * a.steps as f64 / secs * 100.0).round() / 100.0,
        "dtype": "fp32",
        "steps": a.steps,
        "warmup": a.warmup,
        "threads": a.backend.cpu_threads(),
        "shards": tweedie_core::parallel::shard_ranges(a.batch, if a.backend.is_cpu() { a.shards } else { 1 }).len(),
        "peak_rss_mib": peak_rss_mib(),
    });
    if phases.on {
        let per_step = |ms: f64| (ms / a.steps as f64 * 1000.0).round() / 1000.0;
        let map: serde_json::Map<String, serde_json::Value> = phases
            .ms
            .iter()
            .map(|(k, v)| (k.to_string(), per_step(*v).into()))
            .collect();
        json["phases_ms"] = map.into();
    }
    println!("{json}");
    Ok(())
}
