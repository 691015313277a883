//! The likelihood seam: log p(y | x_0) per sample, differentiable in x_0. Guidance evaluates it
//! at the Tweedie estimate x̂_0(x_t) (p(y | x_t) ≈ p(y | x̂_0(x_t)), Chung et al. 2023).

use burn::prelude::*;

use crate::noise::NoiseModel;
use crate::operator::ForwardOperator;

pub trait Likelihood {
    /// log p(y | x_0) for each sample of `x0` `[B, C, H, W]` → `[B]`.
    fn log_prob(&self, x0: Tensor<4>) -> Tensor<1>;
    /// DPS's residual norm per sample, for likelihoods of an observation: ‖y − A(x_0)‖₂ for
    /// additive noise, the Λ-weighted norm of the paper's Poisson rule for counts
    /// ([`crate::noise::NoiseModel::residual_norm`]).
    fn residual_norm(&self, _x0: Tensor<4>) -> Option<Tensor<1>> {
        None
    }
    /// A twist for p(y | x_t) at noise level ᾱ_t from x̂_0(x_t). The default is the plain
    /// Tweedie look-ahead p(y | x̂_0); an observation with Gaussian noise widens it by the
    /// uncertainty of x̂_0 as ΠGDM does (Song et al. 2023, eq. 8): N(y; A x̂_0, σ² + r_t² c) with
    /// r_t² = 1 − ᾱ_t and c the mean diagonal of AAᵀ. For a unit-variance Gaussian prior and
    /// AAᵀ = c·I this is p(y | x_t) exactly; the plain look-ahead is too sharp at large t, which
    /// makes particle weights heavy-tailed.
    fn log_prob_at(&self, x0: Tensor<4>, _alpha_bar: f64) -> Tensor<1> {
        self.log_prob(x0)
    }
    /// log p(y | new) − log p(y | old) per sample, computed so that constants cancel exactly.
    fn log_prob_change(&self, new: Tensor<4>, old: Tensor<4>) -> Tensor<1> {
        self.log_prob(new) - self.log_prob(old)
    }
    /// A diagonal D ⪰ −∇² log p(y | x) at `x0` (per pixel), where one is known: a
    /// preconditioner for proximal steps.
    fn curvature(&self, _x0: Tensor<4>) -> Option<Tensor<4>> {
        None
    }
}

/// y = A(x) + noise, with y observed.
pub struct Observation {
    pub op: Box<dyn ForwardOperator>,
    pub noise: Box<dyn NoiseModel>,
    /// The observation, `[1, …]` (broadcast over the batch) or one per sample.
    pub y: Tensor<4>,
}

/// `y` repeated over a batch of `b` (unless it already has `b` rows), on `device`.
pub fn observed_for_batch(y: &Tensor<4>, b: usize, device: &Device) -> Tensor<4> {
    let y = if y.dims()[0] == b {
        y.clone()
    } else {
        y.clone().repeat_dim(0, b)
    };
    y.to_device(device)
}

/// ∇ₓ log p(y | x) per sample `[B, C, H, W]`, on `x`'s device (by autodiff through the
/// likelihood alone, on an autodiff copy when `x`'s device has none: no network is involved).
pub fn log_likelihood_grad(lik: &dyn Likelihood, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let ad = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    let xg = Tensor::<4>::from_data(x.into_data(), &ad).require_grad();
    let grads = lik.log_prob(xg.clone()).sum().backward();
    let g = xg.grad(&grads).expect("log p(y | x) depends on x");
    Tensor::from_data(g.into_data(), &device)
}

impl Observation {
    /// (y over the batch, A(x_0)).
    fn observed_and_predicted(&self, x0: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mean = self.op.apply(x0);
        let y = observed_for_batch(&self.y, mean.dims()[0], &mean.device());
        (y, mean)
    }
}

impl Likelihood for Observation {
    fn log_prob(&self, x0: Tensor<4>) -> Tensor<1> {
        let (y, mean) = self.observed_and_predicted(x0);
        self.noise.log_prob(y, mean)
    }

    fn log_prob_at(&self, x0: Tensor<4>, alpha_bar: f64) -> Tensor<1> {
        let (Some(s), Some(c)) = (self.noise.gaussian_sigma(), self.op.mean_gram_diagonal()) else {
            return self.log_prob(x0);
        };
        // The Gaussian noise model with the widened variance (σ_y is stated on [0, 1]: ×½).
        let widened = crate::noise::Gaussian {
            sigma_y: (s * s + (1.0 - alpha_bar) * c).sqrt() / 2.0,
        };
        let (y, mean) = self.observed_and_predicted(x0);
        widened.log_prob(y, mean)
    }

    fn log_prob_change(&self, new: Tensor<4>, old: Tensor<4>) -> Tensor<1> {
        let (y, new) = self.observed_and_predicted(new);
        self.noise.log_prob_change(y, new, self.op.apply(old))
    }

    /// Aᵀ(c ⊙ A1) with c the noise's per-pixel curvature at A x0: for A with non-negative
    /// entries this bounds the Hessian AᵀCA (a non-negative symmetric M satisfies
    /// M ⪯ diag(M1); De Pierro 1995, Erdoğan & Fessler 1999's separable surrogates); exact for
    /// masks and the identity.
    fn curvature(&self, x0: Tensor<4>) -> Option<Tensor<4>> {
        let (y, mean) = self.observed_and_predicted(x0.clone());
        let c = self.noise.curvature(y, mean)?;
        let rows = self.op.apply(x0.ones_like());
        self.op.adjoint(c * rows)
    }

    fn residual_norm(&self, x0: Tensor<4>) -> Option<Tensor<1>> {
        let (y, mean) = self.observed_and_predicted(x0);
        Some(self.noise.residual_norm(y, mean))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{Gaussian, Poisson, StudentT};
    use crate::operator::{AvgPool, GaussianBlur, Mask, Saturate};
    use tweedie_core::rng::Rng;

    /// The autodiff gradient of log p(y | x) against central finite differences (f32: h = 1e-2,
    /// relative tolerance 2 %) at a few coordinates.
    fn check_gradient(lik: &Observation, x: Vec<f32>, shape: [usize; 4], name: &str) {
        let ad = Device::flex().autodiff();
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &ad).require_grad();
        let lp = lik.log_prob(xt.clone()).sum();
        let grads = lp.backward();
        let g = tweedie_core::host_values(xt.grad(&grads).expect("gradient"));
        let plain = Device::flex();
        let f = |v: &[f32]| -> f64 {
            let t = Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &plain);
            lik.log_prob(t).sum().into_scalar::<f32>() as f64
        };
        let h = 1e-2f32;
        for i in [0, 5, x.len() / 2, x.len() - 1] {
            let (mut up, mut dn) = (x.clone(), x.clone());
            up[i] += h;
            dn[i] -= h;
            let fd = (f(&up) - f(&dn)) / (2.0 * h as f64);
            let tol = 0.02 * fd.abs().max(g[i].abs() as f64) + 1e-2;
            assert!(
                (g[i] as f64 - fd).abs() <= tol,
                "{name}[{i}]: autodiff {} vs finite differences {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn likelihood_gradients_match_finite_differences() {
        let shape = [1, 1, 8, 8];
        let mut r = Rng::new(2);
        let x: Vec<f32> = r
            .normals(64)
            .into_iter()
            .map(|v| (v * 0.5).clamp(-0.95, 0.95))
            .collect();
        let truth: Vec<f32> = r
            .normals(64)
            .into_iter()
            .map(|v| (v * 0.5).clamp(-0.95, 0.95))
            .collect();
        let dev = Device::flex();
        let xt = Tensor::<4>::from_data(TensorData::new(truth, shape), &dev);
        let cases: Vec<(Box<dyn ForwardOperator>, Box<dyn NoiseModel>)> = vec![
            (
                Box::new(AvgPool { factor: 2 }),
                Box::new(Gaussian { sigma_y: 0.1 }),
            ),
            (
                Box::new(GaussianBlur {
                    size: 3,
                    sigma: 1.0,
                }),
                Box::new(StudentT {
                    nu: 3.0,
                    scale: 0.1,
                }),
            ),
            (
                Box::new(Mask::random(8, 8, 0.5, 3)),
                Box::new(Poisson { rate: 50.0 }),
            ),
            (
                Box::new(Saturate { gain: 2.0 }),
                Box::new(Gaussian { sigma_y: 0.2 }),
            ),
        ];
        for (op, noise) in cases {
            let name = format!("{} + {}", op.name(), noise.name());
            let y = noise.sample(op.apply(xt.clone()), &mut r);
            let lik = Observation { op, noise, y };
            check_gradient(&lik, x.clone(), shape, &name);
        }
    }

    #[test]
    fn log_densities_are_normalised_in_one_dimension() {
        // ∫ p(y | m) dy = 1 (Riemann sum) for the continuous models; Σ_y p(y | m) = 1 for Poisson.
        let dev = Device::flex();
        let m = Tensor::<4>::from_data(TensorData::new(vec![0.2f32], [1, 1, 1, 1]), &dev);
        let models: Vec<Box<dyn NoiseModel>> = vec![
            Box::new(Gaussian { sigma_y: 0.1 }),
            Box::new(StudentT {
                nu: 4.0,
                scale: 0.05,
            }),
        ];
        for nm in models {
            let (lo, hi, n) = (-6.0f64, 6.0, 24_000);
            let dy = (hi - lo) / n as f64;
            let ys: Vec<f32> = (0..n)
                .map(|i| (lo + (i as f64 + 0.5) * dy) as f32)
                .collect();
            let y = Tensor::<4>::from_data(TensorData::new(ys, [n, 1, 1, 1]), &dev);
            let lp = tweedie_core::host_values(nm.log_prob(y, m.clone().repeat_dim(0, n)));
            let total: f64 = lp.iter().map(|l| (*l as f64).exp() * dy).sum();
            assert!((total - 1.0).abs() < 2e-3, "{}: ∫p = {total}", nm.name());
        }
        let p = Poisson { rate: 20.0 };
        let ys: Vec<f32> = (0..80).map(|k| k as f32).collect();
        let y = Tensor::<4>::from_data(TensorData::new(ys, [80, 1, 1, 1]), &dev);
        let lp = tweedie_core::host_values(p.log_prob(y, m.repeat_dim(0, 80)));
        let total: f64 = lp.iter().map(|l| (*l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "poisson: Σp = {total}");
    }

    #[test]
    fn noise_draws_have_the_stated_scale() {
        let dev = Device::flex();
        let mut r = Rng::new(9);
        let m = Tensor::<4>::zeros([1, 1, 100, 100], &dev);
        let v = tweedie_core::host_values(Gaussian { sigma_y: 0.05 }.sample(m.clone(), &mut r));
        let sd = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(
            (sd - 0.1).abs() < 0.004,
            "σ_y = 0.05 on [0, 1] is 0.1 on [−1, 1], got {sd}"
        );
        let c = tweedie_core::host_values(Poisson { rate: 40.0 }.sample(m.clone(), &mut r));
        let mean = c.iter().map(|x| *x as f64).sum::<f64>() / c.len() as f64;
        assert!(
            (mean - 20.0).abs() < 0.3,
            "Poisson mean at u = 0.5, rate 40: {mean}"
        );
        let t = tweedie_core::host_values(
            StudentT {
                nu: 5.0,
                scale: 0.05,
            }
            .sample(m, &mut r),
        );
        let var = t.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / t.len() as f64;
        // Var = s² ν/(ν − 2) with s = 0.1: 0.01 · 5/3.
        assert!((var - 0.01 * 5.0 / 3.0).abs() < 0.0025, "{var}");
    }
}
