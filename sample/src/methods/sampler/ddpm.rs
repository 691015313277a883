//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), written through x̂_0 as in eq. (7):
//! x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z. On a respaced subsequence of timesteps it is the respaced
//! chain of iDDPM §4 (β'_t = 1 − ᾱ_t/ᾱ_prev).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;
use tweedie_core::elbo::ModelVariance;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};

/// DDPM with a fixed variance: β̃_t ("small", the default) or β_t ("large").
#[derive(Debug, Clone, Copy)]
pub struct Ddpm {
    pub variance: ModelVariance,
    /// Clamp x̂_0 to [−1, 1] before forming the mean.
    pub clip: bool,
}

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let x0 = tweedie_x0(tr, x_t.clone(), eps, self.clip);
        let mean = tr.posterior_mean(x_t.clone(), x0.clone());
        let x_prev = match tr.t_prev {
            None => mean,
            Some(_) => {
                let var = match self.variance {
                    ModelVariance::Small => tr.posterior_variance(),
                    ModelVariance::Large => tr.beta(),
                };
                let z = noise.normal(x_t.dims(), &x_t.device());
                mean + z.mul_scalar(var.sqrt())
            }
        };
        StepOutput::new(x_prev, x0)
    }
}
