//! A Gaussian-mixture prior with isotropic components, as an exact denoiser (a test oracle for
//! samplers and guidance). With x_0 ~ Σ_k π_k N(μ_k, s_k² I) in d dimensions,
//! x_t ~ Σ_k π_k N(√ᾱ μ_k, v_k I) with v_k = ᾱ s_k² + 1 − ᾱ, and
//! E[ε | x_t] = √(1 − ᾱ) Σ_k r_k(x_t) (x_t − √ᾱ μ_k) / v_k,
//! r_k ∝ π_k N(x_t; √ᾱ μ_k, v_k I) (the responsibilities, computed with log-sum-exp).

mod posterior;

pub use posterior::{GmmPosterior, LinearGaussian};

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::denoiser::Denoiser;
use crate::error::CoreError;
use crate::rng::Rng;

/// Σ_k π_k N(μ_k, s_k² I) in `dim()` dimensions, with the schedule it is noised by.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub stds: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl GaussianMixture {
    /// Validates: as many weights, means and stds; weights positive (normalised here); stds
    /// positive; every mean of the same dimension.
    pub fn new(
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        stds: Vec<f64>,
        alphas_cumprod: Vec<f64>,
    ) -> Result<Self, CoreError> {
        let k = weights.len();
        if k == 0 || means.len() != k || stds.len() != k {
            return Err(CoreError::InvalidConfig(format!(
                "a mixture needs as many weights ({k}), means ({}) and stds ({}), at least one",
                means.len(),
                stds.len()
            )));
        }
        let positive = |v: &f64| v.is_finite() && *v > 0.0;
        if !weights.iter().all(positive) || !stds.iter().all(positive) {
            return Err(CoreError::InvalidConfig(
                "mixture weights and stds must be positive".into(),
            ));
        }
        let d = means[0].len();
        if d == 0 || means.iter().any(|m| m.len() != d) {
            return Err(CoreError::InvalidConfig(
                "mixture means must share one positive dimension".into(),
            ));
        }
        let total: f64 = weights.iter().sum();
        Ok(Self {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            stds,
            alphas_cumprod,
        })
    }

    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// `n` exact draws from the prior, `[n, dim]` row-major, with their component indices.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> (Vec<f64>, Vec<usize>) {
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        let mut comps = Vec::with_capacity(n);
        for _ in 0..n {
            let k = rng.categorical(&self.weights);
            comps.push(k);
            let z = rng.normals(d);
            out.extend(
                self.means[k]
                    .iter()
                    .zip(z)
                    .map(|(m, z)| m + self.stds[k] * z as f64),
            );
        }
        (out, comps)
    }
}

impl Denoiser for GaussianMixture {
    /// `x_t` is `[B, C, H, W]` with C·H·W = `dim()`.
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let device = x_t.device();
        let shape = x_t.dims();
        let (b, d, k) = (shape[0], self.dim(), self.weights.len());
        assert_eq!(
            shape[1] * shape[2] * shape[3],
            d,
            "mixture dimension {d} does not fit x_t {shape:?}"
        );
        let x = x_t.reshape([b, d]);
        // Per sample and component: √ᾱ, v_k, log π_k − (d/2) log v_k.
        let mut sa = Vec::with_capacity(b);
        let mut inv_v = Vec::with_capacity(b * k);
        let mut bias = Vec::with_capacity(b * k);
        for &ti in t {
            let ab = self.alphas_cumprod[ti];
            sa.push(ab.sqrt());
            for j in 0..k {
                let v = ab * self.stds[j].powi(2) + 1.0 - ab;
                inv_v.push(1.0 / v);
                bias.push(self.weights[j].ln() - 0.5 * d as f64 * v.ln());
            }
        }
        let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let mu =
            Tensor::<2>::from_data(TensorData::new(f32s(&self.means.concat()), [k, d]), &device);
        let sa_t = Tensor::<2>::from_data(TensorData::new(f32s(&sa), [b, 1]), &device);
        let inv_v = Tensor::<2>::from_data(TensorData::new(f32s(&inv_v), [b, k]), &device);
        let bias = Tensor::<2>::from_data(TensorData::new(f32s(&bias), [b, k]), &device);
        // ‖x − √ᾱ μ_k‖² = ‖x‖² − 2√ᾱ x·μ_k + ᾱ‖μ_k‖².
        let xx = x.clone().square().sum_dim(1); // [B, 1]
        let xm = x.clone().matmul(mu.clone().transpose()); // [B, K]
        let mm = mu.clone().square().sum_dim(1).transpose(); // [1, K]
        let dist = xx - xm.mul(sa_t.clone()).mul_scalar(2.0) + mm.mul(sa_t.clone().square());
        let r = softmax(bias - dist.mul(inv_v.clone()).mul_scalar(0.5), 1); // [B, K]
        let rv = r.mul(inv_v); // r_k / v_k
        let sqrt_1m: Vec<f64> = t
            .iter()
            .map(|&ti| (1.0 - self.alphas_cumprod[ti]).sqrt())
            .collect();
        let s1 = Tensor::<2>::from_data(TensorData::new(f32s(&sqrt_1m), [b, 1]), &device);
        let eps = (x.mul(rv.clone().sum_dim(1)) - rv.matmul(mu).mul(sa_t)).mul(s1);
        eps.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoiser::GaussianDenoiser;
    use crate::schedule::{BetaSchedule, NoiseSchedule};

    #[test]
    fn one_component_equals_the_gaussian_denoiser_and_two_match_a_scalar_computation() {
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![0.3f32, -1.2, 2.0, 0.1, 0.5, -0.7], [2, 1, 1, 3]),
            &dev,
        );
        let t = [50usize, 700];
        let one = GaussianMixture::new(
            vec![1.0],
            vec![vec![0.2; 3]],
            vec![0.4],
            s.alphas_cumprod.clone(),
        )
        .unwrap();
        let g = GaussianDenoiser {
            mean: 0.2,
            std: 0.4,
            alphas_cumprod: s.alphas_cumprod.clone(),
        };
        let (a, b) = (
            crate::host_values(one.eps(x.clone(), &t)),
            crate::host_values(g.eps(x.clone(), &t)),
        );
        assert!(
            a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5),
            "{a:?} {b:?}"
        );

        let mix = GaussianMixture::new(
            vec![1.0, 3.0],
            vec![vec![-1.0, 0.0, 1.0], vec![1.0, 1.0, -1.0]],
            vec![0.3, 0.6],
            s.alphas_cumprod.clone(),
        )
        .unwrap();
        let got = crate::host_values(mix.eps(x.clone(), &t));
        let xs = crate::host_values(x);
        for i in 0..2 {
            let ab = s.alphas_cumprod[t[i]];
            let xi = &xs[i * 3..i * 3 + 3];
            let logp: Vec<f64> = (0..2)
                .map(|k| {
                    let v = ab * mix.stds[k].powi(2) + 1.0 - ab;
                    let d2: f64 = (0..3)
                        .map(|j| (xi[j] as f64 - ab.sqrt() * mix.means[k][j]).powi(2))
                        .sum();
                    mix.weights[k].ln() - 1.5 * v.ln() - 0.5 * d2 / v
                })
                .collect();
            let m = logp.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logp.iter().map(|l| (l - m).exp()).sum();
            for j in 0..3 {
                let want: f64 = (0..2)
                    .map(|k| {
                        let v = ab * mix.stds[k].powi(2) + 1.0 - ab;
                        (logp[k] - m).exp() / z
                            * (1.0 - ab).sqrt()
                            * (xi[j] as f64 - ab.sqrt() * mix.means[k][j])
                            / v
                    })
                    .sum();
                assert!(
                    (got[i * 3 + j] as f64 - want).abs() < 1e-4,
                    "sample {i} dim {j}: {} vs {want}",
                    got[i * 3 + j]
                );
            }
        }
        assert!(
            GaussianMixture::new(vec![1.0], vec![vec![0.0], vec![1.0]], vec![1.0], vec![]).is_err()
        );
        assert!(GaussianMixture::new(vec![1.0], vec![vec![0.0]], vec![0.0], vec![]).is_err());
    }
}
