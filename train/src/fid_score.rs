//! `[train] fid_every`: FID of the model's samples against the training images while it trains.
//! RGB data is scored on pytorch-fid's Inception-v3 (FID and KID, the papers' numbers,
//! `tweedie_sample::inception_fid`); gray data on the MNIST classifier's features
//! (classifier-FID, `tweedie_sample::fid`), since Inception takes RGB.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::classifier::Classifier;
use tweedie_core::inception::Inception;
use tweedie_datasets::ImageSet;
use tweedie_sample::inception_fid::{self, ReferenceOptions, ReferenceStats};

use crate::config::Plan;

/// One score, as `metrics.jsonl` logs it under `"fid"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidRecord {
    /// `inception` or `classifier`.
    pub network: String,
    pub fid: f64,
    /// Inception only: KID (100 subsets of up to 1000 rows) and its spread over subsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid_std: Option<f64>,
    pub samples: usize,
    pub reference_images: usize,
    /// Sampling and scoring.
    pub seconds: f64,
}

enum Network {
    Inception {
        net: Box<Inception>,
        reference: ReferenceStats,
    },
    Classifier {
        classifier: Box<Classifier>,
        features: usize,
        mean: Vec<f64>,
        cov: Vec<f64>,
    },
}

/// The scoring network and the training images' statistics, prepared once per run.
pub struct FidScorer {
    network: Network,
    reference_images: usize,
    device: Device,
}

impl FidScorer {
    /// Loads the network `plan` asks for and computes (or reads from `cache`) the statistics of
    /// the first `fid_reference_images` training images; a missing weights file or classifier
    /// is a one-line error naming the key.
    pub fn new(
        plan: &Plan,
        data: &ImageSet,
        cache: Option<PathBuf>,
        device: &Device,
        quiet: bool,
    ) -> Result<Self> {
        let tc = &plan.file.train;
        let mut set = data.clone();
        if tc.fid_reference_images > 0 {
            set.truncate(tc.fid_reference_images);
        }
        let network = if set.shape[0] == 3 {
            let weights = inception_fid::weights_file(tc.fid_weights.as_deref())
                .context("[train] fid_every")?;
            let net = Inception::read(&weights, device)
                .with_context(|| "[train] fid_weights".to_string())?;
            let o = ReferenceOptions {
                net: &net,
                weights: &weights,
                cache,
                quiet,
            };
            let name = format!("{}-train", plan.dataset.name());
            let label = format!("the {} training set", plan.dataset.name());
            let (reference, _) = inception_fid::stats_of_set(&set, &label, &name, &o)?;
            Network::Inception {
                net: Box::new(net),
                reference,
            }
        } else {
            let dir = tc
                .fid_classifier
                .clone()
                .unwrap_or_else(|| PathBuf::from("checkpoints/mnist-classifier"));
            let (classifier, meta) = classifier(&dir, device)?;
            let cfg = meta.config;
            let [c, h, w] = set.shape;
            if [cfg.in_channels, cfg.resolution, cfg.resolution] != [c, h, w] {
                bail!(
                    "[train] fid_classifier {}: the classifier takes {}×{}×{} images, the data is \
                     {c}×{h}×{w}",
                    dir.display(),
                    cfg.in_channels,
                    cfg.resolution,
                    cfg.resolution
                );
            }
            let f = tweedie_sample::fid::features(
                &classifier,
                |i, ch, y, x| set.image(i)[(ch * h + y) * w + x],
                set.len(),
                set.shape,
                device,
            );
            let (mean, cov) = tweedie_sample::fid::moments(&f, cfg.features);
            Network::Classifier {
                classifier: Box::new(classifier),
                features: cfg.features,
                mean,
                cov,
            }
        };
        Ok(Self {
            network,
            reference_images: set.len(),
            device: device.clone(),
        })
    }

    /// "Inception FID and KID" or "classifier-FID".
    pub fn name(&self) -> &'static str {
        match self.network {
            Network::Inception { .. } => "Inception FID and KID",
            Network::Classifier { .. } => "classifier-FID",
        }
    }

    /// Seconds the network takes for `n` images (Inception by its measured rate; the classifier
    /// is negligible beside sampling).
    pub fn cost(&self, n: usize) -> f64 {
        match self.network {
            Network::Inception { .. } => n as f64 / inception_fid::CPU_IMAGES_PER_SECOND,
            Network::Classifier { .. } => 0.0,
        }
    }

    /// Scores uint8 N×H×W×C samples (what `to_u8_nhwc` gives); `seconds` is filled by the caller.
    pub fn score(&self, data: &[u8], [n, h, w, c]: [usize; 4], seed: u64) -> FidRecord {
        let (network, fid, kid) = match &self.network {
            Network::Inception { net, reference } => {
                let f = inception_fid::features_of_u8(
                    net,
                    n,
                    [c, h, w],
                    |i, ch, y, x| data[((i * h + y) * w + x) * c + ch],
                    |_| {},
                );
                let (fid, kid) = inception_fid::fid_kid(&f, reference, 100, 1000, seed);
                ("inception", fid, kid)
            }
            Network::Classifier {
                classifier,
                features,
                mean,
                cov,
            } => {
                let f = tweedie_sample::fid::features(
                    classifier,
                    |i, ch, y, x| data[((i * h + y) * w + x) * c + ch],
                    n,
                    [c, h, w],
                    &self.device,
                );
                let (m, s) = tweedie_sample::fid::moments(&f, *features);
                (
                    "classifier",
                    tweedie_sample::fid::frechet(&m, &s, mean, cov),
                    None,
                )
            }
        };
        FidRecord {
            network: network.into(),
            fid,
            kid: kid.map(|k| k.0),
            kid_std: kid.map(|k| k.1),
            samples: n,
            reference_images: self.reference_images,
            seconds: 0.0,
        }
    }
}

/// The classifier of classifier-FID, its error naming the key.
fn classifier(
    dir: &Path,
    device: &Device,
) -> Result<(Classifier, tweedie_core::classifier::ClassifierMeta)> {
    tweedie_sample::class_likelihood::load_classifier(dir, device).with_context(|| {
        format!(
            "[train] fid_classifier {} (gray data is scored by classifier-FID; train one with \
             experiments/mnist-classifier.toml)",
            dir.display()
        )
    })
}
