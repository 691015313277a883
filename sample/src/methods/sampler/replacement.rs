//! The replacement baseline for inpainting (Song et al. 2021, score SDE §5, and RePaint without
//! resampling, Lugmayr et al. 2022): an unconditional step, then the observed pixels are replaced
//! by the observation noised to the new level, x_prev ← m ⊙ (√ᾱ_prev y + √(1 − ᾱ_prev) z) + (1 − m) ⊙ x_prev.

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput};
use crate::likelihood::observed_for_batch;
use crate::operator::{ForwardOperator, Mask};

pub struct Replacement<S: Sampler> {
    pub inner: S,
    pub mask: Mask,
    /// The observation on the model scale, `[1 or B, C, H, W]` (values at hidden pixels unused).
    pub y: Tensor<4>,
}

impl<S: Sampler> Sampler for Replacement<S> {
    fn name(&self) -> &'static str {
        "replacement"
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let out = self.inner.step(tr, x_t, eps, model, noise);
        let shape = out.x_prev.dims();
        let device = out.x_prev.device();
        let y = observed_for_batch(&self.y, shape[0], &device);
        let mut y_t = y.mul_scalar(tr.alpha_bar_prev.sqrt());
        if tr.t_prev.is_some() {
            y_t = y_t
                + noise
                    .normal(shape, &device)
                    .mul_scalar((1.0 - tr.alpha_bar_prev).sqrt());
        }
        let m = self.mask.apply(Tensor::ones(shape, &device));
        let x_prev = y_t * m.clone() + out.x_prev * m.neg().add_scalar(1.0);
        StepOutput {
            x_prev,
            x0: out.x0,
            extra_nfe: out.extra_nfe,
        }
    }
}
