//! ΠGDM (Song, Vahdat, Mardani & Kautz 2023, "Pseudoinverse-guided diffusion models", eq. 8):
//! p(y | x_t) ≈ N(y; A x̂_0(x_t), r_t² AAᵀ + σ² I) with r_t² = 1 − ᾱ_t (their r_t² =
//! σ_t²/(1 + σ_t²) in VP units), whose score is the vector-Jacobian product
//! g = ((y − A x̂_0)ᵀ (r_t² AAᵀ + σ² I)⁻¹ A ∂x̂_0/∂x_t)ᵀ, closed form for AAᵀ = c·I, by conjugate
//! gradients for other linear A.
//! The guided step folds `weight`·g into ε as a likelihood score ([`super::Guidance::Score`]):
//! unclipped, an ancestral DDPM step plus β'_t/√(1 − β'_t)·g, like
//! [`super::DpsStep::LogLikelihood`] (DPS uses σ² alone: ΠGDM adds the prior's uncertainty).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{Ddpm, Guidance, NoiseSource, Sampler, StepOutput, guided_step, tweedie_x0};
use crate::likelihood::observed_for_batch;
use crate::operator::{ForwardOperator, conjugate_gradients};

/// Conjugate-gradient iterations for (r² AAᵀ + σ²I)⁻¹ when AAᵀ is not c·I (σ² > 0 keeps the
/// system well conditioned: 50 reach rounding level on 28×28 blur).
const CG_ITERS: usize = 50;

pub struct PiGdm {
    pub op: Box<dyn ForwardOperator>,
    /// The observation on the model scale.
    pub y: Tensor<4>,
    /// σ of the Gaussian observation noise on the model scale (2 σ_y).
    pub sigma: f64,
    /// Guidance weight (1: the approximation taken at face value).
    pub weight: f64,
    pub ddpm: Ddpm,
}

impl Sampler for PiGdm {
    fn name(&self) -> &'static str {
        "pigdm"
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
        let x0 = tweedie_x0(tr, x_t.clone(), eps.clone(), false);
        let ax0 = self.op.apply(x0.clone());
        let b = ax0.dims()[0];
        let device = ax0.device();
        let y = observed_for_batch(&self.y, b, &device);
        let r2 = 1.0 - tr.alpha_bar;
        let s2 = self.sigma * self.sigma;
        // v = (r² AAᵀ + σ²I)⁻¹ (y − A x̂_0), held constant: ∇_{x_t} ⟨v, A x̂_0⟩ = g. Closed form
        // when AAᵀ = c·I; else conjugate gradients on the observation space (e.g. blur).
        let residual = (y - ax0.clone()).detach();
        let v = match self.op.gram_scale() {
            Some(c) => residual.div_scalar(r2 * c + s2),
            None => {
                let op = self.op.as_ref();
                let plain = device.clone().inner();
                let res = Tensor::<4>::from_data(residual.into_data(), &plain);
                let v = conjugate_gradients(
                    |u| {
                        let atu = op.adjoint(u.clone()).expect("ΠGDM needs a linear operator");
                        op.apply(atu).mul_scalar(r2) + u.mul_scalar(s2)
                    },
                    res,
                    CG_ITERS,
                );
                Tensor::from_data(v.into_data(), &device)
            }
        };
        let objective = (v * ax0).sum().mul_scalar(self.weight);
        guided_step(
            &mut self.ddpm,
            tr,
            x_t,
            eps,
            x0,
            objective,
            Guidance::Score,
            model,
            noise,
        )
    }
}
