//! The diffusion formulas on tensors: forward noising, the Tweedie prediction, the posterior
//! q(x_{t−1} | x_t, x_0) and one reverse step. Coefficients come from [`NoiseSchedule`] (f64,
//! host) and are cast to f32 once, as per-sample `[B, 1, 1, 1]` tensors.

use burn::prelude::*;

use crate::schedule::NoiseSchedule;

/// A per-sample coefficient `[B, 1, 1, 1]` built from host values.
pub fn per_sample(values: &[f64], device: &Device) -> Tensor<4> {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Tensor::<4>::from_data(TensorData::new(v, [values.len(), 1, 1, 1]), device)
}

/// Gathers `coef[t_i]` for each sample i.
pub fn gather(coef: &[f64], t: &[usize], device: &Device) -> Tensor<4> {
    let v: Vec<f64> = t.iter().map(|&i| coef[i]).collect();
    per_sample(&v, device)
}

/// q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I): returns x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε   (DDPM eq. 4).
pub fn q_sample(s: &NoiseSchedule, x0: Tensor<4>, t: &[usize], eps: Tensor<4>) -> Tensor<4> {
    let device = x0.device();
    let ab: Vec<f64> = t.iter().map(|&i| s.alphas_cumprod[i]).collect();
    let a = per_sample(&ab.iter().map(|v| v.sqrt()).collect::<Vec<_>>(), &device);
    let b = per_sample(
        &ab.iter().map(|v| (1.0 - v).sqrt()).collect::<Vec<_>>(),
        &device,
    );
    x0 * a + eps * b
}

/// Tweedie's formula for ε-prediction: x̂_0 = (x_t − √(1 − ᾱ) ε̂) / √ᾱ   (DDPM eq. 15), with one
/// ᾱ per sample.
pub fn predict_x0(x_t: Tensor<4>, eps: Tensor<4>, alpha_bar: &[f64]) -> Tensor<4> {
    let device = x_t.device();
    let inv = per_sample(
        &alpha_bar.iter().map(|a| 1.0 / a.sqrt()).collect::<Vec<_>>(),
        &device,
    );
    let c = per_sample(
        &alpha_bar
            .iter()
            .map(|a| (1.0 / a - 1.0).sqrt())
            .collect::<Vec<_>>(),
        &device,
    );
    x_t * inv - eps * c
}

/// The inverse of [`predict_x0`]: ε = (x_t − √ᾱ x̂_0) / √(1 − ᾱ).
pub fn eps_from_x0(x_t: Tensor<4>, x0: Tensor<4>, alpha_bar: &[f64]) -> Tensor<4> {
    let device = x_t.device();
    let inv = per_sample(
        &alpha_bar
            .iter()
            .map(|a| 1.0 / (1.0 - a).sqrt())
            .collect::<Vec<_>>(),
        &device,
    );
    let c = per_sample(
        &alpha_bar
            .iter()
            .map(|a| (a / (1.0 - a)).sqrt())
            .collect::<Vec<_>>(),
        &device,
    );
    x_t * inv - x0 * c
}

/// A reverse transition between two (possibly non-adjacent) training steps t > t_prev, with
/// ᾱ_prev = 1 when t is the last step. With t_prev = t − 1 it is DDPM's; otherwise it is the
/// respaced chain of iDDPM §4 (β'_t = 1 − ᾱ_t / ᾱ_prev).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub t: usize,
    pub t_prev: Option<usize>,
    pub alpha_bar: f64,
    pub alpha_bar_prev: f64,
}

impl Transition {
    pub fn new(s: &NoiseSchedule, t: usize, t_prev: Option<usize>) -> Self {
        Self {
            t,
            t_prev,
            alpha_bar: s.alphas_cumprod[t],
            alpha_bar_prev: t_prev.map_or(1.0, |p| s.alphas_cumprod[p]),
        }
    }

    /// β'_t = 1 − ᾱ_t / ᾱ_prev.
    pub fn beta(&self) -> f64 {
        1.0 - self.alpha_bar / self.alpha_bar_prev
    }

    /// The posterior variance β̃ = β' (1 − ᾱ_prev) / (1 − ᾱ_t)   (DDPM eq. 7).
    pub fn posterior_variance(&self) -> f64 {
        self.beta() * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
    }

    /// μ̃(x_t, x̂_0) = β' √ᾱ_prev/(1 − ᾱ_t) · x̂_0 + (1 − ᾱ_prev) √(1 − β')/(1 − ᾱ_t) · x_t   (DDPM eq. 7).
    pub fn posterior_mean(&self, x_t: Tensor<4>, x0: Tensor<4>) -> Tensor<4> {
        let b = self.beta();
        let c1 = b * self.alpha_bar_prev.sqrt() / (1.0 - self.alpha_bar);
        let c2 = (1.0 - self.alpha_bar_prev) * (1.0 - b).sqrt() / (1.0 - self.alpha_bar);
        x0.mul_scalar(c1) + x_t.mul_scalar(c2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BetaSchedule;

    #[test]
    fn x0_and_eps_are_inverse_and_q_sample_consistent() {
        let dev = Device::flex();
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let x0 = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32, -0.25, 1.0, 0.0], [2, 1, 1, 2]),
            &dev,
        );
        let eps = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, -1.0, 0.3], [2, 1, 1, 2]),
            &dev,
        );
        let t = [10usize, 700];
        let xt = q_sample(&s, x0.clone(), &t, eps.clone());
        let ab: Vec<f64> = t.iter().map(|&i| s.alphas_cumprod[i]).collect();
        let x0_hat = predict_x0(xt.clone(), eps.clone(), &ab);
        x0_hat.into_data().assert_approx_eq::<f32>(
            &x0.clone().into_data(),
            burn::tensor::Tolerance::absolute(1e-4),
        );
        let eps_hat = eps_from_x0(xt, x0, &ab);
        eps_hat
            .into_data()
            .assert_approx_eq::<f32>(&eps.into_data(), burn::tensor::Tolerance::absolute(1e-4));
    }

    #[test]
    fn adjacent_transition_equals_schedule_posterior() {
        let s = NoiseSchedule::new(BetaSchedule::iddpm_cosine(), 100).unwrap();
        for t in [1usize, 50, 99] {
            let tr = Transition::new(&s, t, Some(t - 1));
            assert!((tr.beta() - s.betas[t]).abs() < 1e-12);
            assert!((tr.posterior_variance() - s.posterior_variance[t]).abs() < 1e-12);
        }
        assert_eq!(Transition::new(&s, 0, None).posterior_variance(), 0.0);
    }
}
