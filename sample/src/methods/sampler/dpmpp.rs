//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order multistep
//! solver of the probability-flow ODE in the data-prediction form. With α = √ᾱ, σ = √(1 − ᾱ),
//! λ = log(α/σ) and h = λ_prev − λ_t:
//!   x_prev = (σ_prev/σ_t) x_t − α_prev (e^{−h} − 1) D,
//! with D = x̂_0 on the first step and D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0^{last}, r = h_last/h,
//! afterwards. The last step (to ᾱ = 1, λ = ∞) is first order: x_0 = x̂_0 ("lower order final").

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};

#[derive(Debug, Clone, Default)]
pub struct DpmSolverPp2m {
    /// Clamp x̂_0 to [−1, 1] before it enters the update.
    pub clip: bool,
    /// (x̂_0, h) of the previous step.
    last: Option<(Tensor<4>, f64)>,
}

impl DpmSolverPp2m {
    pub fn new(clip: bool) -> Self {
        Self { clip, last: None }
    }
}

impl Sampler for DpmSolverPp2m {
    fn name(&self) -> &'static str {
        "dpmpp2m"
    }

    fn reset(&mut self) {
        self.last = None;
    }

    fn step(
        &mut self,
        tr: &Transition,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        _model: &dyn Denoiser,
        _noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let x0 = tweedie_x0(tr, x_t.clone(), eps, self.clip);
        if tr.t_prev.is_none() {
            self.last = None;
            return StepOutput::new(x0.clone(), x0);
        }
        let (a_t, s_t) = (tr.alpha_bar.sqrt(), (1.0 - tr.alpha_bar).sqrt());
        let (a_p, s_p) = (tr.alpha_bar_prev.sqrt(), (1.0 - tr.alpha_bar_prev).sqrt());
        let h = (a_p / s_p).ln() - (a_t / s_t).ln();
        let d = match &self.last {
            None => x0.clone(),
            Some((x0_last, h_last)) => {
                let r = h_last / h;
                x0.clone().mul_scalar(1.0 + 0.5 / r) - x0_last.clone().mul_scalar(0.5 / r)
            }
        };
        let x_prev = x_t.mul_scalar(s_p / s_t) - d.mul_scalar(a_p * ((-h).exp() - 1.0));
        self.last = Some((x0.clone().detach(), h));
        StepOutput::new(x_prev, x0)
    }
}
