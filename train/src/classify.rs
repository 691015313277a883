//! Training the MNIST classifier of class-conditional guidance and classifier-FID
//! (`train --config experiments/mnist-classifier.toml`, `[model] preset = "classifier"`): the
//! same file format, seeding and progress bar as diffusion training; cross-entropy on clean
//! images, Adam with linear warm-up, then the test accuracy. Short (a few hundred steps), so it has
//! no intermediate checkpoints or resume.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use tweedie_core::classifier::{self, Classifier, ClassifierConfig, ClassifierMeta};
use tweedie_core::device::BackendKind;
use tweedie_core::rng::Rng;
use tweedie_datasets::{ImageBatcher, ImageItem, ImageSet};

use crate::config::TrainFile;
use crate::trainer::lr_at;

fn batch(data: &ImageSet, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let items: Vec<ImageItem> = idx
        .iter()
        .map(|&i| ImageItem {
            shape: data.shape,
            pixels: data.image(i).to_vec(),
            label: data.labels[i],
        })
        .collect();
    let b = ImageBatcher.batch_with_flips(items, &vec![false; idx.len()], device);
    (b.images, b.labels)
}

/// The fraction of `data` that `model` classifies correctly (batches of 500).
pub fn accuracy(model: &Classifier, data: &ImageSet, device: &Device) -> f64 {
    let mut right = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(500) {
        let (x, y) = batch(data, chunk, device);
        let pred = model.forward(x).argmax(1).reshape([chunk.len()]);
        let eq: Vec<bool> = pred
            .equal(y)
            .into_data()
            .try_to_vec::<bool>()
            .unwrap_or_default();
        right += eq.iter().filter(|v| **v).count();
    }
    right as f64 / data.len().max(1) as f64
}

/// Trains, evaluates on `test` and saves into `run_dir`; returns the test accuracy.
pub fn train_classifier(
    file: &TrainFile,
    run_dir: &Path,
    data: &ImageSet,
    test: &ImageSet,
    backend: BackendKind,
    progress: bool,
) -> Result<f64> {
    let tc = &file.train;
    let [c, h, w] = data.shape;
    if h != w {
        bail!("the classifier takes square images, got {h}×{w}");
    }
    let config = ClassifierConfig {
        in_channels: c,
        resolution: h,
        ..ClassifierConfig::mnist()
    };
    config.validate()?;
    let device = backend.device()?.autodiff();
    let mut model = {
        let _guard = tweedie_core::rng::device_rng_lock();
        device.seed(file.seed);
        config.init(&device)
    };
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let bar = if progress {
        ProgressBar::new(tc.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let clock = Instant::now();
    let mut smooth: Option<f64> = None;
    for step in 0..tc.steps {
        let mut rng = Rng::derive(file.seed, step as u64);
        let idx: Vec<usize> = (0..tc.batch_size).map(|_| rng.below(data.len())).collect();
        let (x, y) = batch(data, &idx, &device);
        let loss = loss_fn.forward(model.forward(x), y);
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            bar.abandon();
            bail!("loss became {value} at step {}", step + 1);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr_at(tc.lr, tc.warmup_steps, step), model, grads);
        smooth = Some(smooth.map_or(value, |s| 0.95 * s + 0.05 * value));
        bar.set_message(format!("cross-entropy {:.4}", smooth.unwrap_or(value)));
        bar.set_position(step as u64 + 1);
    }
    bar.finish_and_clear();
    let plain = device.clone().without_autodiff();
    let model = model.valid();
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
    eprintln!(
        "classifier: {} steps in {:.1} s, test accuracy {:.4} ({} images) → {}",
        tc.steps,
        clock.elapsed().as_secs_f64(),
        acc,
        test.len(),
        run_dir.display()
    );
    Ok(acc)
}
