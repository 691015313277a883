//! The training loop: a step loop of our own rather than burn-train's `Learner`, because a
//! bit-exact resume needs every random choice to be a function of (seed, step), the EMA must be
//! updated after each optimiser step, and clipping must be global (see ARCHITECTURE.md).

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::{Bytes, FloatDType};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tweedie_core::CoreError;
use tweedie_core::checkpoint::{self, CheckpointMeta, EMA_FILE, FORMAT_VERSION, MODEL_FILE};
use tweedie_core::denoiser::{Conditioned, Denoiser};
use tweedie_core::device::{BackendKind, DeviceSpec, NodeTimeouts};
use tweedie_core::loss::{l_simple, l_weighted, min_snr_weights};
use tweedie_core::parallel;
use tweedie_core::precision::{self, LossScale, Precision};
use tweedie_core::rng::Rng;
use tweedie_core::run_dir::{Claim, RunDir};
use tweedie_core::schedule::NoiseSchedule;
use tweedie_core::unet::UNet;
use tweedie_datasets::{ImageBatcher, ImageSet};

use tweedie_core::elbo::ModelVariance;
use tweedie_sample::amortized::image::Observer;
use tweedie_sample::output::{grid_png, to_u8_nhwc};
use tweedie_sample::sampler::{self, NoiseSource};

use crate::config::{LossWeighting, Plan, TrainFile, TrainSection};
use crate::eval::{EvalOptions, evaluate};
use crate::fid_score::{FidRecord, FidScorer};
use crate::{clip, ema, plot};

pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "trainer.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Trainer state beyond tensors. Every random draw of step n comes from `Rng::derive(seed, n)` and
/// the data order from `Rng::derive(seed ^ DATA_STREAM, epoch)`, so the step is the whole RNG state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: usize,
    pub seed: u64,
    pub backend: String,
    /// Mixed precision: the loss scale to go on with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScale>,
}

const DATA_STREAM: u64 = 0xDA7A_0DE5;
/// Dropout masks of sharded steps: `Rng::derive(seed ^ MASK_STREAM, step << 16 | shard)`.
const MASK_STREAM: u64 = 0x3A5C_D409;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub backend: BackendKind,
    /// Data parallelism across these devices (each step's batch split in contiguous shards, one
    /// per device; the first holds the model, the EMA and the checkpoints). Empty: one device,
    /// `backend`'s.
    pub devices: Vec<DeviceSpec>,
    /// How long a node of `devices` may take to answer when the run connects to it, and in a
    /// step.
    pub nodes: NodeTimeouts,
    /// Stop after the step during which this many seconds of training have passed, as if it
    /// were the run's last (checkpoint, samples, evaluation); `--resume` goes on from there.
    pub time_limit: Option<f64>,
    /// Continue from this checkpoint (run or step directory).
    pub resume: Option<PathBuf>,
    /// Start over in a run directory that holds another run: move that run aside to
    /// `<run_dir>.old-<n>` first (without it, such a directory is refused).
    pub restart: bool,
    /// Show the progress bar.
    pub progress: bool,
    /// Held-out images for `[train] eval_every`.
    pub eval_data: Option<ImageSet>,
    /// Score `[train] fid_every` (off: `--no-eval`).
    pub score_fid: bool,
    /// Where Inception's reference statistics are cached (`None`: computed each run).
    pub fid_cache: Option<PathBuf>,
}

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
    /// Mixed precision: the gradients overflowed and the update was skipped (not logged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The loss of every step run in this invocation, in order (for tests and summaries).
    pub losses: Vec<f64>,
    pub first_step: usize,
    pub last_step: usize,
    pub seconds: f64,
    pub checkpoint: PathBuf,
    pub model: UNet,
    /// Mixed precision: the loss scale at the end (and the steps skipped for overflow).
    pub loss_scale: Option<LossScale>,
}

/// The learning rate at `step` (0-based): linear warm-up to `lr` over `warmup` steps.
pub fn lr_at(lr: f64, warmup: usize, step: usize) -> f64 {
    if warmup == 0 {
        lr
    } else {
        lr * ((step + 1) as f64 / warmup as f64).min(1.0)
    }
}

/// The dataset indices of step `step`'s batch: epochs are independent permutations.
struct DataOrder {
    seed: u64,
    n: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl DataOrder {
    fn index(&mut self, k: usize) -> usize {
        let epoch = k / self.n;
        if self.epoch.as_ref().map(|e| e.0) != Some(epoch) {
            let perm = Rng::derive(self.seed ^ DATA_STREAM, epoch as u64).permutation(self.n);
            self.epoch = Some((epoch, perm));
        }
        self.epoch.as_ref().expect("set above").1[k % self.n]
    }
}

/// Trains `plan` on `data` (already loaded): [`Trainer::start`], then [`Trainer::step`] and
/// [`Trainer::periodic`] until the run's last step, then [`Trainer::finish`]. The experiment
/// file's text is copied into every checkpoint so that `--resume` needs nothing else.
pub fn train(plan: &Plan, data: &ImageSet, opts: &RunOptions) -> Result<Report> {
    let mut t = Trainer::start(plan, data, opts)?;
    while !t.is_done() {
        let log = t.step()?;
        t.periodic(&log)?;
    }
    Ok(t.finish())
}

/// What a training step needs and changes: the plan, the data and its order, the device(s), the
/// model, its optimiser and EMA, the step count and the loss scale. No files, bars or clocks:
/// [`Trainer`] adds those, and `bench` times [`TrainState::step`] on its own.
pub struct TrainState<'a> {
    pub plan: Plan,
    data: &'a ImageSet,
    backend: BackendKind,
    shards: usize,
    schedule: NoiseSchedule,
    device: Device,
    /// The autodiff devices of a multi-device run (the first is `device`); empty otherwise.
    devices: Vec<Device>,
    /// Their names as given (`flex`, `remote:10.0.0.2:7000`), for errors.
    device_names: Vec<String>,
    /// How long a step across `devices` may take before the shards that have not answered are
    /// given up on (without nodes: for ever).
    step_timeout: std::time::Duration,
    /// The last step's time on each of `devices`.
    shard_times: Vec<parallel::ShardTime>,
    /// Conditional runs: the observation model the training pairs are drawn from.
    observer: Option<Observer>,
    model: UNet,
    optim: ModuleOptimizer,
    ema: Option<UNet>,
    order: DataOrder,
    /// Steps taken (the next step's index).
    step: usize,
    /// Mixed precision's dynamic loss scale (`None` in f32).
    loss_scale: Option<LossScale>,
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Mixed precision: the gradients overflowed and the update was skipped.
    pub skipped: bool,
}

/// A training run in progress: its [`TrainState`] and what the periodic actions write (metrics,
/// curve, checkpoints, the progress bar), with the run directory's lock held until it is dropped.
pub struct Trainer<'a> {
    state: TrainState<'a>,
    opts: &'a RunOptions,
    first_step: usize,
    metrics: std::fs::File,
    metrics_path: PathBuf,
    /// (step, loss) of the logged steps, for `loss.png`.
    curve: Vec<(f64, f64)>,
    bars: MultiProgress,
    bar: ProgressBar,
    clock: Instant,
    losses: Vec<f64>,
    smooth: Option<f64>,
    last_checkpoint: PathBuf,
    /// `time_limit` was reached at the last step (set by [`Trainer::periodic`]).
    time_up: bool,
    /// `[train] fid_every`'s network and reference, and the (step, FID) points for `fid.png`.
    fid: Option<(FidScorer, Vec<(f64, f64)>)>,
    _run_dir: RunDir,
}

impl<'a> TrainState<'a> {
    /// A fresh state for `plan` on `data` (checked against the model's image shape), on
    /// `opts`' backend or devices: the model initialised from the plan's seed, Adam, the EMA.
    pub fn fresh(plan: &Plan, data: &'a ImageSet, opts: &RunOptions) -> Result<Self> {
        let plan = plan.with_data_moments(data);
        let tc = &plan.file.train;
        let schedule = plan.schedule.build()?;
        let want = [
            plan.unet.in_channels,
            plan.unet.resolution,
            plan.unet.resolution,
        ];
        if data.shape != want {
            bail!(
                "dataset images are {:?} but the model expects {}×{}×{}",
                data.shape,
                want[0],
                want[1],
                want[2]
            );
        }
        if data.is_empty() {
            bail!("the dataset is empty");
        }
        let (device, devices) = training_devices(opts, tc)?;
        let observer = match &plan.file.condition {
            Some(c) => Some(c.observer(data.shape, &device).context("[condition]")?),
            None => None,
        };
        let model = plan.unet.init_seeded(&device, plan.file.seed);
        let optim = AdamConfig::new().with_epsilon(tc.adam_eps as f32).init();
        let ema = (tc.ema_decay > 0.0).then(|| model.valid());
        let loss_scale = initial_loss_scale(opts, tc)?;
        let order = DataOrder {
            seed: plan.file.seed,
            n: data.len(),
            epoch: None,
        };
        Ok(Self {
            shards: tc.shards,
            plan,
            data,
            backend: opts.backend,
            schedule,
            device,
            devices,
            device_names: opts.devices.iter().map(|d| d.to_string()).collect(),
            // Local devices do not hang up; a run without nodes waits for its steps.
            step_timeout: if opts
                .devices
                .iter()
                .any(|d| matches!(d, DeviceSpec::Remote(_)))
            {
                opts.nodes.step
            } else {
                std::time::Duration::MAX
            },
            shard_times: Vec::new(),
            observer,
            model,
            optim,
            ema,
            order,
            step: 0,
            loss_scale,
        })
    }

    /// The model's parameter count.
    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    /// One optimiser step: the step's batch, t and ε from `Rng::derive(seed, step)`, the loss and
    /// its gradients (over shards when asked), global-norm clipping, Adam, the EMA update.
    /// Stops naming the step when the loss is not finite.
    pub fn step(&mut self) -> Result<StepOutcome> {
        self.step_marked(&mut |_| {})
    }

    /// Where the last step's time went on each device of a run across devices (`--devices`),
    /// in their order; empty otherwise.
    pub fn shard_times(&self) -> &[parallel::ShardTime] {
        &self.shard_times
    }

    /// [`TrainState::step`], calling `mark` after each phase (`data`, `backward`, `clip`,
    /// `optim`) for `bench --phases`.
    pub fn step_marked(&mut self, mark: &mut dyn FnMut(&'static str)) -> Result<StepOutcome> {
        let step = self.step;
        let (f, tc) = (&self.plan.file, &self.plan.file.train);
        let big_t = self.schedule.len();
        let b = tc.batch_size;
        let [c, h, w] = self.data.shape;
        let mut rng = Rng::derive(f.seed, step as u64);
        let items: Vec<_> = (0..b)
            .map(|i| {
                let idx = self.order.index(step * b + i);
                tweedie_datasets::ImageItem {
                    shape: self.data.shape,
                    pixels: self.data.image(idx).to_vec(),
                    label: self.data.labels[idx],
                }
            })
            .collect();
        let flips: Vec<bool> = (0..b)
            .map(|_| f.data.hflip && rng.uniform() < 0.5)
            .collect();
        let x0 = ImageBatcher
            .batch_with_flips(items, &flips, &self.device)
            .images;
        let t: Vec<usize> = (0..b).map(|_| rng.below(big_t)).collect();
        let eps = rng.normal_tensor([b, c, h, w], &self.device);
        // Conditional runs: y ~ p(y | x₀) for each image, as the network's extra channels.
        let cond = self
            .observer
            .as_ref()
            .map(|o| o.condition(o.observe(x0.clone(), &mut rng)));
        mark("data");
        // Per-sample loss weights (None: L_simple).
        let weights: Option<Vec<f64>> = match tc.loss_weighting {
            LossWeighting::Simple => None,
            LossWeighting::MinSnr => Some(min_snr_weights(&self.schedule, &t, tc.snr_gamma)),
            LossWeighting::Precond => {
                let p = self
                    .model
                    .precond()
                    .context("loss_weighting = \"precond\" on a network without preconditioning")?;
                Some(t.iter().map(|&i| p.c_out[i].powi(-2)).collect())
            }
        };
        let schedule = self.schedule.clone();
        let scale = self.loss_scale.as_ref().map(|s| s.scale);
        // Shard j's part of the batch, on its model's device (the whole batch for one shard);
        // under mixed precision through an f16 copy of the weights, the loss times the scale.
        // It owns what it reads: a shard on a node that hangs outlives the step.
        let shard_loss = Arc::new(move |m: &UNet, r: Range<usize>| {
            let half;
            let m = match scale {
                Some(_) => {
                    half = precision::half_copy(m, FloatDType::F16);
                    &half
                }
                None => m,
            };
            let on = m
                .devices()
                .into_iter()
                .next()
                .expect("a model with parameters");
            let (x0, eps) = (
                parallel::rows_on(&x0, &r, &on),
                parallel::rows_on(&eps, &r, &on),
            );
            let conditioned;
            let model: &dyn Denoiser = match &cond {
                Some(c) => {
                    conditioned = Conditioned {
                        net: m,
                        cond: parallel::rows_on(c, &r, &on),
                    };
                    &conditioned
                }
                None => m,
            };
            let l = match &weights {
                None => l_simple(model, &schedule, x0, &t[r], eps),
                Some(w) => l_weighted(model, &schedule, x0, &t[r.clone()], eps, &w[r]),
            };
            match scale {
                Some(s) => l.mul_scalar(s),
                None => l,
            }
        });
        // Dropout draws from the device RNG: reseed it per step so a resumed run draws the same
        // masks, and hold the lock until the passes are done. Several shards at once (cores or
        // devices) draw from streams of their own, functions of (seed, step, shard), instead.
        let with_stream = {
            let (seed, shard_loss) = (f.seed, Arc::clone(&shard_loss));
            move |m: &UNet, j: usize, r: Range<usize>| {
                let stream = Rng::derive(seed ^ MASK_STREAM, ((step as u64) << 16) | j as u64);
                tweedie_core::rng::with_mask_stream(stream, || shard_loss(m, r))
            }
        };
        let (loss_value, grads) = {
            let _guard = tweedie_core::rng::device_rng_lock();
            self.device
                .seed(f.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let sharded = self.shards > 1 && self.backend.is_cpu();
            if !self.devices.is_empty() {
                let timeout = self.step_timeout;
                let across = parallel::loss_and_grads_across(
                    &self.devices,
                    &self.model,
                    b,
                    timeout,
                    with_stream,
                )
                .map_err(|f| tweedie_core::CoreError::Node {
                    node: f
                        .shards
                        .iter()
                        .map(|&j| self.device_names[j].as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    why: format!("stopped answering in step {} ({})", step + 1, f.why),
                })?;
                self.shard_times = across.times;
                (across.loss, across.grads)
            } else if sharded {
                parallel::loss_and_grads(self.backend, self.shards, &self.model, b, with_stream)
            } else {
                parallel::loss_and_grads(self.backend, 1, &self.model, b, |m, _, r| {
                    shard_loss(m, r)
                })
            }
        };
        mark("backward");
        self.update(loss_value, grads, mark)
    }

    /// The second half of [`Trainer::step`]: from the step's loss and gradients to the new
    /// weights, EMA and progress. Under mixed precision the gradients are unscaled first, and a
    /// step whose loss or gradients are not finite is skipped (the scale halves).
    fn update(
        &mut self,
        mut loss_value: f64,
        mut grads: GradientsParams,
        mark: &mut dyn FnMut(&'static str),
    ) -> Result<StepOutcome> {
        let (step, tc) = (self.step, &self.plan.file.train);
        if let Some(s) = &self.loss_scale {
            loss_value /= s.scale;
            clip::scale(&self.model, &mut grads, 1.0 / s.scale);
        } else if !loss_value.is_finite() {
            bail!(
                "loss became {loss_value} at step {}; stopping (the last good checkpoint in {} is intact)",
                step + 1,
                self.plan.run_dir.display()
            );
        }
        let grad_norm = clip::clip_global_norm(&self.model, &mut grads, tc.grad_clip);
        mark("clip");
        let lr = lr_at(tc.lr, tc.warmup_steps, step);
        if let Some(s) = &mut self.loss_scale
            && !s.update(loss_value.is_finite() && grad_norm.is_finite())
        {
            if s.exhausted() {
                bail!(
                    "step {}: f16 overflows even at loss scale {:e}: the forward pass leaves f16's \
                     range; train with precision = \"f32\" (the last good checkpoint in {} is intact)",
                    step + 1,
                    s.scale * 2.0,
                    self.plan.run_dir.display()
                );
            }
            self.step += 1;
            return Ok(StepOutcome {
                loss: loss_value,
                lr,
                grad_norm,
                skipped: true,
            });
        }
        self.model = self.optim.step(lr, self.model.clone(), grads);
        if let Some(e) = self.ema.take() {
            self.ema = Some(ema::update(
                e,
                &self.model.valid(),
                ema::decay_at(tc.ema_decay, tc.ema_warmup, step),
            ));
        }
        mark("optim");
        self.step += 1;
        Ok(StepOutcome {
            loss: loss_value,
            lr,
            grad_norm,
            skipped: false,
        })
    }
}

impl<'a> Trainer<'a> {
    /// Starts a run, or resumes one (`opts.resume`): claims the run directory, builds or loads
    /// the model, optimiser and EMA, opens the metrics log and the progress bar, and announces
    /// the cost of any bound evaluations.
    pub fn start(plan: &Plan, data: &'a ImageSet, opts: &'a RunOptions) -> Result<Self> {
        let mut state = TrainState::fresh(plan, data, opts)?;
        let plan = &state.plan;
        let tc = &plan.file.train;
        // Before the run directory is claimed: a missing network stops the run having changed
        // nothing.
        let scorer = if tc.fid_every > 0 && opts.score_fid {
            let plain = state.device.clone().without_autodiff();
            Some(FidScorer::new(
                plan,
                data,
                opts.fid_cache.clone(),
                &plain,
                !opts.progress,
            )?)
        } else {
            None
        };
        let run_dir = claim_run_dir(plan, opts)?;
        if let Some(old) = run_dir.moved_to() {
            eprintln!(
                "moved the previous run in {} to {}",
                plan.run_dir.display(),
                old.display()
            );
        }
        for p in run_dir.removed() {
            eprintln!("removed {}, left by an earlier failed write", p.display());
        }
        if let Some(resume) = &opts.resume {
            let steps = tc.steps;
            let r = load_resumed(plan, resume, state.model, state.ema, state.optim)?;
            (state.model, state.ema, state.optim, state.step) = (r.model, r.ema, r.optim, r.step);
            if state.loss_scale.is_some() {
                // A run that was f32 until now starts at the initial scale.
                state.loss_scale = r.loss_scale.or(state.loss_scale);
            }
            let start = state.step;
            if start >= steps {
                bail!(
                    "{}: already at step {start}, and the run has {steps} steps (raise --steps)",
                    r.dir.display(),
                );
            }
            // Continuing from an older step in the same directory would write a second history
            // over the later checkpoints (and keep_last would then delete the new ones).
            if let Some(&later) = run_dir.steps()?.iter().find(|&&s| s > start) {
                bail!(
                    "{} holds checkpoints after step {start} ({}): resume from the run directory \
                     itself (its newest step), or continue this step elsewhere with --run-dir NEW",
                    state.plan.run_dir.display(),
                    checkpoint::step_dir_name(later)
                );
            }
        }
        let start = state.step;
        let metrics_path = state.plan.run_dir.join(METRICS_FILE);
        let (metrics, curve) = open_metrics(&metrics_path, start)?;

        let bars = if opts.progress {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        let bar = bars.add(ProgressBar::new(state.plan.file.train.steps as u64));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {msg} {per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start as u64);
        let fid = scorer.map(|s| (s, fid_points(&metrics_path)));
        let t = Self {
            state,
            opts,
            first_step: start,
            metrics,
            metrics_path,
            curve,
            bars,
            bar,
            clock: Instant::now(),
            losses: Vec::new(),
            smooth: None,
            last_checkpoint: PathBuf::new(),
            time_up: false,
            fid,
            _run_dir: run_dir,
        };
        t.announce_evaluations();
        t.announce_fid();
        // The clock starts when the steps do (as the log's `seconds` always has).
        Ok(Self {
            clock: Instant::now(),
            ..t
        })
    }

    /// Whether the run has taken all its steps, or used its time (`time_limit`).
    pub fn is_done(&self) -> bool {
        self.state.step >= self.state.plan.file.train.steps || self.time_up
    }

    /// One optimiser step ([`TrainState::step`]) and its progress; stops naming the step when
    /// the loss is not finite.
    pub fn step(&mut self) -> Result<StepLog> {
        let out = match self.state.step() {
            Ok(out) => out,
            Err(e) => {
                self.bar.abandon();
                let last = &self.last_checkpoint;
                let node_lost = matches!(
                    e.downcast_ref::<tweedie_core::CoreError>(),
                    Some(tweedie_core::CoreError::Node { .. })
                );
                if !node_lost || last.as_os_str().is_empty() {
                    return Err(e);
                }
                return Err(e.context(format!(
                    "stopped; the last checkpoint, {}, is intact (--resume it, with other \
                     --devices if a node is gone)",
                    last.display()
                )));
            }
        };
        if !out.skipped {
            self.losses.push(out.loss);
            let smooth = self.smooth.map_or(out.loss, |s| 0.95 * s + 0.05 * out.loss);
            self.smooth = Some(smooth);
            self.bar.set_message(format!("loss {smooth:.4}"));
        }
        self.bar.set_position(self.state.step as u64);
        Ok(StepLog {
            step: self.state.step,
            loss: out.loss,
            lr: out.lr,
            grad_norm: out.grad_norm,
            seconds: self.clock.elapsed().as_secs_f64(),
            skipped: out.skipped,
        })
    }

    /// What follows a step when it is due: a metrics line (`log_every`), a sample grid
    /// (`sample_every`), the bound on test images (`eval_every`), a checkpoint and the loss curve
    /// (`checkpoint_every`); each also at the run's last step.
    pub fn periodic(&mut self, log: &StepLog) -> Result<()> {
        let tc = self.state.plan.file.train.clone();
        let done = log.step;
        // Decided once here, so the step that ends a timed run is also the one that saves it.
        self.time_up = self
            .opts
            .time_limit
            .is_some_and(|limit| self.clock.elapsed().as_secs_f64() >= limit);
        let last = done == tc.steps || self.time_up;
        let every = |n: usize| n > 0 && done.is_multiple_of(n);
        if (done.is_multiple_of(tc.log_every.max(1)) || last) && !log.skipped {
            writeln!(self.metrics, "{}", serde_json::to_string(log)?)
                .with_context(|| self.metrics_path.display().to_string())?;
            self.metrics.flush().ok();
            self.curve.push((done as f64, log.loss));
        }
        if every(tc.sample_every) || (tc.sample_every > 0 && last) {
            write_sample_grid(
                &self.state.plan,
                &self.state.schedule,
                &self.eval_model(),
                done,
            )?;
        }
        if self.opts.eval_data.is_some() && (every(tc.eval_every) || (tc.eval_every > 0 && last)) {
            self.evaluate(done)?;
        }
        if self.fid.is_some() && (every(tc.fid_every) || (tc.fid_every > 0 && last)) {
            self.score_fid(done)?;
        }
        if every(tc.checkpoint_every) || last {
            self.last_checkpoint = save(
                &self.state.plan,
                self.opts,
                done,
                (
                    &self.state.model,
                    self.state.ema.as_ref(),
                    &self.state.optim,
                ),
                self.state.loss_scale.as_ref(),
            )?;
            let title = format!("{} — L_simple", self.state.plan.run_dir.display());
            let png = plot::loss_curve_png(&self.curve, &title)?;
            checkpoint::write_atomic(&self.state.plan.run_dir.join("loss.png"), &png)?;
        }
        Ok(())
    }

    /// Ends the run: what it did and the trained model.
    pub fn finish(self) -> Report {
        self.bar.finish_and_clear();
        Report {
            losses: self.losses,
            first_step: self.first_step,
            last_step: self.state.step,
            seconds: self.clock.elapsed().as_secs_f64(),
            checkpoint: self.last_checkpoint,
            model: self.state.model.valid(),
            loss_scale: self.state.loss_scale,
        }
    }

    /// The weights that samples and evaluations use: the EMA, else the raw weights.
    fn eval_model(&self) -> UNet {
        self.state
            .ema
            .clone()
            .unwrap_or_else(|| self.state.model.valid())
    }

    /// L_simple and the bound on test images, with a progress bar under the training bar,
    /// logged in `metrics.jsonl`.
    fn evaluate(&mut self, done: usize) -> Result<()> {
        let Some(test) = self.opts.eval_data.as_ref() else {
            return Ok(());
        };
        let eo = eval_options(&self.state.plan, test);
        let big_t = self.state.schedule.len();
        let eval_bar = self.bars.add(ProgressBar::new(
            (big_t * eo.n.div_ceil(eo.batch_size)) as u64,
        ));
        eval_bar.set_style(
            ProgressStyle::with_template(&format!(
                "  bound at step {done} [{{bar:30}}] {{pos}}/{{len}} network calls ETA {{eta}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        let r = evaluate(
            &self.eval_model(),
            &self.state.schedule,
            test,
            &self.state.device.clone().without_autodiff(),
            &eo,
            || eval_bar.inc(1),
        );
        eval_bar.finish_and_clear();
        self.bars.remove(&eval_bar);
        let line = serde_json::json!({ "step": done, "eval": r });
        writeln!(self.metrics, "{line}")
            .with_context(|| self.metrics_path.display().to_string())?;
        self.bar.println(format!(
            "step {done}: test L_simple {:.4}, {:.3} bits/dim ({} images)",
            r.l_simple, r.bpd, r.images
        ));
        Ok(())
    }

    /// `[train] fid_every`: `fid_samples` samples of the grid's sampler (EMA weights, a fixed
    /// seed, so scores along the run differ by the model alone), scored, logged in
    /// `metrics.jsonl` and drawn in `fid.png`.
    fn score_fid(&mut self, done: usize) -> Result<()> {
        let clock = Instant::now();
        let tc = self.state.plan.file.train.clone();
        let bar = self.bars.add(ProgressBar::new(tc.fid_samples as u64));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "  FID samples at step {done} [{{bar:30}}] {{pos}}/{{len}} ETA {{eta}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        let (images, shape) = draw_samples(
            &self.state.plan,
            &self.state.schedule,
            &self.eval_model(),
            tc.fid_samples,
            self.state.plan.file.seed ^ FID_STREAM,
            |k| bar.inc(k as u64),
        )?;
        bar.finish_and_clear();
        self.bars.remove(&bar);
        let (scorer, points) = self.fid.as_mut().expect("scored only with a scorer");
        let mut record = scorer.score(&images, shape, self.state.plan.file.seed);
        record.seconds = clock.elapsed().as_secs_f64();
        let line = serde_json::json!({ "step": done, "fid": record });
        writeln!(self.metrics, "{line}")
            .with_context(|| self.metrics_path.display().to_string())?;
        self.metrics.flush().ok();
        points.push((done as f64, record.fid));
        let kid = record
            .kid
            .map_or(String::new(), |k| format!(", KID {k:.4}"));
        self.bar.println(format!(
            "step {done}: {} {:.2}{kid} ({} samples against {} training images, {})",
            if record.network == "inception" {
                "FID"
            } else {
                "classifier-FID"
            },
            record.fid,
            record.samples,
            record.reference_images,
            human_seconds(record.seconds)
        ));
        let png = plot::fid_curve_png(
            points,
            &format!("{} — {}", self.state.plan.run_dir.display(), scorer.name()),
        )?;
        checkpoint::write_atomic(&self.state.plan.run_dir.join("fid.png"), &png)?;
        Ok(())
    }

    /// Says up front what `[train] fid_every` will cost (one timed network call).
    fn announce_fid(&self) {
        let Some((scorer, _)) = &self.fid else {
            return;
        };
        let tc = &self.state.plan.file.train;
        let scores = (self.state.step + 1..=tc.steps)
            .filter(|d| d % tc.fid_every == 0 || *d == tc.steps)
            .count();
        let batch = tc.fid_samples.min(FID_BATCH);
        let one = time_one_call(
            &self.state.model.valid(),
            &self.state.device.clone().without_autodiff(),
            batch,
            self.state.data.shape,
        );
        let each = one * (tc.sample_steps * tc.fid_samples.div_ceil(batch)) as f64
            + scorer.cost(tc.fid_samples);
        self.bars.suspend(|| {
            eprintln!(
                "{}: {scores} time(s) (every {} steps and at the end), {} samples in {} steps of \
                 {} each time: about {} each (--no-eval skips it)",
                scorer.name(),
                tc.fid_every,
                tc.fid_samples,
                tc.sample_steps,
                tweedie_core::choice::name(&tc.sample_sampler),
                human_seconds(each)
            )
        });
    }

    /// Says up front what the bound evaluations will cost (one timed network call).
    fn announce_evaluations(&self) {
        let Some(test) = &self.opts.eval_data else {
            return;
        };
        let tc = &self.state.plan.file.train;
        let plain = self.state.device.clone().without_autodiff();
        let eo = eval_options(&self.state.plan, test);
        let evals = (self.state.step + 1..=tc.steps)
            .filter(|d| d % tc.eval_every.max(1) == 0 || *d == tc.steps)
            .count();
        let calls = self.state.schedule.len() * eo.n.div_ceil(eo.batch_size);
        let one = time_one_call(
            &self.state.model.valid(),
            &plain,
            eo.batch_size,
            self.state.data.shape,
        );
        self.bars.suspend(|| {
            eprintln!(
                "evaluation of the bound: {evals} time(s) (every {} steps and at the end), {} test \
                 images, {calls} network calls of {} images each time: about {} each by one timed \
                 call (--no-eval skips it)",
                tc.eval_every,
                eo.n,
                eo.batch_size,
                human_seconds(calls as f64 * one)
            )
        });
    }
}

/// A checkpoint loaded to resume from.
struct Resumed {
    dir: PathBuf,
    model: UNet,
    ema: Option<UNet>,
    optim: ModuleOptimizer,
    step: usize,
    loss_scale: Option<LossScale>,
}

/// Loads the checkpoint `resume` names into the freshly built `model`, `ema` and `optim`,
/// after checking it is of the same model and schedule as `plan`.
fn load_resumed(
    plan: &Plan,
    resume: &Path,
    model: UNet,
    ema: Option<UNet>,
    optim: ModuleOptimizer,
) -> Result<Resumed> {
    let dir = checkpoint::resolve(resume)?;
    let meta = checkpoint::read_meta(&dir)?;
    if meta.unet != plan.unet {
        bail!(
            "{}: the checkpoint's model {:?} differs from the config's {:?}",
            dir.display(),
            meta.unet,
            plan.unet
        );
    }
    if meta.schedule != plan.schedule {
        bail!(
            "{}: the checkpoint's schedule {:?} differs from the config's {:?}",
            dir.display(),
            meta.schedule,
            plan.schedule
        );
    }
    let observation = plan.file.condition.as_ref().map(|c| c.record());
    if meta.observation != observation {
        let name = |o: &Option<serde_json::Value>| {
            o.as_ref()
                .map_or("no observation (an unconditional model)".into(), |v| {
                    v.to_string()
                })
        };
        bail!(
            "{}: the checkpoint was trained for {}, the config's [condition] says {}",
            dir.display(),
            name(&meta.observation),
            name(&observation)
        );
    }
    let state: TrainerState = read_json(&dir.join(STATE_FILE))?;
    let model = checkpoint::load_module(model, &dir.join(MODEL_FILE))?;
    let ema = match ema {
        Some(e) => Some(checkpoint::load_module(e, &dir.join(EMA_FILE))?),
        None => None,
    };
    let path = dir.join(OPTIM_FILE);
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    let optim = optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| anyhow::anyhow!("{}: damaged optimizer state: {e}", path.display()))?;
    Ok(Resumed {
        dir,
        model,
        ema,
        optim,
        step: state.step,
        loss_scale: state.loss_scale,
    })
}

/// The autodiff device that holds the model, and the devices a step's batch is split across
/// (empty for one device), from `opts.devices` or else `opts.backend`.
fn training_devices(opts: &RunOptions, tc: &TrainSection) -> Result<(Device, Vec<Device>)> {
    if let Some(DeviceSpec::Remote(node)) = opts.devices.first() {
        bail!(
            "--devices: the first device holds the model, the EMA and the checkpoints, so it must \
             be local (flex, wgpu, …), not {node}"
        );
    }
    let devices = opts
        .devices
        .iter()
        .map(|d| Ok(d.device_within(opts.nodes.connect)?.autodiff()))
        .collect::<Result<Vec<_>>>()?;
    if devices.len() > 1 && tc.shards > 1 {
        bail!(
            "[train] shards = {} with {} devices: split a batch across devices or across one \
             CPU's cores, not both",
            tc.shards,
            devices.len()
        );
    }
    if devices.len() > tc.batch_size {
        bail!(
            "{} devices for batches of {}: every device needs at least one image",
            devices.len(),
            tc.batch_size
        );
    }
    match devices.first() {
        Some(d) if devices.len() > 1 => Ok((d.clone(), devices)),
        Some(d) => Ok((d.clone(), Vec::new())),
        None => Ok((opts.backend.device()?.autodiff(), Vec::new())),
    }
}

/// Mixed precision's loss scale at the start of a fresh run (`None` in f32); refused on the CPU.
fn initial_loss_scale(opts: &RunOptions, tc: &TrainSection) -> Result<Option<LossScale>> {
    let on_cpu = opts.backend.is_cpu()
        || opts
            .devices
            .iter()
            .any(|d| d.backend().is_some_and(|b| b.is_cpu()));
    match tc.precision {
        Precision::F32 => Ok(None),
        Precision::MixedF16 if on_cpu => bail!(
            "[train] precision = \"mixed-f16\" is for the GPU backend (wgpu): the CPU backends \
             compute f16 no faster than f32"
        ),
        Precision::MixedF16 => Ok(Some(LossScale::new(tc.loss_scale))),
    }
}

/// Claims the run directory (see `tweedie_core::run_dir`): a resume continues its own directory;
/// any other run needs an empty one, or `restart` to move the old run aside.
fn claim_run_dir(plan: &Plan, opts: &RunOptions) -> Result<RunDir> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let resumes_here = match &opts.resume {
        Some(r) => checkpoint::resolve(r)?
            .parent()
            .is_some_and(|p| same(p, &plan.run_dir)),
        None => false,
    };
    if resumes_here && opts.restart {
        bail!(
            "--restart would move away the run that --resume continues ({})",
            plan.run_dir.display()
        );
    }
    let claim = match (resumes_here, opts.restart) {
        (true, _) => Claim::Resume,
        (false, true) => Claim::Restart,
        (false, false) => Claim::Fresh,
    };
    RunDir::claim(&plan.run_dir, claim).map_err(|e| match e {
        CoreError::RunExists { path } => anyhow::anyhow!(
            "{0} already holds a run: continue it with --resume {0}, or start over with \
             --restart (moves it to {0}.old-N)",
            path.display()
        ),
        e => e.into(),
    })
}

/// The test-split evaluation of `[train] eval_every`.
fn eval_options(plan: &Plan, test: &ImageSet) -> EvalOptions {
    let n = plan.file.train.eval_images.min(test.len()).max(1);
    EvalOptions {
        n,
        batch_size: n.clamp(1, 100),
        seed: plan.file.seed,
        variance: ModelVariance::Small,
        clip: true,
    }
}

/// Seconds of one network call on a batch of `b` images (after a warm-up call).
fn time_one_call(model: &UNet, device: &Device, b: usize, [c, h, w]: [usize; 3]) -> f64 {
    use tweedie_core::denoiser::Denoiser;
    let x = Tensor::<4>::zeros([b, c, h, w], device);
    let t = vec![0; b];
    let _ = tweedie_core::host_values(model.eps(x.clone(), &t));
    let clock = Instant::now();
    let _ = tweedie_core::host_values(model.eps(x, &t));
    clock.elapsed().as_secs_f64()
}

/// "12 s", "3.4 min", "2.1 h".
pub fn human_seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn save(
    plan: &Plan,
    opts: &RunOptions,
    step: usize,
    (model, ema_model, optim): (&UNet, Option<&UNet>, &ModuleOptimizer),
    loss_scale: Option<&LossScale>,
) -> Result<PathBuf> {
    let meta = CheckpointMeta {
        format: FORMAT_VERSION,
        step,
        unet: plan.unet.clone(),
        schedule: plan.schedule.clone(),
        dataset: plan.dataset.name().to_string(),
        sampling: None,
        observation: plan.file.condition.as_ref().map(|c| c.record()),
    };
    let state = TrainerState {
        step,
        seed: plan.file.seed,
        backend: opts.backend.name().into(),
        loss_scale: loss_scale.cloned(),
    };
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (checkpoint::META_FILE, serde_json::to_vec_pretty(&meta)?),
        (STATE_FILE, serde_json::to_vec_pretty(&state)?),
        (CONFIG_FILE, effective_config(&plan.file)?.into_bytes()),
        (MODEL_FILE, checkpoint::module_bytes(model.clone())?),
        (
            OPTIM_FILE,
            optim
                .into_bytes()
                .map_err(|e| anyhow::anyhow!("serialising the optimizer: {e}"))?
                .to_vec(),
        ),
    ];
    if let Some(e) = ema_model {
        files.push((EMA_FILE, checkpoint::module_bytes(e.clone())?));
    }
    Ok(checkpoint::write_checkpoint(
        &plan.run_dir,
        step,
        &files,
        plan.file.train.keep_last,
    )?)
}

/// The experiment as run (file plus command-line overrides), as TOML.
pub fn effective_config(file: &TrainFile) -> Result<String> {
    Ok(toml::to_string_pretty(file)?)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: damaged", path.display()))
}

/// Redraws `run_dir/loss.png` (and `fid.png`, when FID was scored) from `run_dir/metrics.jsonl`;
/// returns the loss curve's path.
pub fn replot(run_dir: &Path) -> Result<PathBuf> {
    let path = run_dir.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let curve: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepLog>(l).ok())
        .map(|s| (s.step as f64, s.loss))
        .collect();
    if curve.is_empty() {
        bail!("{}: no loss records", path.display());
    }
    let png = plot::loss_curve_png(&curve, &format!("{} — L_simple", run_dir.display()))?;
    let out = run_dir.join("loss.png");
    checkpoint::write_atomic(&out, &png)?;
    let fid = fid_points(&path);
    if !fid.is_empty() {
        let png = plot::fid_curve_png(&fid, &format!("{} — FID", run_dir.display()))?;
        checkpoint::write_atomic(&run_dir.join("fid.png"), &png)?;
    }
    Ok(out)
}

/// The grid of `sample_n` samples by the configured sampler (fixed seed: grids are comparable
/// across the run).
fn write_sample_grid(
    plan: &Plan,
    schedule: &tweedie_core::schedule::NoiseSchedule,
    model: &UNet,
    step: usize,
) -> Result<()> {
    let tc = &plan.file.train;
    let (bytes, shape) = draw_samples(
        plan,
        schedule,
        model,
        tc.sample_n,
        plan.file.seed ^ 0x5A3F,
        |_| {},
    )?;
    let dir = plan.run_dir.join("samples");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let cols = (tc.sample_n as f64).sqrt().ceil() as usize;
    checkpoint::write_atomic(
        &dir.join(format!("step-{step:08}.png")),
        &grid_png(&bytes, shape, cols)?,
    )?;
    Ok(())
}

/// The seed stream of `[train] fid_every`'s samples.
const FID_STREAM: u64 = 0xF1D5;
/// Samples drawn at once for FID.
const FID_BATCH: usize = 64;

/// `n` samples (uint8 N×H×W×C) of the grid's sampler (`sample_sampler`, `sample_steps`) from
/// `seed`, `FID_BATCH` at a time beyond one grid; `tick(k)`: k more done.
fn draw_samples(
    plan: &Plan,
    schedule: &tweedie_core::schedule::NoiseSchedule,
    model: &UNet,
    n: usize,
    seed: u64,
    mut tick: impl FnMut(usize),
) -> Result<(Vec<u8>, [usize; 4])> {
    let tc = &plan.file.train;
    let device = model
        .devices()
        .first()
        .cloned()
        .context("model has no device")?;
    let ts = schedule.timesteps(tc.sample_steps, tc.sample_sampler.default_spacing())?;
    let mut rng = Rng::new(seed);
    let (c, r) = (plan.unet.in_channels, plan.unet.resolution);
    let batch = if n <= tc.sample_n.max(FID_BATCH) {
        n
    } else {
        FID_BATCH
    };
    let mut out = Vec::with_capacity(n * c * r * r);
    for s in (0..n).step_by(batch) {
        let b = batch.min(n - s);
        let x = rng.normal([b, c, r, r], &device);
        let (x0, _) = sampler::run(
            model,
            tc.sample_sampler
                .build(0.0, ModelVariance::Small, true)
                .as_mut(),
            schedule,
            &ts,
            x,
            &mut rng,
            |_, _| {},
        );
        out.extend(to_u8_nhwc(x0).0);
        tick(b);
    }
    Ok((out, [n, r, r, c]))
}

/// The (step, FID) points already in `metrics.jsonl` (a resumed run's curve goes on from them;
/// `open_metrics` has dropped the lines past the resumed step).
fn fid_points(path: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let r: FidRecord = serde_json::from_value(v.get("fid")?.clone()).ok()?;
            Some((v["step"].as_u64()? as f64, r.fid))
        })
        .collect()
}

/// Opens `metrics.jsonl` for appending, first dropping lines past `keep_up_to` (a resumed run
/// rewrites the steps it repeats). Returns the (step, loss) points kept, for the loss curve.
fn open_metrics(path: &Path, keep_up_to: usize) -> Result<(std::fs::File, Vec<(f64, f64)>)> {
    let step_of = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["step"].as_u64())
    };
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| step_of(l).is_some_and(|s| s as usize <= keep_up_to))
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    };
    let curve = kept
        .iter()
        .filter_map(|l| serde_json::from_str::<StepLog>(l).ok())
        .map(|s| (s.step as f64, s.loss))
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    checkpoint::write_atomic(path, body.as_bytes())?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    Ok((file, curve))
}
