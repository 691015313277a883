//! Sequential Monte Carlo building blocks: particle weights in log space and resampling.

mod resample;

pub use resample::{Resampling, ess, log_sum_exp, normalise};
