//! # tweedie-train
//!
//! Trains the DDPM U-Net of `tweedie-core` with L_simple from a TOML experiment file
//! ([`config`]), in a step loop of our own ([`trainer`]) with global gradient clipping ([`clip`])
//! and an EMA of the weights ([`ema`]); the classifier of class guidance on burn-train's
//! `Learner` ([`classify`]); the `train` binary's workflows in [`launch`].

pub mod classify;
pub mod clip;
pub mod config;
pub mod ema;
pub mod eval;
pub mod fid_score;
pub mod launch;
pub mod node;
pub mod plot;
pub mod trainer;
