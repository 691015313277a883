//! Training the classifier of class-conditional guidance and classifier-FID
//! (`train --config experiments/mnist-classifier.toml`, `kind = "classifier-training"`).
//!
//! Plain supervised learning, so it runs on burn-train's `Learner` (unlike the diffusion trainer,
//! ARCHITECTURE.md says why): cross-entropy on clean images through burn's `DataLoader` over the
//! dataset's `Dataset`/`Batcher`, `steps` batches drawn with replacement from a seeded sampler
//! (one epoch), Adam with a linear warm-up, loss and accuracy logged for training and for
//! validation on the test split, the Learner's checkpoint in `<run>/learner/`. The model and
//! `classifier.json` (with the test accuracy) are saved into the run directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::transform::{SamplerDataset, SamplerDatasetOptions};
use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::prelude::*;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{AccuracyMetric, LossMetric, MetricDefinition, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerSummary, SupervisedTraining, TrainOutput,
    TrainStep,
};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tweedie_core::classifier::{self, Classifier, ClassifierConfig, ClassifierMeta};
use tweedie_core::device::BackendKind;
use tweedie_datasets::{DatasetName, ImageBatch, ImageBatcher, ImageItem, ImageSet};
use tweedie_sample::check::{self, Range};
use tweedie_sample::experiment::{ExperimentFile, ExperimentKind};

use crate::trainer::lr_at;

/// A classifier experiment (`kind = "classifier-training"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierFile {
    pub kind: ExperimentKind,
    /// Seed of the initialisation and of the batches drawn.
    #[serde(default)]
    pub seed: u64,
    /// Where the classifier goes. Default: `checkpoints/<file stem>`.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    pub data: ClassifierData,
    #[serde(default)]
    pub model: ClassifierModel,
    #[serde(default)]
    pub train: ClassifierTrain,
}

/// The network's sizes (two conv stages, then a hidden layer of `features` units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierModel {
    /// Channels of the first conv stage (the second has twice as many). Default 32.
    pub width: usize,
    /// Units of the hidden layer. Default 128.
    pub features: usize,
}

impl Default for ClassifierModel {
    fn default() -> Self {
        let m = ClassifierConfig::mnist();
        Self {
            width: m.width,
            features: m.features,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierData {
    pub dataset: DatasetName,
    /// Directory of the dataset's files (else `$TWEEDIE_DATA/<dataset>`, else `data/<dataset>`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `dataset = "folder"` only: channels (1 or 3).
    #[serde(default)]
    pub channels: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierTrain {
    /// Optimiser steps (batches drawn with replacement). Default 600.
    pub steps: usize,
    /// Default 64.
    pub batch_size: usize,
    /// Adam learning rate. Default 2e-3.
    pub lr: f64,
    /// Linear warm-up from lr/warmup_steps to lr. Default 20.
    pub warmup_steps: usize,
}

impl Default for ClassifierTrain {
    fn default() -> Self {
        Self {
            steps: 600,
            batch_size: 64,
            lr: 2e-3,
            warmup_steps: 20,
        }
    }
}

impl ExperimentFile for ClassifierFile {
    const KIND: ExperimentKind = ExperimentKind::ClassifierTraining;
    fn kind(&self) -> ExperimentKind {
        self.kind
    }
}

impl ClassifierFile {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.steps == 0 || t.batch_size == 0 {
            bail!("[train] steps and batch_size must be positive");
        }
        if self.model.width == 0 || self.model.features == 0 {
            bail!("[model] width and features must be positive");
        }
        check::float("train.lr", t.lr, Range::Positive)?;
        Ok(())
    }

    /// The run directory: the file's, else `checkpoints/<stem>`.
    pub fn run_dir(&self, stem: &str) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints").join(stem))
    }
}

/// The classifier as burn-train sees it (a newtype: `Classifier` lives in tweedie-core and the
/// step traits in burn-train, so neither crate can implement them for it).
#[derive(Module, Debug)]
pub struct ClassifierTraining {
    pub net: Classifier,
}

impl ClassifierTraining {
    fn forward(&self, batch: ImageBatch) -> ClassificationOutput {
        let logits = self.net.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, logits, batch.labels)
    }
}

impl TrainStep for ClassifierTraining {
    type Input = ImageBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.forward(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for ClassifierTraining {
    type Input = ImageBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.forward(batch)
    }
}

/// The learning rate of [`lr_at`] (linear warm-up, then flat) as a burn scheduler.
#[derive(Debug, Clone)]
struct Warmup {
    lr: f64,
    warmup: usize,
    step: usize,
}

impl LrScheduler for Warmup {
    fn step(&mut self) -> f64 {
        let lr = lr_at(self.lr, self.warmup, self.step);
        self.step += 1;
        lr
    }
    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step)
    }
    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(s) = record.scalar::<usize>("step") {
            self.step = s;
        }
    }
}

/// The fraction of `data` that `model` classifies correctly (batches of 500).
pub fn accuracy(model: &Classifier, data: &ImageSet, device: &Device) -> f64 {
    let mut right = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(500) {
        let items: Vec<ImageItem> = chunk
            .iter()
            .map(|&i| ImageItem {
                shape: data.shape,
                pixels: data.image(i).to_vec(),
                label: data.labels[i],
            })
            .collect();
        let b = ImageBatcher.batch_with_flips(items, &[], device);
        let pred = model.forward(b.images).argmax(1).reshape([chunk.len()]);
        let eq: Vec<bool> = pred
            .equal(b.labels)
            .into_data()
            .try_to_vec::<bool>()
            .unwrap_or_default();
        right += eq.iter().filter(|v| **v).count();
    }
    right as f64 / data.len().max(1) as f64
}

/// What a classifier run produced.
#[derive(Debug, Clone)]
pub struct ClassifierReport {
    pub test_accuracy: f64,
    /// The Learner's validation loss and accuracy (%) at the end of the epoch.
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Trains on `data`, validates and measures the accuracy on `test`, and saves the classifier
/// into `run_dir` (which the caller has claimed).
pub fn train_classifier(
    file: &ClassifierFile,
    run_dir: &Path,
    data: &ImageSet,
    test: &ImageSet,
    backend: BackendKind,
    progress: bool,
) -> Result<ClassifierReport> {
    file.validate()?;
    let tc = &file.train;
    let [c, h, w] = data.shape;
    if h != w {
        bail!("the classifier takes square images, got {h}×{w}");
    }
    let config = ClassifierConfig {
        in_channels: c,
        resolution: h,
        width: file.model.width,
        features: file.model.features,
        ..ClassifierConfig::mnist()
    };
    config.validate()?;
    let device = backend.device()?.autodiff();
    let net = {
        let _guard = tweedie_core::rng::device_rng_lock();
        device.seed(file.seed);
        config.init(&device)
    };
    let items = |set: &ImageSet| -> Vec<ImageItem> {
        (0..set.len())
            .map(|i| ImageItem {
                shape: set.shape,
                pixels: set.image(i).to_vec(),
                label: set.labels[i],
            })
            .collect()
    };
    let train = SamplerDataset::new(
        burn::data::dataset::InMemDataset::new(items(data)),
        SamplerDatasetOptions::default()
            .with_replacement()
            .with_fixed_size(tc.steps * tc.batch_size)
            .with_seed(file.seed),
    );
    // One worker: the batches come in the sampler's order, so the run is a function of the seed.
    let train_dl = DataLoaderBuilder::new(ImageBatcher)
        .batch_size(tc.batch_size)
        .num_workers(1)
        .build(train);
    let valid_dl = DataLoaderBuilder::new(ImageBatcher)
        .batch_size(500)
        .num_workers(1)
        .build(burn::data::dataset::InMemDataset::new(items(test)));
    let learner = Learner::new(
        ClassifierTraining { net },
        AdamConfig::new().init(),
        Warmup {
            lr: tc.lr,
            warmup: tc.warmup_steps,
            step: 0,
        },
    );
    let artifacts = run_dir.join("learner");
    let clock = Instant::now();
    let result = SupervisedTraining::new(&artifacts, train_dl, valid_dl)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(AccuracyMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .with_default_checkpointers()
        .with_application_logger(None)
        .renderer(Box::new(BarRenderer::new(tc.steps, progress)))
        .num_epochs(1)
        .launch(learner);
    if let Some(e) = result.error {
        bail!("training the classifier failed: {e}");
    }
    let model = result.model.net;
    let plain = device.clone().without_autodiff();
    let acc = accuracy(&model, test, &plain);
    classifier::save(
        run_dir,
        &model,
        &ClassifierMeta {
            config,
            steps: tc.steps,
            test_accuracy: acc,
        },
    )?;
    let last = |entries: &[burn::train::MetricSummary], name: &str| {
        entries
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.entries.last())
            .map(|e| e.value)
    };
    let summary = LearnerSummary::new(&artifacts, &["Loss", "Accuracy"]).ok();
    Ok(ClassifierReport {
        test_accuracy: acc,
        valid_loss: summary
            .as_ref()
            .and_then(|s| last(&s.metrics.valid, "Loss")),
        valid_accuracy: summary
            .as_ref()
            .and_then(|s| last(&s.metrics.valid, "Accuracy")),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// burn-train's renderer as our progress bar: position from the training split's progress,
/// message the latest training loss; nothing on stdout (the CLI renderer prints a line per batch).
struct BarRenderer {
    bar: ProgressBar,
    loss_id: Option<String>,
    training: bool,
}

impl BarRenderer {
    fn new(steps: usize, progress: bool) -> Self {
        let bar = tweedie_sample::progress::bar(
            steps,
            !progress,
            "{spinner} classifier [{bar:30}] {pos}/{len} {msg} ETA {eta}",
        );
        Self {
            bar,
            loss_id: None,
            training: true,
        }
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(NumericEntry::Value(v))) = state
            && self.loss_id.as_deref() == Some(format!("{:?}", entry.metric_id).as_str())
        {
            self.bar.set_message(format!("cross-entropy {v:.4}"));
        }
    }
    fn update_valid(&mut self, _state: MetricState) {}
    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        self.bar.finish_and_clear();
        Ok(())
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn on_test_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl TrainingProgressLogger for BarRenderer {
    fn start(
        &mut self,
        _epochs: usize,
        _start: usize,
        _items: Option<usize>,
        _label: Option<&str>,
    ) {
    }
    fn update_epoch(&mut self, _epoch: usize) {}
    fn start_split(&mut self, split: &str, total: usize) {
        self.training = split == "train";
        if self.training {
            self.bar.set_length(total as u64);
        } else {
            self.bar.set_message("validating on the test split");
        }
    }
    fn update_split(&mut self, items: usize) {
        if self.training {
            self.bar.set_position(items as u64);
        }
    }
    fn end_split(&mut self) {}
    fn end(&mut self) {
        self.bar.finish_and_clear();
    }
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for BarRenderer {
    fn start_global_progress(&mut self, _total: usize) {}
    fn start_test(&mut self, _name: &str, _total: usize) {}
    fn update_test_progress(&mut self, _items: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: MetricDefinition) {
        if definition.name.as_str() == "Loss" && self.loss_id.is_none() {
            self.loss_id = Some(format!("{:?}", definition.metric_id));
        }
    }
}
