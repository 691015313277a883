//! DiffPIR (Zhu et al. 2023, "Denoising Diffusion Models for Plug-and-Play Image Restoration",
//! Algorithm 1): half-quadratic splitting between the denoiser and the data.
//! 1. x̂_0 = Tweedie estimate of x_t;
//! 2. data step (their eq. 13): z = argmin_z ‖y − A z‖² + ρ_t ‖z − x̂_0‖², ρ_t = λ σ_n²/σ̄_t²,
//!    σ̄_t² = (1 − ᾱ_t)/ᾱ_t — in closed form when A has `solve_normal`, by conjugate gradients
//!    for other linear A, and by gradient steps for non-linear A. It is the proximal step
//!    z = argmin_z −log p(y | z) + λ/(2σ̄_t²) ‖z − x̂_0‖² of Gaussian noise (both sides divided
//!    by σ_n²/… ); for any other noise model (Poisson, Student-t) that proximal step is taken by
//!    gradient iterations with backtracking on −log p(y | z) itself ([`DiffPir::likelihood`]);
//! 3. ε̂ = (x_t − √ᾱ_t z)/√(1 − ᾱ_t) and x_prev = √ᾱ_prev z + √(1 − ᾱ_prev)(√(1 − ζ) ε̂ + √ζ w).

use burn::prelude::*;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::diffusion::Transition;

use super::{NoiseSource, Sampler, StepOutput, tweedie_x0};
use crate::likelihood::{Likelihood, observed_for_batch};
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
    /// Non-Gaussian noise: the data step is the proximal step on −log p(y | z) of this
    /// likelihood (`op`, `y` and `sigma_n` are then unused).
    pub likelihood: Option<Box<dyn Likelihood>>,
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

/// The box the proximal step keeps z in: the data range, minus a sliver at −1 where a count
/// model's intensity (z + 1)/2 would vanish and its log-density stop being smooth.
const BOX: (f64, f64) = (-1.0 + 1e-4, 1.0);

/// z = argmin_{z ∈ BOX} −log p(y | z) + (w/2)‖z − x0‖², per sample, by `iters` projected
/// gradient steps from z = clamp(x0) with a backtracking step size on the batch's summed
/// objective f: a step s is taken when f(z⁺) ≤ f(z) + ⟨∇f, z⁺ − z⟩ + ‖z⁺ − z‖²/(2s) (the
/// quadratic upper bound of projected gradient descent; Beck 2017, §10.4.2), else halved, and
/// tried doubled at the next iteration. Any noise model works: only log p and its gradient are
/// used.
pub fn prox_log_likelihood(lik: &dyn Likelihood, x0: Tensor<4>, w: f64, iters: usize) -> Tensor<4> {
    let device = x0.device();
    let ad = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    let x0 = Tensor::<4>::from_data(x0.into_data(), &ad);
    let objective = |z: Tensor<4>| {
        lik.log_prob(z.clone()).sum().neg() + (z - x0.clone()).square().sum().mul_scalar(0.5 * w)
    };
    let scalar = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
    let mut z = x0.clone().detach().clamp(BOX.0, BOX.1);
    let mut step = (1.0 / w).min(1.0);
    for _ in 0..iters {
        let zg = z.clone().require_grad();
        let f = objective(zg.clone());
        let f0 = scalar(f.clone().detach());
        let Some(g) = zg.grad(&f.backward()) else {
            break;
        };
        let g = Tensor::<4>::from_data(g.into_data(), &ad);
        let mut accepted = false;
        for _ in 0..40 {
            let cand = (z.clone() - g.clone().mul_scalar(step)).clamp(BOX.0, BOX.1);
            let d = cand.clone() - z.clone();
            let bound = f0
                + scalar((g.clone() * d.clone()).sum())
                + scalar(d.clone().square().sum()) / (2.0 * step);
            let fc = scalar(objective(cand.clone()).detach());
            if fc.is_finite() && fc <= bound + 1e-9 * f0.abs() {
                let moved = scalar(d.abs().max()) > 0.0;
                z = cand;
                accepted = moved;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
        step *= 2.0;
    }
    Tensor::from_data(z.detach().into_data(), &device)
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
        let z = match &self.likelihood {
            Some(lik) => {
                prox_log_likelihood(lik.as_ref(), x0, self.lambda / sigma_bar2, self.grad_steps)
            }
            None => self.data_step(x0, rho),
        };
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
