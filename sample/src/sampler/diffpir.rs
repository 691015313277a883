//! DiffPIR (Zhu et al. 2023, "Denoising Diffusion Models for Plug-and-Play Image Restoration",
//! Algorithm 1): half-quadratic splitting between the denoiser and the data.
//! 1. x̂_0 = Tweedie estimate of x_t;
//! 2. data step (their eq. 13): z = argmin_z ‖y − A z‖² + ρ_t ‖z − x̂_0‖², ρ_t = λ σ_n²/σ̄_t²,
//!    σ̄_t² = (1 − ᾱ_t)/ᾱ_t — in closed form when A has `solve_normal`, by conjugate gradients
//!    for other linear A, and by gradient steps for non-linear A;
//! 3. ε̂ = (x_t − √ᾱ_t z)/√(1 − ᾱ_t) and x_prev = √ᾱ_prev z + √(1 − ᾱ_prev)(√(1 − ζ) ε̂ + √ζ w).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};
use crate::likelihood::observed_for_batch;
use crate::operator::ForwardOperator;

pub struct DiffPir {
    pub op: Box<dyn ForwardOperator>,
    /// The observation on the model scale.
    pub y: Tensor<4>,
    /// σ_n of the Gaussian observation noise on the model's [−1, 1] scale (2 σ_y).
    pub sigma_n: f64,
    /// λ: weight of the prior in the data step (paper: ~1 to 10).
    pub lambda: f64,
    /// ζ ∈ [0, 1]: share of fresh noise in the re-noising (0: deterministic, DDIM-like).
    pub zeta: f64,
    /// Iterations of the data step when A has no closed form (conjugate gradients for linear A,
    /// gradient steps otherwise).
    pub grad_steps: usize,
    /// Clamp x̂_0 to [−1, 1] before the data step (a trained network's x̂_0 is far off at large t).
    pub clip: bool,
}

impl DiffPir {
    /// z = argmin ‖y − A z‖² + ρ ‖z − x0‖².
    pub fn data_step(&self, x0: Tensor<4>, rho: f64) -> Tensor<4> {
        let device = x0.device();
        let y = observed_for_batch(&self.y, x0.dims()[0], &device);
        if let Some(aty) = self.op.adjoint(y.clone()) {
            // Linear A: closed form, or conjugate gradients on the (SPD) normal equations.
            let v = aty + x0.clone().mul_scalar(rho);
            return crate::operator::solve_normal(self.op.as_ref(), v, rho, self.grad_steps.max(1));
        }
        // Gradient descent on f(z) = ‖y − A z‖² + ρ‖z − x0‖² from z = x0, through autodiff; the
        // step 1/(2(L + ρ)) with L = 1 bounds ‖A‖² for the contractive operators here.
        let ad = if device.is_autodiff() {
            device.clone()
        } else {
            device.clone().autodiff()
        };
        let (x0, y) = (
            Tensor::<4>::from_data(x0.into_data(), &ad),
            Tensor::<4>::from_data(y.into_data(), &ad),
        );
        let mut z = x0.clone();
        let lr = 0.5 / (1.0 + rho);
        for _ in 0..self.grad_steps {
            let zg = z.clone().detach().require_grad();
            let f = (y.clone() - self.op.apply(zg.clone())).square().sum()
                + (zg.clone() - x0.clone()).square().sum().mul_scalar(rho);
            let g = zg.grad(&f.backward()).expect("gradient of the data term");
            z = zg.detach() - Tensor::from_data(g.into_data(), &ad).mul_scalar(lr);
        }
        Tensor::from_data(z.detach().into_data(), &device)
    }
}

impl Sampler for DiffPir {
    fn name(&self) -> &'static str {
        "diffpir"
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
        let sigma_bar2 = (1.0 - tr.alpha_bar) / tr.alpha_bar;
        let rho = self.lambda * self.sigma_n * self.sigma_n / sigma_bar2;
        let z = self.data_step(x0, rho);
        if tr.t_prev.is_none() {
            return StepOutput::new(z.clone(), z);
        }
        let eps_hat = (x_t.clone() - z.clone().mul_scalar(tr.alpha_bar.sqrt()))
            .div_scalar((1.0 - tr.alpha_bar).sqrt());
        let mut dir = eps_hat.mul_scalar((1.0 - self.zeta).sqrt());
        if self.zeta > 0.0 {
            dir = dir
                + noise
                    .normal(x_t.dims(), &x_t.device())
                    .mul_scalar(self.zeta.sqrt());
        }
        let x_prev = z.clone().mul_scalar(tr.alpha_bar_prev.sqrt())
            + dir.mul_scalar((1.0 - tr.alpha_bar_prev).sqrt());
        StepOutput::new(x_prev, z)
    }
}
