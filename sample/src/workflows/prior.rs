//! A trained prior loaded for inference: the network of a checkpoint (its EMA weights unless the
//! raw ones are asked for), its noise schedule, and the autodiff twin that guidance
//! differentiates through.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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
        let prior = Self::load_any(path, device, raw)?;
        if prior.model.cond_channels() > 0 {
            bail!(
                "{}: a conditional model (trained with a [condition] section) needs observations: \
                 use it as `[amortized] checkpoint` of a reconstruction file",
                prior.dir.display()
            );
        }
        Ok(prior)
    }

    /// Loads a conditional model (the amortized route), with the observation model it was
    /// trained for.
    pub fn load_conditional(
        path: &Path,
        device: &Device,
        raw: bool,
    ) -> Result<(Self, crate::amortized::image::ConditionSpec)> {
        let prior = Self::load_any(path, device, raw)?;
        let Some(record) = prior
            .meta
            .observation
            .as_ref()
            .filter(|_| prior.model.cond_channels() > 0)
        else {
            bail!(
                "{}: not a conditional model (train one with a [condition] section, e.g. \
                 experiments/mnist-sr4-amortized.toml)",
                prior.dir.display()
            );
        };
        let spec = crate::amortized::image::ConditionSpec::from_record(record)
            .with_context(|| prior.dir.display().to_string())?;
        Ok((prior, spec))
    }

    fn load_any(path: &Path, device: &Device, raw: bool) -> Result<Self> {
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

    /// ε̂ = ε_θ(x_t, t) of `x` (`[N, C, H, W]` on the model scale, row-major) at `t` (one per row,
    /// or one for all), on the model's device.
    pub fn eps(&self, x: Vec<f32>, shape: [usize; 4], t: &[usize]) -> Result<Vec<f32>> {
        let [n, c, h, w] = shape;
        if [c, h, w] != self.image_shape() {
            anyhow::bail!(
                "inputs are {c}×{h}×{w}, the model takes {:?}",
                self.image_shape()
            );
        }
        let big_t = self.schedule.len();
        if let Some(bad) = t.iter().find(|t| **t >= big_t) {
            anyhow::bail!("t = {bad} is outside the model's 0..{big_t}");
        }
        let ts: Vec<usize> = match t.len() {
            1 => vec![t[0]; n],
            m if m == n => t.to_vec(),
            m => anyhow::bail!("{m} timesteps for {n} inputs (give one, or one per input)"),
        };
        let device = self
            .model
            .devices()
            .first()
            .cloned()
            .unwrap_or_else(Device::flex);
        let x = Tensor::<4>::from_data(TensorData::new(x, shape), &device);
        use tweedie_core::denoiser::Denoiser;
        Ok(tweedie_core::host_values(self.model.eps(x, &ts)))
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
