//! A Gaussian prior on images with a full covariance, x_0 ~ N(μ, Σ): the image-space test
//! oracle (the Gaussian mixture of [`crate::gmm`] is the low-dimensional one).
//!
//! - Its exact denoiser (Tweedie's formula in closed form): with Σ = U diag(λ) Uᵀ,
//!   E[x_0 | x_t] = μ + U diag(g_t) Uᵀ (x_t − √ᾱ_t μ), g_t = √ᾱ_t λ / (ᾱ_t λ + 1 − ᾱ_t)
//!   (Bishop 2006, eq. 2.116), and ε̂ = (x_t − √ᾱ_t x̂_0)/√(1 − ᾱ_t).
//! - [`posterior`]: for y = A x + σ ε, the posterior N(m, S) and the evidence
//!   p(y) = N(y; A μ, A Σ Aᵀ + σ² I) (Bishop 2006, eqs. 2.113–2.117).
//! - [`GaussianImage::chain_marginal`]: the law of the sample that the respaced DDPM chain
//!   (β̃ variance, unclipped x̂_0) driven by this exact denoiser produces. Every step is linear
//!   and diagonal in U's basis, so it is Gaussian and exact; it differs from N(μ, Σ) only by the
//!   chain's discretisation, which tells a sampler's discretisation error from its Monte Carlo
//!   error.

use burn::prelude::*;

use crate::denoiser::Denoiser;
use crate::diffusion::Transition;
use crate::error::CoreError;
use crate::linalg::{chol_solve, cholesky, log_normal, sym_eigen};
use crate::rng::Rng;
use crate::schedule::NoiseSchedule;

/// N(μ, Σ) on images of `shape`, kept as μ and Σ's eigen-decomposition.
#[derive(Debug, Clone)]
pub struct GaussianImage {
    pub shape: [usize; 3],
    pub mean: Vec<f64>,
    /// λ_k, Σ's eigenvalues.
    pub eigvals: Vec<f64>,
    /// U, row-major d × d, eigenvectors as columns.
    pub eigvecs: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl GaussianImage {
    /// From a mean and a covariance (row-major d × d, symmetric positive definite).
    pub fn new(
        shape: [usize; 3],
        mean: Vec<f64>,
        cov: &[f64],
        alphas_cumprod: Vec<f64>,
    ) -> Result<Self, CoreError> {
        let d: usize = shape.iter().product();
        if mean.len() != d || cov.len() != d * d {
            return Err(CoreError::InvalidConfig(format!(
                "a Gaussian on {shape:?} images needs a mean of {d} and a {d}×{d} covariance"
            )));
        }
        cholesky(cov, d)?;
        let (eigvals, eigvecs) = sym_eigen(cov, d);
        Ok(Self {
            shape,
            mean,
            eigvals,
            eigvecs,
            alphas_cumprod,
        })
    }

    /// A smooth prior: constant mean, covariance std² · exp(−‖p_i − p_j‖² / (2 ℓ²)) between
    /// pixels at grid positions p (the channels independent), plus 1e-3 std² on the diagonal.
    pub fn smooth(
        shape: [usize; 3],
        mean: f64,
        std: f64,
        length: f64,
        alphas_cumprod: Vec<f64>,
    ) -> Result<Self, CoreError> {
        let [c, h, w] = shape;
        let d = c * h * w;
        let pos = |i: usize| (i / (h * w), (i / w) % h, i % w);
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                let ((ci, yi, xi), (cj, yj, xj)) = (pos(i), pos(j));
                if ci != cj {
                    continue;
                }
                let r2 = (yi as f64 - yj as f64).powi(2) + (xi as f64 - xj as f64).powi(2);
                cov[i * d + j] = std * std * (-r2 / (2.0 * length * length)).exp();
            }
            cov[i * d + i] += 1e-3 * std * std;
        }
        Self::new(shape, vec![mean; d], &cov, alphas_cumprod)
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Σ = U diag(λ) Uᵀ.
    pub fn cov(&self) -> Vec<f64> {
        diag_in_basis(&self.eigvecs, &self.eigvals)
    }

    /// `n` draws, row-major `n × d`.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<f64> {
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let z = rng.normals(d);
            for i in 0..d {
                let v: f64 = (0..d)
                    .map(|k| self.eigvecs[i * d + k] * self.eigvals[k].sqrt() * z[k] as f64)
                    .sum();
                out.push(self.mean[i] + v);
            }
        }
        out
    }

    /// g_t of each eigen-direction: x̂_0 = μ + U diag(g_t) Uᵀ (x_t − √ᾱ_t μ).
    fn gains(&self, alpha_bar: f64) -> Vec<f64> {
        self.eigvals
            .iter()
            .map(|l| alpha_bar.sqrt() * l / (alpha_bar * l + 1.0 - alpha_bar))
            .collect()
    }

    /// The law N(mean, cov) of the sample of the respaced DDPM chain on `timesteps` (descending,
    /// started from N(0, I) at `timesteps[0]`, β̃ variance, x̂_0 unclipped, the last step
    /// returning x̂_0), with this exact denoiser. In U's basis, writing x_t = √ᾱ_t μ + w_t, one
    /// step is w_prev = (c₁ g_t + c₂) w_t + σ_t z with μ̃ = c₁ x̂_0 + c₂ x_t (DDPM eq. 7).
    pub fn chain_marginal(
        &self,
        schedule: &NoiseSchedule,
        timesteps: &[usize],
    ) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim();
        let u = &self.eigvecs;
        let ab0 = schedule.alphas_cumprod[timesteps[0]];
        // w_T = x_T − √ᾱ μ: mean −√ᾱ μ (in U's basis), variance 1.
        let mut e: Vec<f64> = (0..d)
            .map(|k| -ab0.sqrt() * (0..d).map(|i| u[i * d + k] * self.mean[i]).sum::<f64>())
            .collect();
        let mut v = vec![1.0; d];
        let mut out = (Vec::new(), Vec::new());
        for (i, &t) in timesteps.iter().enumerate() {
            let tr = Transition::new(schedule, t, timesteps.get(i + 1).copied());
            let g = self.gains(tr.alpha_bar);
            if tr.t_prev.is_none() {
                // The sample is x̂_0 = μ + U diag(g) w.
                let ge: Vec<f64> = (0..d).map(|k| g[k] * e[k]).collect();
                let mean = (0..d)
                    .map(|r| self.mean[r] + (0..d).map(|k| u[r * d + k] * ge[k]).sum::<f64>())
                    .collect();
                let var: Vec<f64> = (0..d).map(|k| g[k] * g[k] * v[k]).collect();
                out = (mean, diag_in_basis(u, &var));
                break;
            }
            let b = tr.beta();
            let c1 = b * tr.alpha_bar_prev.sqrt() / (1.0 - tr.alpha_bar);
            let c2 = (1.0 - tr.alpha_bar_prev) * (1.0 - b).sqrt() / (1.0 - tr.alpha_bar);
            let s2 = tr.posterior_variance();
            for k in 0..d {
                let a = c1 * g[k] + c2;
                e[k] *= a;
                v[k] = a * a * v[k] + s2;
            }
        }
        out
    }
}

/// U diag(v) Uᵀ.
fn diag_in_basis(u: &[f64], v: &[f64]) -> Vec<f64> {
    let d = v.len();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = (0..d).map(|k| u[i * d + k] * v[k] * u[j * d + k]).sum();
        }
    }
    out
}

impl Denoiser for GaussianImage {
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let device = x_t.device();
        let [b, c, h, w] = x_t.dims();
        let d = c * h * w;
        let row = |v: Vec<f64>, n: usize| {
            Tensor::<2>::from_data(
                TensorData::new(
                    v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
                    [n, d],
                ),
                &device,
            )
        };
        let sqrt_ab: Vec<f64> = t.iter().map(|&i| self.alphas_cumprod[i].sqrt()).collect();
        let gains: Vec<f64> = t
            .iter()
            .flat_map(|&i| self.gains(self.alphas_cumprod[i]))
            .collect();
        let per_row = |f: &dyn Fn(f64) -> f64| {
            Tensor::<2>::from_data(
                TensorData::new(
                    sqrt_ab.iter().map(|&s| f(s) as f32).collect::<Vec<f32>>(),
                    [b, 1],
                ),
                &device,
            )
        };
        let mu = row(self.mean.clone(), 1);
        let u = row(self.eigvecs.clone(), d);
        let x = x_t.reshape([b, d]);
        // x̂_0 = μ + U diag(g) Uᵀ (x_t − √ᾱ μ), rows as row vectors: ((x − √ᾱ μ) U) ⊙ g Uᵀ.
        let centred = x.clone() - mu.clone() * per_row(&|s| s);
        let x0 = mu + (centred.matmul(u.clone()) * row(gains, b)).matmul(u.transpose());
        let eps = (x - x0 * per_row(&|s| s)) * per_row(&|s| 1.0 / (1.0 - s * s).sqrt());
        eps.reshape([b, c, h, w])
    }
}

/// A Gaussian posterior with its evidence.
#[derive(Debug, Clone)]
pub struct GaussianPosterior {
    pub mean: Vec<f64>,
    /// Row-major d × d.
    pub cov: Vec<f64>,
    /// log p(y).
    pub log_evidence: f64,
}

/// Prior N(μ, Σ) (d-dimensional, Σ row-major), observation y = A x + σ ε with A row-major
/// `d_y × d`: the posterior N(μ + K (y − A μ), Σ − K A Σ) with K = Σ Aᵀ C⁻¹, C = A Σ Aᵀ + σ² I,
/// and log p(y) = log N(y; A μ, C) (Bishop 2006, eqs. 2.113–2.117, in the observation space).
pub fn posterior(
    mean: &[f64],
    cov: &[f64],
    a: &[f64],
    sigma: f64,
    y: &[f64],
) -> Result<GaussianPosterior, CoreError> {
    let d = mean.len();
    let dy = y.len();
    if a.len() != dy * d || cov.len() != d * d {
        return Err(CoreError::InvalidConfig(format!(
            "posterior: A is {} values for {dy}×{d}, Σ {} for {d}×{d}",
            a.len(),
            cov.len()
        )));
    }
    // ΣAᵀ (d × d_y) and C = A Σ Aᵀ + σ² I (d_y × d_y).
    let sat: Vec<f64> = (0..d)
        .flat_map(|i| (0..dy).map(move |j| (i, j)))
        .map(|(i, j)| (0..d).map(|k| cov[i * d + k] * a[j * d + k]).sum())
        .collect();
    let mut c = vec![0.0; dy * dy];
    for i in 0..dy {
        for j in 0..dy {
            c[i * dy + j] = (0..d).map(|k| a[i * d + k] * sat[k * dy + j]).sum();
        }
        c[i * dy + i] += sigma * sigma;
    }
    let l = cholesky(&c, dy)?;
    let am: Vec<f64> = (0..dy)
        .map(|i| (0..d).map(|k| a[i * d + k] * mean[k]).sum())
        .collect();
    let r: Vec<f64> = y.iter().zip(&am).map(|(a, b)| a - b).collect();
    let cr = chol_solve(&l, dy, &r);
    let post_mean = (0..d)
        .map(|i| mean[i] + (0..dy).map(|j| sat[i * dy + j] * cr[j]).sum::<f64>())
        .collect();
    // Σ − ΣAᵀ C⁻¹ AΣ, column by column of C⁻¹ AΣ.
    let mut post_cov = cov.to_vec();
    for col in 0..d {
        let b: Vec<f64> = (0..dy).map(|j| sat[col * dy + j]).collect();
        let x = chol_solve(&l, dy, &b);
        for row in 0..d {
            post_cov[row * d + col] -= (0..dy).map(|j| sat[row * dy + j] * x[j]).sum::<f64>();
        }
    }
    Ok(GaussianPosterior {
        mean: post_mean,
        cov: post_cov,
        log_evidence: log_normal(y, &am, &l),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BetaSchedule, Spacing};

    fn prior() -> (GaussianImage, NoiseSchedule) {
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let g = GaussianImage::smooth([1, 4, 4], 0.1, 0.5, 1.5, s.alphas_cumprod.clone()).unwrap();
        (g, s)
    }

    #[test]
    fn the_denoiser_is_the_conditional_mean() {
        // E[x_0 | x_t] by the formula against a direct solve: μ + √ᾱ Σ (ᾱΣ + (1−ᾱ)I)⁻¹ (x_t − √ᾱ μ).
        let (g, _) = prior();
        let d = g.dim();
        let cov = g.cov();
        let dev = Device::flex();
        let mut rng = Rng::new(1);
        let xt = rng.normals(d);
        for t in [5usize, 300, 900] {
            let ab = g.alphas_cumprod[t];
            let mut m = cov.iter().map(|v| ab * v).collect::<Vec<f64>>();
            for i in 0..d {
                m[i * d + i] += 1.0 - ab;
            }
            let l = cholesky(&m, d).unwrap();
            let r: Vec<f64> = (0..d)
                .map(|i| xt[i] as f64 - ab.sqrt() * g.mean[i])
                .collect();
            let s = chol_solve(&l, d, &r);
            let x0: Vec<f64> = (0..d)
                .map(|i| g.mean[i] + ab.sqrt() * (0..d).map(|k| cov[i * d + k] * s[k]).sum::<f64>())
                .collect();
            let x = Tensor::<4>::from_data(TensorData::new(xt.clone(), [1, 1, 4, 4]), &dev);
            let eps = crate::host_values(g.eps(x, &[t]));
            for i in 0..d {
                let want = (xt[i] as f64 - ab.sqrt() * x0[i]) / (1.0 - ab).sqrt();
                assert!(
                    (eps[i] as f64 - want).abs() < 2e-4,
                    "t {t}, {i}: {} vs {want}",
                    eps[i]
                );
            }
        }
    }

    #[test]
    fn posterior_and_evidence_match_the_joint_gaussian() {
        // Two observed coordinates of a 3-d Gaussian: the posterior of the third by the Schur
        // complement, and the evidence by the marginal of the observed pair.
        let cov = [1.0, 0.5, 0.2, 0.5, 2.0, 0.3, 0.2, 0.3, 1.5];
        let mean = [0.1, -0.2, 0.3];
        let a = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let y = [0.4, 0.1];
        let p = posterior(&mean, &cov, &a, 1e-4, &y).unwrap();
        // x3 | x1, x2 = y: μ3 + Σ32 Σ22⁻¹ (y − μ12).
        let det = 1.0 * 2.0 - 0.25;
        let inv = [2.0 / det, -0.5 / det, -0.5 / det, 1.0 / det];
        let r = [y[0] - mean[0], y[1] - mean[1]];
        let k = [0.2 * inv[0] + 0.3 * inv[2], 0.2 * inv[1] + 0.3 * inv[3]];
        assert!((p.mean[2] - (mean[2] + k[0] * r[0] + k[1] * r[1])).abs() < 1e-6);
        assert!((p.cov[8] - (1.5 - k[0] * 0.2 - k[1] * 0.3)).abs() < 1e-6);
        assert!((p.mean[0] - y[0]).abs() < 1e-6 && p.cov[0] < 1e-6);
        let quad = r[0] * (inv[0] * r[0] + inv[1] * r[1]) + r[1] * (inv[2] * r[0] + inv[3] * r[1]);
        let want = -0.5 * (quad + det.ln() + 2.0 * (2.0 * std::f64::consts::PI).ln());
        assert!(
            (p.log_evidence - want).abs() < 1e-6,
            "{} vs {want}",
            p.log_evidence
        );
    }

    #[test]
    fn the_chain_marginal_matches_monte_carlo_and_nears_the_prior_with_more_steps() {
        let (g, s) = prior();
        let d = g.dim();
        let gap = |steps| {
            let ts = s.timesteps(steps, Spacing::Trailing).unwrap();
            let (m, c) = g.chain_marginal(&s, &ts);
            let cov = g.cov();
            let dm: f64 = m
                .iter()
                .zip(&g.mean)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let dc: f64 = c
                .iter()
                .zip(&cov)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            (dm, dc, ts, m, c)
        };
        let (dm20, dc20, ts, m, c) = gap(20);
        let (dm1000, dc1000, ..) = gap(1000);
        assert!(dc1000 < dc20 && dm1000 <= dm20 + 1e-12, "{dc20} → {dc1000}");
        assert!(dc1000 < 5e-3, "1000 steps: covariance off by {dc1000}");
        // Run the 20-step chain itself (the DDPM update with this denoiser) and compare moments.
        let dev = Device::flex();
        let n = 20_000;
        let mut rng = Rng::new(3);
        let mut x = rng.normal_tensor([n, 1, 4, 4], &dev);
        let mut out = Vec::new();
        for (i, &t) in ts.iter().enumerate() {
            let tr = Transition::new(&s, t, ts.get(i + 1).copied());
            let eps = g.eps(x.clone(), &vec![t; n]);
            let x0 = crate::diffusion::predict_x0(x.clone(), eps, &vec![tr.alpha_bar; n]);
            if tr.t_prev.is_none() {
                out = crate::host_values(x0);
                break;
            }
            let z = rng.normal_tensor([n, 1, 4, 4], &dev);
            x = tr.posterior_mean(x, x0) + z.mul_scalar(tr.posterior_variance().sqrt());
        }
        for i in [0, 5, 15] {
            let col: Vec<f64> = (0..n).map(|r| out[r * d + i] as f64).collect();
            let mean = col.iter().sum::<f64>() / n as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let se = (c[i * d + i] / n as f64).sqrt();
            assert!(
                (mean - m[i]).abs() < 4.0 * se,
                "pixel {i}: mean {mean} vs {}",
                m[i]
            );
            assert!(
                (var / c[i * d + i] - 1.0).abs() < 0.05,
                "pixel {i}: var {var} vs {}",
                c[i * d + i]
            );
        }
    }
}
