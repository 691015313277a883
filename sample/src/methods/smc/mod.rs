//! Sequential Monte Carlo guidance: particle weights in log space, resampling, and the particle
//! sampler behind TDS and FK steering ([`Smc`]).

mod mcgdiff;
mod particles;
mod resample;

pub use mcgdiff::{Mcgdiff, McgdiffSettings};
pub use particles::{POISSON_MAX_SHIFT, Potential, ResampleWhen, Smc, SmcConfig, SmcError, Twist};
pub use resample::{Resampling, ess, log_sum_exp, normalise};
