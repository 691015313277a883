//! Preconditioning of the ε-network (EDM, Karras et al. 2022, §5 and Table 1, written for the
//! variance-preserving process x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε):
//!
//!   ε̂(x_t, t) = c_skip (x_t − √ᾱ μ) + c_out F(c_in (x_t − √ᾱ μ), t),
//!   v = ᾱ σ² + 1 − ᾱ,  c_in = 1/√v,  c_skip = √(1 − ᾱ)/v,  c_out = √ᾱ σ/√v.
//!
//! For data N(μ, σ²) the first term is exactly E[ε | x_t], so the network F only learns how the
//! data depart from that Gaussian, and its input and its target both have unit variance at every
//! t. Without it, a young network's x̂_0 at large t is (x_t − √(1 − ᾱ) ε̂)/√ᾱ with an
//! ε̂-error amplified by 1/√ᾱ (up to 160× at t = T): its samples start from garbage that
//! clipping turns into grey backgrounds. The model is still an ε-predictor: samplers, guidance
//! and the ELBO use it unchanged.

use serde::{Deserialize, Serialize};

use crate::checkpoint::ScheduleSpec;
use crate::error::CoreError;

/// The data moments and the noise schedule the preconditioning is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precondition {
    /// Mean of the training pixels on the model's [−1, 1] scale.
    pub mean: f64,
    /// Their standard deviation.
    pub std: f64,
    /// The schedule whose ᾱ_t the coefficients use.
    pub schedule: ScheduleSpec,
}

/// Per-timestep coefficients (c_in, c_skip, c_out, √ᾱ μ).
#[derive(Debug, Clone)]
pub struct PrecondTable {
    pub c_in: Vec<f64>,
    pub c_skip: Vec<f64>,
    pub c_out: Vec<f64>,
    pub shift: Vec<f64>,
}

impl Precondition {
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(self.mean.is_finite() && self.std > 0.0 && self.std.is_finite()) {
            return Err(CoreError::InvalidConfig(format!(
                "preconditioning needs a finite data mean and a positive std, got {} and {}",
                self.mean, self.std
            )));
        }
        self.schedule.build().map(|_| ())
    }

    pub fn table(&self) -> Result<PrecondTable, CoreError> {
        let s = self.schedule.build()?;
        let var = self.std * self.std;
        let mut t = PrecondTable {
            c_in: Vec::new(),
            c_skip: Vec::new(),
            c_out: Vec::new(),
            shift: Vec::new(),
        };
        for &ab in &s.alphas_cumprod {
            let v = ab * var + 1.0 - ab;
            t.c_in.push(1.0 / v.sqrt());
            t.c_skip.push((1.0 - ab).sqrt() / v);
            t.c_out.push(ab.sqrt() * self.std / v.sqrt());
            t.shift.push(ab.sqrt() * self.mean);
        }
        Ok(t)
    }
}
