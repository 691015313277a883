//! `bench`: times training or sampling steps of the DDPM U-Net and prints one JSON line with the
//! fields of the PyTorch reference (`testdata/ref/ddpm_ref.py`).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use clap::{Parser, ValueEnum};
use tweedie_core::denoiser::Denoiser;
use tweedie_core::device::{BackendKind, DeviceSpec};
use tweedie_core::elbo::ModelVariance;
use tweedie_core::parallel::{ShardTime, Sharded};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};
use tweedie_core::unet::{UNetConfig, UNetPreset};
use tweedie_datasets::ImageSet;
use tweedie_sample::experiment::ExperimentFile;
use tweedie_sample::sampler::{self, Ddpm};
use tweedie_train::config::TrainFile;
use tweedie_train::trainer::{RunOptions, TrainState};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Forward + backward + global-norm clip + Adam on random data (L_simple).
    Train,
    /// One no-grad U-Net forward plus the DDPM ancestral update.
    Sample,
    /// Every distinct convolution of the U-Net at this batch on flex: forward, input gradient and
    /// weight gradient of Tweedie's kernels, and burn-flex's own path, in GFLOP/s and % of the
    /// machine's nominal fp32 peak; one JSON line per shape, then a total.
    Conv,
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
    /// Train mode: data parallelism across these devices, as `train --devices` (nodes included:
    /// `flex,remote:HOST:PORT`); with `--phases` each device's forward and backward time too.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["backend", "shards"])]
    devices: Option<String>,
}

/// Milliseconds spent in each phase of the timed steps, summed; `mark` synchronises the device
/// and charges the time since the previous mark to the named phase.
struct Phases {
    on: bool,
    device: burn::tensor::Device,
    last: Instant,
    ms: Vec<(&'static str, f64)>,
    /// Runs across devices: each device's forward and backward seconds, summed over the steps.
    shards: Vec<ShardTime>,
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

/// One timed step: its output value (to check it is finite), phases marked as it goes; a step
/// that fails (a node lost) ends the benchmark with its error.
type Step = dyn FnMut(&mut Rng, &mut Phases) -> Result<f32>;

fn main() -> ExitCode {
    tweedie_sample::cli::main::<Args>(run)
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
    if matches!(a.mode, Mode::Conv) {
        return conv_bench(&a, &cfg);
    }
    let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000)?;
    let devices = match &a.devices {
        Some(list) if !matches!(a.mode, Mode::Train) => {
            anyhow::bail!("--devices {list}: only --mode train runs across devices")
        }
        Some(list) => DeviceSpec::parse_list(list).context("--devices")?,
        None => Vec::new(),
    };
    // Across devices, the first (local) one holds the model and is the one synchronised.
    let backend = devices
        .first()
        .and_then(|d| d.backend())
        .unwrap_or(a.backend);
    let plain = backend.device()?;
    let mut rng = Rng::new(a.seed);
    let shape = [a.batch, cfg.in_channels, cfg.resolution, cfg.resolution];
    let params;
    let mut phases = Phases {
        on: false,
        device: plain.clone(),
        last: Instant::now(),
        ms: Vec::new(),
        shards: Vec::new(),
    };
    let mut step: Box<Step> = match a.mode {
        Mode::Train => {
            // The library's training step (`TrainState::step`: batching, t and ε, the loss over
            // shards, clipping, Adam) on random images, lr 2e-4, clipping at 1, no EMA.
            let [c, h, w] = [cfg.in_channels, cfg.resolution, cfg.resolution];
            let text = format!(
                "kind = \"diffusion-training\"\nseed = {}\n[data]\ndataset = \"folder\"\n\
                 channels = {c}\nresolution = {h}\n[model]\npreset = \"{}\"\n[train]\n\
                 batch_size = {}\nlr = 2e-4\ngrad_clip = 1.0\nema_decay = 0.0\nshards = {}\n",
                a.seed,
                tweedie_core::choice::name(&a.config),
                a.batch,
                a.shards
            );
            let mut plan = TrainFile::parse(&text)?.resolve("bench")?;
            plan.unet = cfg.clone();
            let n = a.batch.max(64);
            let pixels = (0..n * c * h * w)
                .map(|_| (rng.next_u64() >> 56) as u8)
                .collect();
            // The closure outlives this function's borrows: the images live as long as the
            // process.
            let data: &'static ImageSet = Box::leak(Box::new(ImageSet {
                shape: [c, h, w],
                pixels,
                labels: vec![0; n],
            }));
            let opts = RunOptions {
                backend,
                devices: devices.clone(),
                nodes: Default::default(),
                time_limit: None,
                resume: None,
                restart: false,
                progress: false,
                eval_data: None,
                score_fid: false,
                fid_cache: None,
            };
            let mut state = TrainState::fresh(&plan, data, &opts)?;
            params = state.num_params();
            Box::new(move |_: &mut Rng, ph: &mut Phases| {
                let loss = state.step_marked(&mut |phase| ph.mark(phase))?.loss as f32;
                if ph.on {
                    let times = state.shard_times();
                    ph.shards.resize(times.len(), ShardTime::default());
                    for (sum, t) in ph.shards.iter_mut().zip(times) {
                        sum.forward += t.forward;
                        sum.backward += t.backward;
                    }
                }
                Ok(loss)
            })
        }
        Mode::Conv => unreachable!("handled above"),
        Mode::Sample => {
            // The library's loop over t (`sampler::run`), DDPM with the large variance, on
            // consecutive timesteps from T − 1: `warmup` steps, then `steps` timed ones.
            let model = cfg.init_seeded(&plain, a.seed);
            params = model.num_params();
            let den = Sharded {
                inner: &model,
                backend: a.backend,
                shards: a.shards,
            };
            let mut ddpm = Ddpm {
                variance: ModelVariance::Large,
                clip: false,
            };
            if a.warmup + a.steps >= 1000 {
                anyhow::bail!(
                    "--warmup + --steps must be below 1000 in sample mode (one chain of T = 1000 \
                     timesteps), got {}",
                    a.warmup + a.steps
                );
            }
            let ts: Vec<usize> = (0..=a.warmup + a.steps).map(|k| 999 - k).collect();
            let x = rng.normal_tensor(shape, &plain);
            let (x, _) = sampler::run(
                &den,
                &mut ddpm,
                &schedule,
                &ts[..=a.warmup],
                x,
                &mut rng,
                |_, _| {},
            );
            plain.sync().ok();
            let clock = Instant::now();
            // The last timestep of the slice is the final (noise-free) step: time `steps` full
            // steps by running one more and stopping the clock before it.
            let mut secs = 0.0;
            let (x, _) = sampler::run(
                &den,
                &mut ddpm,
                &schedule,
                &ts[a.warmup..],
                x,
                &mut rng,
                |i, _| {
                    if i + 1 == a.steps {
                        plain.sync().ok();
                        secs = clock.elapsed().as_secs_f64();
                    }
                },
            );
            let last = x.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>();
            return report(&a, params, secs, last, None);
        }
    };
    for _ in 0..a.warmup {
        step(&mut rng, &mut phases)?;
    }
    plain.sync().ok();
    phases.on = a.phases && matches!(a.mode, Mode::Train);
    phases.last = Instant::now();
    let clock = Instant::now();
    let mut last = 0.0;
    for _ in 0..a.steps {
        last = step(&mut rng, &mut phases)?;
    }
    plain.sync().ok();
    let secs = clock.elapsed().as_secs_f64();
    report(&a, params, secs, last, phases.on.then_some(&phases))
}

/// Prints the run's JSON line.
fn report(a: &Args, params: usize, secs: f64, last: f32, phases: Option<&Phases>) -> Result<()> {
    if !last.is_finite() {
        anyhow::bail!("non-finite output");
    }
    let mut json = serde_json::json!({
        "impl": "tweedie",
        "config": a.checkpoint.as_ref().map_or(tweedie_core::choice::name(&a.config), |c| c.display().to_string()),
        "device": a.devices.clone().unwrap_or_else(|| a.backend.name().to_string()),
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
    if let Some(phases) = phases {
        let per_step = |ms: f64| (ms / a.steps as f64 * 1000.0).round() / 1000.0;
        let map: serde_json::Map<String, serde_json::Value> = phases
            .ms
            .iter()
            .map(|(k, v)| (k.to_string(), per_step(*v).into()))
            .collect();
        json["phases_ms"] = map.into();
        if let Some(list) = &a.devices {
            let shards: Vec<_> = list
                .split(',')
                .zip(&phases.shards)
                .map(|(name, t)| {
                    serde_json::json!({
                        "device": name.trim(),
                        "forward_ms": per_step(t.forward * 1e3),
                        "backward_ms": per_step(t.backward * 1e3),
                    })
                })
                .collect();
            json["devices_ms"] = shards.into();
        }
    }
    println!("{json}");
    Ok(())
}

/// The machine's nominal fp32 peak in GFLOP/s, as `scripts/bench-vs-torch.sh` computes it: threads
/// × clock × FLOPs per cycle (two FMA pipes: 64 with AVX-512, 32 with AVX2).
fn nominal_peak_gflops() -> f64 {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let avx512 = info.split_whitespace().any(|w| w == "avx512f");
    let per_cycle = if avx512 { 64.0 } else { 32.0 };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads as f64 * mhz / 1000.0 * per_cycle
}

/// Median seconds of `steps` calls of `f` after `warmup` untimed ones.
fn median_secs(warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let clock = Instant::now();
            f();
            clock.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn conv_bench(a: &Args, cfg: &UNetConfig) -> Result<()> {
    use burn::prelude::{Device, Tensor};
    use tweedie_core::kernel::{self, conv};
    let device = Device::flex();
    let model = cfg.init_seeded(&device, a.seed);
    let mut rng = Rng::new(a.seed);
    let shape = [a.batch, cfg.in_channels, cfg.resolution, cfg.resolution];
    let x = rng.normal_tensor(shape, &device);
    let calls = kernel::record_convolutions(|| {
        model.eps(x, &vec![500; a.batch]);
    });
    let mut shapes: Vec<(conv::Geometry, usize)> = Vec::new();
    for g in calls {
        match shapes.iter_mut().find(|(s, _)| *s == g) {
            Some((_, n)) => *n += 1,
            None => shapes.push((g, 1)),
        }
    }
    let peak = nominal_peak_gflops();
    let config = tweedie_core::choice::name(&a.config);
    // Seconds per U-Net pass spent in convolutions: (ours fwd, ours fwd+dx+dW, burn fwd, burn train).
    let mut total = [0.0f64; 4];
    let mut flops_total = [0.0f64; 2];
    for (g, count) in &shapes {
        let [_, _, ho, wo] = g.output();
        let flops = 2.0 * (g.batch * g.cout * g.cin * g.kh * g.kw * ho * wo) as f64;
        let xs = rng.normals(g.batch * g.cin * g.h * g.w);
        let ws = rng.normals(g.cout * g.cin * g.kh * g.kw);
        let bs = rng.normals(g.cout);
        let dys = rng.normals(g.batch * g.cout * ho * wo);
        let (warm, steps) = (a.warmup, a.steps);
        // Each algorithm that fits, for the forward pass and the input gradient.
        let mut by_algorithm = serde_json::Map::new();
        let mut times = |alg: conv::Algorithm| {
            let fwd = median_secs(warm, steps, || {
                std::hint::black_box(conv::forward_by(g, alg, &xs, &ws, Some(&bs)));
            });
            let dx = median_secs(warm, steps, || {
                std::hint::black_box(conv::backward_by(g, alg, &xs, &ws, &dys, true, false));
            });
            let name = format!("{alg:?}").to_lowercase();
            by_algorithm.insert(
                format!("{name}_forward_gflops"),
                serde_json::json!((flops / fwd / 1e8).round() / 10.0),
            );
            by_algorithm.insert(
                format!("{name}_input_grad_gflops"),
                serde_json::json!((flops / dx / 1e8).round() / 10.0),
            );
            (fwd, dx)
        };
        let chosen = g.algorithm();
        let (fwd, dx) = times(chosen);
        if g.winograd_fits() {
            times(match chosen {
                conv::Algorithm::Winograd => conv::Algorithm::Shifted,
                conv::Algorithm::Shifted => conv::Algorithm::Winograd,
            });
        }
        let dw = median_secs(warm, steps, || {
            std::hint::black_box(conv::backward(g, &xs, &ws, &dys, false, true));
        });
        // burn-flex's own path (the same op with the kernels switched off on this thread).
        kernel::use_own_convolutions(false);
        let ad = device.clone().autodiff();
        let layer = burn::nn::conv::Conv2dConfig::new([g.cin, g.cout], [g.kh, g.kw])
            .with_stride(g.stride)
            .with_padding(burn::nn::PaddingConfig2d::Explicit(
                g.padding[0],
                g.padding[1],
                g.padding[0],
                g.padding[1],
            ));
        let plain_layer = layer.init(&device);
        let train_layer = layer.init(&ad);
        let xt =
            Tensor::<1>::from_floats(xs.as_slice(), &device).reshape([g.batch, g.cin, g.h, g.w]);
        let xa = Tensor::<1>::from_floats(xs.as_slice(), &ad)
            .reshape([g.batch, g.cin, g.h, g.w])
            .require_grad();
        let burn_fwd = median_secs(warm, steps, || {
            let y = kernel::conv2d(&plain_layer, xt.clone());
            std::hint::black_box(tweedie_core::host_values(y.slice([0..1, 0..1, 0..1, 0..1])));
        });
        let burn_train = median_secs(warm, steps, || {
            let grads = kernel::conv2d(&train_layer, xa.clone()).sum().backward();
            std::hint::black_box(
                xa.grad(&grads)
                    .map(|g| g.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>()),
            );
        });
        kernel::use_own_convolutions(true);
        let rate = |secs: f64, ops: f64| {
            let gflops = ops / secs / 1e9;
            serde_json::json!({"gflops": (gflops * 10.0).round() / 10.0, "percent_of_peak": (gflops / peak * 1000.0).round() / 10.0})
        };
        println!(
            "{}",
            serde_json::json!({
                "impl": "tweedie", "config": config, "mode": "conv", "batch": g.batch,
                "input": [g.batch, g.cin, g.h, g.w], "weight": [g.cout, g.cin, g.kh, g.kw],
                "stride": g.stride, "padding": g.padding, "per_forward": count,
                "algorithm": format!("{chosen:?}").to_lowercase(), "algorithms": by_algorithm,
                "forward": rate(fwd, flops), "input_grad": rate(dx, flops), "weight_grad": rate(dw, flops),
                "train": rate(fwd + dx + dw, 3.0 * flops),
                "burn_forward": rate(burn_fwd, flops), "burn_train": rate(burn_train, 3.0 * flops),
            })
        );
        let n = *count as f64;
        total[0] += n * fwd;
        total[1] += n * (fwd + dx + dw);
        total[2] += n * burn_fwd;
        total[3] += n * burn_train;
        flops_total[0] += n * flops;
        flops_total[1] += 3.0 * n * flops;
    }
    let gf = |ops: f64, secs: f64| ((ops / secs / 1e9) * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "tweedie", "config": config, "mode": "conv-total", "batch": a.batch,
            "peak_gflops": (peak * 10.0).round() / 10.0, "shapes": shapes.len(),
            "forward_ms": (total[0] * 1e4).round() / 10.0, "train_ms": (total[1] * 1e4).round() / 10.0,
            "burn_forward_ms": (total[2] * 1e4).round() / 10.0, "burn_train_ms": (total[3] * 1e4).round() / 10.0,
            "forward_gflops": gf(flops_total[0], total[0]), "train_gflops": gf(flops_total[1], total[1]),
            "burn_forward_gflops": gf(flops_total[0], total[2]), "burn_train_gflops": gf(flops_total[1], total[3]),
        })
    );
    Ok(())
}
