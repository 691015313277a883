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
use crate::noise::per_sample_sum;
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

/// The proximal iterations stop for an image once an accepted step moves no pixel by more
/// than this (model scale; 1e-5 is 1/200,000 of the data range).
pub const PROX_TOL: f64 = 1e-5;

/// z = argmin_{z ∈ BOX} f(z) = −log p(y | z) + (w/2)‖z − x0‖², per sample, by at most `iters`
/// projected, diagonally preconditioned gradient steps from z = clamp(x0):
/// z⁺ = clamp(z − s D⁻¹ ∇f) with D = w plus the likelihood's curvature bound
/// ([`Likelihood::curvature`]) and a step scale s per image, accepted when
/// f(z⁺) ≤ f(z) + ⟨∇f, z⁺ − z⟩ + ‖z⁺ − z‖²_D/(2s) (the quadratic upper bound of projected gradient descent in the D-metric;
/// Beck 2017, §10.4.2), else halved; s starts at 1 and is doubled after a step, up to 1. With the
/// identity (or a mask) D is the exact Hessian of a separable f and the step is Newton's, so
/// Poisson counts converge in a few iterations whatever the stiffness of a dark pixel
/// (curvature y/(z + 1)²); blur gets the separable bound of De Pierro 1995. Without a curvature
/// (non-linear A) D = w. The change of f is computed per image without constants
/// ([`Likelihood::log_prob_change`]) and compared in f64; an image stops when a step moves no
/// pixel by more than [`PROX_TOL`].
pub fn prox_log_likelihood(lik: &dyn Likelihood, x0: Tensor<4>, w: f64, iters: usize) -> Tensor<4> {
    let device = x0.device();
    let ad = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    let b = x0.dims()[0];
    let x0 = Tensor::<4>::from_data(x0.into_data(), &ad);
    let per_image = |v: Vec<f64>| tweedie_core::diffusion::per_sample(&v, &ad);
    let host = |t: Tensor<1>| -> Vec<f64> {
        tweedie_core::host_values(t)
            .into_iter()
            .map(f64::from)
            .collect()
    };
    let mut z = x0.clone().detach().clamp(BOX.0, BOX.1);
    let mut scale = vec![1.0f64; b];
    let mut active = vec![true; b];
    for _ in 0..iters {
        if !active.iter().any(|a| *a) {
            break;
        }
        let zg = z.clone().require_grad();
        let f = lik.log_prob(zg.clone()).sum().neg()
            + (zg.clone() - x0.clone()).square().sum().mul_scalar(0.5 * w);
        let Some(g) = zg.grad(&f.backward()) else {
            break;
        };
        let g = Tensor::<4>::from_data(g.into_data(), &ad);
        let d_metric = match lik.curvature(z.clone()) {
            Some(c) => c.detach().clamp_min(0.0).add_scalar(w),
            None => z.zeros_like().add_scalar(w),
        };
        let dir = g.clone() / d_metric.clone();
        let mut pending: Vec<bool> = active.clone();
        for _ in 0..40 {
            if !pending.iter().any(|p| *p) {
                break;
            }
            let s: Vec<f64> = (0..b)
                .map(|i| if pending[i] { scale[i] } else { 0.0 })
                .collect();
            let cand = (z.clone() - dir.clone() * per_image(s)).clamp(BOX.0, BOX.1);
            let d = cand.clone() - z.clone();
            // f(z⁺) − f(z) = −Δ log p + (w/2) Σ d (d + 2 (z − x0)).
            let change = host(
                lik.log_prob_change(cand.clone(), z.clone()).neg()
                    + per_sample_sum(
                        d.clone() * (d.clone() + (z.clone() - x0.clone()).mul_scalar(2.0)),
                    )
                    .mul_scalar(0.5 * w),
            );
            let linear = host(per_sample_sum(g.clone() * d.clone()));
            let quad = host(per_sample_sum(d.clone().square() * d_metric.clone()));
            let moved = host(per_sample_sum(
                d.clone().abs().clamp_min(PROX_TOL) - PROX_TOL,
            ));
            let mut accept = vec![0.0f64; b];
            for i in 0..b {
                if !pending[i] {
                    continue;
                }
                let bound = linear[i] + quad[i] / (2.0 * scale[i]);
                // Slack for the f32 sums: a millionth of the predicted change.
                if change[i].is_finite() && change[i] <= bound + 1e-6 * bound.abs() {
                    accept[i] = 1.0;
                    pending[i] = false;
                    active[i] = moved[i] > 0.0;
                    scale[i] = (2.0 * scale[i]).min(1.0);
                } else {
                    scale[i] *= 0.5;
                }
            }
            if accept.iter().any(|a| *a > 0.0) {
                z = z.clone() + d * per_image(accept);
            }
        }
        // An image whose step was never accepted is as converged as f32 lets it be.
        for i in 0..b {
            if pending[i] {
                active[i] = false;
            }
        }
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
