//! The inverse problem: forward operators, noise models, likelihoods and their specs in experiment files. Imports only `files`.

pub mod class_likelihood;
pub mod likelihood;
pub mod noise;
pub mod operator;
pub mod spec;
