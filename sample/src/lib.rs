//! # tweedie-sample
//!
//! Sampling from a trained model with the same core modules `train` uses: samplers
//! ([`sampler`]) and the files people look at ([`output`]).

pub mod output;
pub mod sampler;
