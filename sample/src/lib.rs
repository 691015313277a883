//! # tweedie-sample
//!
//! Sampling from a trained model and solving inverse problems with it, in four layers, each
//! importing only the ones below it (checked by `tests/layers.rs`): [`files`] (experiment files,
//! outputs, progress), [`problems`] (operators, noise models, likelihoods), [`methods`] (samplers,
//! particles, the amortized route) and [`workflows`] (whole runs). Every module is also
//! re-exported at the crate root (`tweedie_sample::sampler`, …).

pub mod files;
pub mod methods;
pub mod problems;
pub mod workflows;

pub use files::{check, cli, experiment, npz, output, progress, toml_file};
pub use methods::{amortized, catalog, pnpdm, sampler, settings, smc};
pub use problems::{class_likelihood, likelihood, noise, operator, spec};
pub use workflows::{
    class_cond, fid, generate, gmm_bench, inception, inception_fid, lpips, metrics, nfe, plot,
    prior, recon,
};
