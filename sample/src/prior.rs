//! A trained prior loaded for inference: the network of a checkpoint (its EMA weights unless the
//! raw ones are asked for), its noise schedule, and the autodiff twin that guidance
//! differentiates through.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use tweedie_core::checkpoint::{self, CheckpointMeta, Weights};
use tweedie_core::schedule::NoiseSchedule;
use tweedie_core::unet::UNet;

pub struct Prior {
    /// The resolved step directory.
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
    pub schedule: NoiseSchedule,
    /// The network on the inference device.
    pub model: UNet,
    /// Which weights `model` holds.
    pub weights: Weights,
}

impl Prior {
    /// Loads the checkpoint `path` (a run directory: its newest step; or a step directory) on
    /// `device`: EMA weights unless `raw` (or the run kept none).
    pub fn load(path: &Path, device: &Device, raw: bool) -> Result<Self> {
        let dir = checkpoint::resolve(path)?;
        let meta = checkpoint::read_meta(&dir)?;
        let schedule = meta.schedule.build()?;
        let (model, weights) = checkpoint::load_for_inference(&dir, &meta, device, raw)?;
        Ok(Self {
            dir,
            meta,
            schedule,
            model,
            weights,
        })
    }

    /// `[C, H, W]` of the images the model makes.
    pub fn image_shape(&self) -> [usize; 3] {
        let u = &self.meta.unet;
        [u.in_channels, u.resolution, u.resolution]
    }

    /// The network on `grad_device` (an autodiff device) for guidance: gradients flow through it
    /// to x_t, never into its weights; `valid` also switches dropout off.
    pub fn grad_model(&self, grad_device: &Device) -> UNet {
        self.model.valid().to_device(grad_device).no_grad()
    }

    /// A note when the EMA weights were asked for but the run kept none.
    pub fn weights_note(&self, raw: bool) -> Option<String> {
        (!raw && self.weights == Weights::Raw).then(|| {
            format!(
                "note: {} has no EMA weights; using the raw weights",
                self.dir.display()
            )
        })
    }
}
