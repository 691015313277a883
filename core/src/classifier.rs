//! A small CNN classifier on clean images: the likelihood p(class | x) of class-conditional
//! guidance, and the feature map of Tweedie's sample-quality metric (a Fréchet distance between
//! penultimate features, "classifier-FID", as FID does with Inception features; Heusel et al.
//! 2017). Two 3×3 conv + ReLU + 2×2 average-pool stages, then a 128-unit hidden layer.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Builds a [`Classifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub in_channels: usize,
    /// Side of the (square) images; a multiple of 4.
    pub resolution: usize,
    /// Channels of the first conv (the second has twice as many).
    pub width: usize,
    /// Units of the penultimate layer (the feature dimension).
    pub features: usize,
    pub classes: usize,
}

impl ClassifierConfig {
    pub fn mnist() -> Self {
        Self {
            in_channels: 1,
            resolution: 28,
            width: 32,
            features: 128,
            classes: 10,
        }
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        if self.resolution == 0 || !self.resolution.is_multiple_of(4) {
            return Err(CoreError::InvalidConfig(format!(
                "classifier resolution must be a positive multiple of 4, got {}",
                self.resolution
            )));
        }
        if self.in_channels > 64
            || self.resolution > 4096
            || self.width > 4096
            || self.features > 65536
            || self.classes > 65536
        {
            return Err(CoreError::InvalidConfig(format!(
                "implausible classifier: in_channels {} (≤ 64), resolution {} (≤ 4096), width {} \
                 (≤ 4096), features {} (≤ 65536), classes {} (≤ 65536)",
                self.in_channels, self.resolution, self.width, self.features, self.classes
            )));
        }
        if self.in_channels == 0 || self.width == 0 || self.features == 0 || self.classes < 2 {
            return Err(CoreError::InvalidConfig(
                "classifier channels, width and features must be positive, classes ≥ 2".into(),
            ));
        }
        Ok(())
    }

    /// The number of parameters [`init`](Self::init) allocates, computed without allocating.
    pub fn num_params(&self) -> u64 {
        let [c, w, f, k] =
            [self.in_channels, self.width, self.features, self.classes].map(|v| v as u64);
        let r4 = (self.resolution / 4) as u64;
        let conv = c * w * 9 + w + w * 2 * w * 9 + 2 * w;
        let hidden = (2 * w * r4 * r4).saturating_mul(f).saturating_add(f);
        conv.saturating_add(hidden).saturating_add(f * k + k)
    }

    pub fn init(&self, device: &Device) -> Classifier {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let r4 = self.resolution / 4;
        Classifier {
            conv1: conv(self.in_channels, self.width),
            conv2: conv(self.width, 2 * self.width),
            pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: LinearConfig::new(2 * self.width * r4 * r4, self.features).init(device),
            out: LinearConfig::new(self.features, self.classes).init(device),
        }
    }
}

#[derive(Module, Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: AvgPool2d,
    hidden: Linear,
    out: Linear,
}

impl Classifier {
    /// Penultimate features `[B, features]` of images `[B, C, H, W]` in [−1, 1].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(relu(self.conv1.forward(x)));
        let h = self.pool.forward(relu(self.conv2.forward(h)));
        let b = h.dims()[0];
        relu(self.hidden.forward(h.reshape([b as i32, -1])))
    }

    /// Class logits `[B, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.out.forward(self.features(x))
    }
}

/// What `classifier.json` in a classifier's run directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierMeta {
    pub config: ClassifierConfig,
    pub steps: usize,
    /// Accuracy on the dataset's test split after training.
    pub test_accuracy: f64,
}

pub const CLASSIFIER_META: &str = "classifier.json";
pub const CLASSIFIER_WEIGHTS: &str = "classifier.bpk";

/// Writes the weights and then the metadata into `dir`, each through a temporary file.
pub fn save(dir: &Path, model: &Classifier, meta: &ClassifierMeta) -> Result<(), CoreError> {
    fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    crate::checkpoint::write_atomic(
        &dir.join(CLASSIFIER_WEIGHTS),
        &crate::checkpoint::module_bytes(model.clone())?,
    )?;
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| CoreError::InvalidConfig(format!("cannot serialise the metadata: {e}")))?;
    crate::checkpoint::write_atomic(&dir.join(CLASSIFIER_META), &json)
}

/// Parses and validates a classifier's `classifier.json`; `p` names the file in errors.
pub fn parse_meta(bytes: &[u8], p: &Path) -> Result<ClassifierMeta, CoreError> {
    let meta: ClassifierMeta = serde_json::from_slice(bytes)
        .map_err(|e| CoreError::checkpoint(p, format!("not a classifier description: {e}")))?;
    meta.config
        .validate()
        .map_err(|e| CoreError::checkpoint(p, e.to_string()))?;
    Ok(meta)
}

/// Loads a classifier saved by [`save`] on `device` (its inference copy: no dropout, no grad).
pub fn load(dir: &Path, device: &Device) -> Result<(Classifier, ClassifierMeta), CoreError> {
    let p = dir.join(CLASSIFIER_META);
    let meta = parse_meta(&fs::read(&p).map_err(|e| CoreError::io(&p, e))?, &p)?;
    let weights = dir.join(CLASSIFIER_WEIGHTS);
    crate::checkpoint::check_weights_fit(&weights, meta.config.num_params())?;
    let model = crate::checkpoint::load_module(meta.config.init(device), &weights)?;
    Ok((model.no_grad(), meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_validation() {
        let dev = Device::flex();
        let c = ClassifierConfig::mnist();
        c.validate().unwrap();
        let m = c.init(&dev);
        let x = Tensor::<4>::zeros([3, 1, 28, 28], &dev);
        assert_eq!(m.features(x.clone()).dims(), [3, 128]);
        assert_eq!(m.forward(x).dims(), [3, 10]);
        assert_eq!(c.num_params(), m.num_params() as u64);
        let bad = ClassifierConfig {
            resolution: 30,
            ..c
        };
        assert!(bad.validate().is_err());
    }
}
