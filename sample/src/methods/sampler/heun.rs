//! The probability-flow ODE solved with Heun's second-order method (Karras et al. 2022,
//! Algorithm 1). In the variables x̄ = x/√ᾱ and σ = √((1 − ᾱ)/ᾱ) the ODE of DDPM's VP process is
//! dx̄/dσ = ε(x, t) (Song et al. 2021, DDIM §4.3, eq. 14). An Euler step of it is DDIM with η = 0;
//! Heun adds a corrector with a second evaluation at the new point (none on the last step, to σ = 0).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};

#[derive(Debug, Clone, Copy)]
pub struct Heun {
    /// Clamp the returned x̂_0 to [−1, 1] (the ODE itself is integrated unclipped).
    pub clip: bool,
}

fn sigma(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

impl Sampler for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        model: &dyn Denoiser,
        _noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let b = x_t.dims()[0];
        let x0 = tweedie_x0(tr, x_t.clone(), eps.clone(), self.clip);
        let (s_cur, s_next) = (sigma(tr.alpha_bar), sigma(tr.alpha_bar_prev));
        let xbar = x_t.div_scalar(tr.alpha_bar.sqrt());
        let euler = xbar.clone() + eps.clone().mul_scalar(s_next - s_cur);
        let Some(t_prev) = tr.t_prev else {
            // Last step, to σ = 0 (ᾱ = 1): Euler, x = x̄.
            return StepOutput::new(euler.mul_scalar(tr.alpha_bar_prev.sqrt()), x0);
        };
        let x_next = euler.mul_scalar(tr.alpha_bar_prev.sqrt());
        let eps_next = model.eps(x_next, &vec![t_prev; b]);
        let xbar_next = xbar + (eps + eps_next).mul_scalar(0.5 * (s_next - s_cur));
        StepOutput {
            x_prev: xbar_next.mul_scalar(tr.alpha_bar_prev.sqrt()),
            x0,
            extra_nfe: 1,
        }
    }
}
