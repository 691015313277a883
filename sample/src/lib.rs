//! # tweedie-sample
//!
//! Sampling from a trained model with the same core modules `train` uses: samplers
//! ([`sampler`]), the seams of likelihood guidance ([`operator`], [`noise`], [`likelihood`]) and
//! the files people look at ([`output`]).

pub mod amortized;
pub mod check;
pub mod class_cond;
pub mod class_likelihood;
pub mod cli;
pub mod experiment;
pub mod fid;
pub mod generate;
pub mod gmm_bench;
pub mod likelihood;
pub mod metrics;
pub mod nfe;
pub mod noise;
pub mod operator;
pub mod output;
pub mod plot;
pub mod prior;
pub mod progress;
pub mod recon;
pub mod sampler;
pub mod smc;
pub mod toml_file;
