//! Diffusion posterior sampling (Chung et al. 2023, "DPS", Algorithm 1): an ancestral DDPM step
//! from x_t, then a step along ∇_{x_t} of the likelihood at the Tweedie estimate x̂_0(x_t), the
//! gradient taken through the network (one forward and one vector-Jacobian product per step).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{Ddpm, Guidance, NoiseSource, Sampler, StepOutput, guided_step, tweedie_x0};
use crate::likelihood::Likelihood;

/// The guidance step's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DpsStep {
    /// The paper's rule (its Appendix C.2): x_prev −= ζ' ∇_{x_t} ‖y − A(x̂_0)‖², with
    /// ζ_t = ζ' / ‖y − A(x̂_0)‖, i.e. a step of 2ζ' along −∇‖y − A(x̂_0)‖ (the non-squared norm);
    /// for Poisson counts the norm is the paper's Λ-weighted one (§3.2, Algorithm 2), see
    /// [`crate::noise::NoiseModel::residual_norm`]. Needs an observation likelihood.
    ResidualNorm { zeta: f64 },
    /// ζ ∇_{x_t} log p(y | x̂_0(x_t)) as a likelihood score folded into ε
    /// ([`super::Guidance::Score`]): without clipping, x_prev += ζ β'_t/√(1 − β'_t) times it, so
    /// that ζ = 1 is Bayes' rule on the scores (x_{t−1} ≈ (x_t + β_t ∇ log p_t(x_t | y))/√α_t)
    /// with the Tweedie approximation p(y | x_t) ≈ p(y | x̂_0(x_t)).
    LogLikelihood { zeta: f64 },
}

pub struct Dps {
    pub likelihood: Box<dyn Likelihood>,
    pub rule: DpsStep,
    /// The unconditional step.
    pub ddpm: Ddpm,
}

impl Sampler for Dps {
    fn name(&self) -> &'static str {
        "dps"
    }

    fn needs_grad(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        // x̂_0 with its graph back to x_t (unclipped: clipping would cut the gradient).
        let x0 = tweedie_x0(tr, x_t.clone(), eps.clone(), false);
        let (objective, how) = match self.rule {
            DpsStep::ResidualNorm { zeta } => {
                let r = self
                    .likelihood
                    .residual_norm(x0.clone())
                    .expect("DPS's residual-norm rule needs an observation likelihood");
                // −2ζ' Σ_b ‖r_b‖: ascending it descends every sample's residual norm.
                (r.sum().mul_scalar(-2.0 * zeta), Guidance::Shift)
            }
            DpsStep::LogLikelihood { zeta } => (
                self.likelihood.log_prob(x0.clone()).sum().mul_scalar(zeta),
                Guidance::Score,
            ),
        };
        guided_step(
            &mut self.ddpm,
            tr,
            x_t,
            eps,
            x0,
            objective,
            how,
            model,
            noise,
        )
    }
}
