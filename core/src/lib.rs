//! # tweedie-core
//!
//! The mathematics shared by training and sampling: noise schedules ([`schedule`]), the forward
//! process and Tweedie's formula ([`diffusion`]), the DDPM U-Net ([`unet`]), the training loss and
//! the variational bound in bits/dim ([`loss`], [`elbo`]), the denoiser seam ([`denoiser`]),
//! run-time backend choice ([`device`]), a serialisable RNG ([`rng`]) and atomic checkpoints
//! ([`checkpoint`]). No TOML, no CLI, no images here.

pub mod bridge;
pub mod checkpoint;
pub mod choice;
pub mod classifier;
pub mod denoiser;
pub mod device;
pub mod diffusion;
pub mod elbo;
pub mod error;
pub mod feature_stats;
pub mod gaussian;
pub mod gmm;
pub mod inception;
pub mod kernel;
pub mod linalg;
pub mod loss;
pub mod lpips;
pub mod memory;
pub mod mlp;
pub mod parallel;
pub mod precision;
pub mod rng;
pub mod run_dir;
pub mod schedule;
pub mod unet;

pub use burn;
pub use error::CoreError;

use burn::prelude::*;

/// Copies a tensor's values to the host as f32 (whatever its float dtype).
pub fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().iter::<f32>().collect()
}
