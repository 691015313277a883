//! The experiment file of a training run (TOML). Plain serde structs that reject unknown keys;
//! [`TrainFile::resolve`] validates them and builds the burn-side configs.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::checkpoint::ScheduleSpec;
use tweedie_core::precision::Precision;
use tweedie_core::unet::{Precondition, UNetConfig, UNetPreset};
use tweedie_datasets::{DatasetKind, DatasetName, ImageSet};
use tweedie_sample::amortized::image::ConditionSpec;
use tweedie_sample::check::{self, Range};
use tweedie_sample::experiment::{ExperimentFile, ExperimentKind};
use tweedie_sample::sampler::SamplerKind;

/// A training experiment, e.g. `experiments/mnist-tiny.toml` (`kind = "diffusion-training"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    pub kind: ExperimentKind,
    /// Seed of every random choice of the run (initialisation, data order, t, ε, dropout).
    #[serde(default)]
    pub seed: u64,
    /// Where checkpoints and logs go. Default: `checkpoints/<file stem>`.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    pub data: DataSection,
    pub model: ModelSection,
    #[serde(default)]
    pub diffusion: DiffusionSection,
    #[serde(default)]
    pub train: TrainSection,
    /// Conditional training (the amortized route): y ~ p(y | x) is drawn for every training
    /// image from this operator and noise model (the keys and [0, 1] scale of reconstruction
    /// files), and the network also takes [A⁺ŷ, visibility] as input channels. The checkpoint
    /// records it; reconstruction files use such a model as `[amortized] checkpoint`.
    #[serde(default)]
    pub condition: Option<ConditionSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dataset: DatasetName,
    /// Directory with the dataset's original files. Default: `$TWEEDIE_DATA/<dataset>`, then the
    /// bundled `data/<dataset>`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Random horizontal flips (CIFAR-10 in the paper).
    #[serde(default)]
    pub hflip: bool,
    /// Train on the first N images only (0: all).
    #[serde(default)]
    pub limit: usize,
    /// Download missing files from the dataset's canonical source (checksums verified).
    #[serde(default)]
    pub download: bool,
    /// `dataset = "folder"` only: channels (1 or 3) and side length of the images.
    #[serde(default)]
    pub channels: Option<usize>,
    #[serde(default)]
    pub resolution: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The architecture; the fields below override it (`params.json` has the presets' counts).
    pub preset: UNetPreset,
    pub ch: Option<usize>,
    pub ch_mult: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub attn_resolutions: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    /// EDM-style preconditioning of the ε-output (`tweedie_core::unet::Precondition`), with
    /// the training set's pixel mean and std (computed when the run starts). Default false.
    pub precondition: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionSection {
    pub schedule: ScheduleName,
    pub timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub cosine_s: f64,
    pub max_beta: f64,
}

impl Default for DiffusionSection {
    fn default() -> Self {
        Self {
            schedule: ScheduleName::Linear,
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            cosine_s: 0.008,
            max_beta: 0.999,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimiser steps in total.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam learning rate (paper: 2e-4).
    pub lr: f64,
    /// Linear learning-rate warm-up from lr/warmup_steps to lr (paper: 5000). 0: none.
    pub warmup_steps: usize,
    /// Per-sample weight of the ε-error: `simple` (L_simple, the paper's), `min-snr`
    /// (min(SNR_t, γ)/SNR_t, Hang et al. 2023) or `precond` (1/c_out², which makes every t
    /// count alike for the preconditioned network: EDM's weighting; needs
    /// `[model] precondition = true`).
    pub loss_weighting: LossWeighting,
    /// γ of `min-snr`.
    pub snr_gamma: f64,
    /// Global gradient-norm clipping (paper: 1.0). 0: none.
    pub grad_clip: f64,
    /// Adam ε (PyTorch's default 1e-8; burn's is 1e-5).
    pub adam_eps: f64,
    /// CPU backends: split each batch into this many shards, each run forward and backward on
    /// its own core at the same time, gradients summed (data parallelism inside the process;
    /// ignored on wgpu). Set it to the number of cores: on 2 cores burn-flex trains about 20 %
    /// faster with 2 (BENCHMARKS.md). The result differs from 1 shard only in the floating-point
    /// summation order and, with dropout, in the masks' random stream (one per shard).
    pub shards: usize,
    /// `f32`, or `mixed-f16` (wgpu only): forward and backward in f16 on a copy of the f32
    /// weights, with dynamic loss scaling; a step whose gradients overflow is skipped
    /// (`tweedie_core::precision`).
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: Precision,
    /// `mixed-f16`: the loss scale to start from (2¹⁶, as torch's GradScaler).
    #[serde(skip_serializing_if = "is_initial_scale")]
    pub loss_scale: f64,
    /// EMA decay of the weights (paper: 0.9999). 0: no EMA.
    pub ema_decay: f64,
    /// Use decay min(ema_decay, (1 + n)/(10 + n)) at step n, so the EMA is useful early on.
    pub ema_warmup: bool,
    /// Write a checkpoint every N steps (and at the end). 0: only at the end.
    pub checkpoint_every: usize,
    /// Keep the newest K checkpoints (0: all).
    pub keep_last: usize,
    /// Log a metrics line every N steps.
    pub log_every: usize,
    /// Write a sample grid (EMA weights, DPM-Solver++(2M), fixed seed) every N steps to `samples/`.
    /// 0: never.
    pub sample_every: usize,
    /// Images in that grid.
    pub sample_n: usize,
    /// Sampler of that grid: `dpmpp2m` (default), `ddpm`, `ddim` or `heun`; ODE solvers on
    /// log-SNR-spaced steps, DDPM and DDIM trailing. Ancestral `ddpm` forgives an under-trained
    /// network's errors best (BENCHMARKS.md, quality versus NFE).
    pub sample_sampler: SamplerKind,
    /// Steps of that sampler.
    pub sample_steps: usize,
    /// Evaluate L_simple and the bound (bits/dim) on the test split every N steps. 0: never.
    pub eval_every: usize,
    /// Test images for that evaluation (the bound costs T network calls per batch).
    pub eval_images: usize,
    /// Score the model every N steps (and at the end) by FID: `fid_samples` samples of the grid's
    /// sampler against the training images, logged in `metrics.jsonl` and drawn in `fid.png`.
    /// RGB data: Inception FID and KID on pytorch-fid's network (the papers' CIFAR-10 number;
    /// `fid_weights`); gray data: classifier-FID (`fid_classifier`). 0: never.
    pub fid_every: usize,
    /// Samples per FID score (papers use 50,000; a few thousand track progress).
    pub fid_samples: usize,
    /// Reference images: the first N of the training set (0: all of it). Inception's reference
    /// statistics are computed once and cached in `~/.cache/tweedie/fid`.
    pub fid_reference_images: usize,
    /// pytorch-fid's weights file (`pt_inception-2015-12-05-6726825d.pth`); unset: looked up in
    /// `$TWEEDIE_INCEPTION`, `~/.cache/tweedie/inception/` and the torch hub cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_weights: Option<PathBuf>,
    /// Gray data: the classifier run directory of classifier-FID (unset:
    /// `checkpoints/mnist-classifier`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_classifier: Option<PathBuf>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 32,
            lr: 2e-4,
            warmup_steps: 0,
            loss_weighting: LossWeighting::Simple,
            snr_gamma: 5.0,
            grad_clip: 1.0,
            adam_eps: 1e-8,
            shards: 1,
            precision: Precision::F32,
            loss_scale: tweedie_core::precision::INITIAL_SCALE,
            ema_decay: 0.9999,
            ema_warmup: true,
            checkpoint_every: 500,
            keep_last: 3,
            log_every: 10,
            sample_every: 500,
            sample_n: 16,
            sample_sampler: SamplerKind::Dpmpp2m,
            sample_steps: 20,
            eval_every: 0,
            eval_images: 16,
            fid_every: 0,
            fid_samples: 1000,
            fid_reference_images: 0,
            fid_weights: None,
            fid_classifier: None,
        }
    }
}

/// The noise schedule of `[diffusion] schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleName {
    /// β linear from `beta_start` to `beta_end` (Ho et al. 2020).
    Linear,
    /// ᾱ_t = cos²(((t/T + s)/(1 + s)) π/2), β capped at `max_beta` (Nichol & Dhariwal 2021).
    Cosine,
}

/// How the per-sample ε-errors of a batch are weighted (see `TrainSection::loss_weighting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossWeighting {
    /// L_simple: every sample's ‖ε − ε̂‖² alike (Ho et al. 2020).
    Simple,
    /// min(SNR_t, γ)/SNR_t (Hang et al. 2023).
    MinSnr,
    /// 1/c_out²: every t counts alike for a preconditioned network (Karras et al. 2022).
    Precond,
}

/// A validated experiment: everything the trainer needs, built.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: TrainFile,
    pub dataset: DatasetKind,
    pub unet: UNetConfig,
    pub schedule: ScheduleSpec,
    pub run_dir: PathBuf,
}

impl Plan {
    /// The plan with the model's preconditioning (if the file asks for it) filled in from the
    /// training images' pixel mean and standard deviation on the [−1, 1] scale.
    pub fn with_data_moments(&self, data: &ImageSet) -> Plan {
        let mut plan = self.clone();
        if self.file.model.precondition == Some(true) {
            let (mut sum, mut sq) = (0.0f64, 0.0f64);
            for &p in &data.pixels {
                let x = p as f64 / 127.5 - 1.0;
                sum += x;
                sq += x * x;
            }
            let n = data.pixels.len().max(1) as f64;
            let mean = sum / n;
            let std = (sq / n - mean * mean).max(1e-12).sqrt();
            plan.unet.precondition = Some(Precondition {
                mean,
                std,
                schedule: self.schedule.clone(),
            });
        }
        plan
    }
}

impl ExperimentFile for TrainFile {
    const KIND: ExperimentKind = ExperimentKind::DiffusionTraining;
    fn kind(&self) -> ExperimentKind {
        self.kind
    }
}

impl TrainFile {
    /// Parses the `config.toml` a checkpoint keeps of its run. Checkpoints written before
    /// experiment files named their kind lack the `kind` line; it can only be this one.
    pub fn parse_checkpoint_copy(text: &str) -> Result<Self> {
        match tweedie_sample::experiment::kind_of(text) {
            Ok(_) => Self::parse(text),
            Err(_) => Self::parse(&format!("kind = \"diffusion-training\"\n{text}")),
        }
    }

    /// Validates and builds the run's objects. `stem` names the default run directory.
    pub fn resolve(self, stem: &str) -> Result<Plan> {
        if self.data.dataset == DatasetName::Folder && self.data.channels.is_none() {
            bail!("[data] dataset = \"folder\" needs `channels` (1 or 3)");
        }
        let dataset = self.data.dataset.kind(self.data.channels);
        let m = &self.model;
        let mut unet = UNetConfig::preset(m.preset);
        let [c, h, w] = match (dataset.shape(), self.data.resolution) {
            (Some(s), _) => s,
            (None, Some(r)) => [self.data.channels.unwrap_or(3), r, r],
            (None, None) => {
                bail!("[data] dataset = \"folder\" needs `resolution` (the images' side length)")
            }
        };
        if h != w {
            bail!("non-square images are not supported ({h}×{w})");
        }
        unet.in_channels = c;
        unet.resolution = h;
        if let Some(v) = m.ch {
            unet.ch = v;
        }
        if let Some(v) = &m.ch_mult {
            unet.ch_mult = v.clone();
        }
        if let Some(v) = m.num_res_blocks {
            unet.num_res_blocks = v;
        }
        if let Some(v) = &m.attn_resolutions {
            unet.attn_resolutions = v.clone();
        }
        if let Some(v) = m.dropout {
            unet.dropout = check::float("model.dropout", v, Range::UnitExclusiveOne)?;
        }
        if let Some(cond) = &self.condition {
            cond.observer([c, h, w], &burn::prelude::Device::flex())
                .context("[condition]")?;
            unet.cond_channels = ConditionSpec::channels(c);
        }
        unet.validate().context("[model]")?;
        let d = &self.diffusion;
        check::float("diffusion.beta_start", d.beta_start, Range::OpenUnit)?;
        check::float("diffusion.beta_end", d.beta_end, Range::OpenUnit)?;
        check::float("diffusion.cosine_s", d.cosine_s, Range::NonNegative)?;
        check::float("diffusion.max_beta", d.max_beta, Range::OpenUnit)?;
        let schedule = match d.schedule {
            ScheduleName::Linear => ScheduleSpec::Linear {
                timesteps: d.timesteps,
                beta_start: d.beta_start,
                beta_end: d.beta_end,
            },
            ScheduleName::Cosine => ScheduleSpec::Cosine {
                timesteps: d.timesteps,
                s: d.cosine_s,
                max_beta: d.max_beta,
            },
        };
        schedule.build().context("[diffusion]")?;
        let t = &self.train;
        if t.batch_size == 0 || t.steps == 0 {
            bail!("[train] steps and batch_size must be positive");
        }
        check::float("train.lr", t.lr, Range::Positive)?;
        check::float("train.ema_decay", t.ema_decay, Range::UnitExclusiveOne)?;
        check::float("train.grad_clip", t.grad_clip, Range::NonNegative)?;
        check::float("train.loss_scale", t.loss_scale, Range::Positive)?;
        check::float("train.adam_eps", t.adam_eps, Range::Positive)?;
        check::float("train.snr_gamma", t.snr_gamma, Range::Positive)?;
        if t.sample_every > 0
            && (t.sample_n == 0 || t.sample_steps == 0 || t.sample_steps > d.timesteps)
        {
            bail!(
                "[train] sample_n must be positive and sample_steps in 1..={}",
                d.timesteps
            );
        }
        if t.fid_every > 0
            && (t.fid_samples < 2 || t.sample_steps == 0 || t.sample_steps > d.timesteps)
        {
            bail!(
                "[train] fid_every needs fid_samples ≥ 2 and sample_steps in 1..={}",
                d.timesteps
            );
        }
        if t.shards == 0 || t.shards > t.batch_size {
            bail!(
                "[train] shards must be in 1..=batch_size ({}), got {}",
                t.batch_size,
                t.shards
            );
        }
        if self.condition.is_some() && (t.sample_every > 0 || t.eval_every > 0 || t.fid_every > 0) {
            bail!(
                "[train] sample_every, eval_every and fid_every must be 0 for a conditional model \
                 (its samples need observations: reconstruction files draw them with method \
                 `amortized`)"
            );
        }
        if t.loss_weighting == LossWeighting::Precond && self.model.precondition != Some(true) {
            bail!("[train] loss_weighting = \"precond\" needs [model] precondition = true");
        }
        let run_dir = self
            .run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints").join(stem));
        Ok(Plan {
            file: self,
            dataset,
            unet,
            schedule,
            run_dir,
        })
    }
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn is_initial_scale(s: &f64) -> bool {
    *s == tweedie_core::precision::INITIAL_SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "kind = \"diffusion-training\"\n[data]\ndataset = \"mnist\"\n[model]\npreset = \"tiny\"\n";

    #[test]
    fn defaults_fill_in_and_presets_resolve() {
        let plan = TrainFile::parse(MIN).unwrap().resolve("x").unwrap();
        assert_eq!(plan.unet, UNetConfig::tiny());
        assert_eq!(plan.run_dir, PathBuf::from("checkpoints/x"));
        assert_eq!(plan.file.train.lr, 2e-4);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = TrainFile::parse(&format!("{MIN}[train]\nbatchsize = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batchsize") && e.starts_with("line 7:") && !e.contains('\n'),
            "{e}"
        );
        // An invalid choice is named with the valid ones, from the enum itself.
        let e = TrainFile::parse(&format!("{MIN}[diffusion]\nschedule = \"quadratic\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("quadratic") && e.contains("`linear` or `cosine`") && !e.contains('\n'),
            "{e}"
        );
        let e = TrainFile::parse(&MIN.replace("mnist", "svhn"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("svhn") && e.contains("`fashion-mnist`"), "{e}");
        let e = TrainFile::parse(&MIN.replace("diffusion-training", "reconstruction"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a diffusion-training file"), "{e}");
        let e = TrainFile::parse(&format!("{MIN}ch = 40\n"))
            .unwrap()
            .resolve("x")
            .unwrap_err();
        assert!(format!("{e:#}").contains("divisible"), "{e:#}");
        for bad in [0, 33] {
            let e = TrainFile::parse(&format!("{MIN}[train]\nshards = {bad}\n"))
                .unwrap()
                .resolve("x")
                .unwrap_err();
            assert!(
                e.to_string()
                    .contains("shards must be in 1..=batch_size (32)"),
                "{e:#}"
            );
        }
    }
}
