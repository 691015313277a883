//! The exact posterior of a Gaussian-mixture prior under a linear-Gaussian observation
//! y = A x + σ ε (Bishop 2006, §2.3.3, per component; MCGdiff's benchmark, Cardoso et al. 2024):
//! p(x | y) = Σ_k w_k N(x; m_k, S_k) with
//! S_k = (I/s_k² + AᵀA/σ²)⁻¹, m_k = S_k (μ_k/s_k² + Aᵀy/σ²),
//! w_k ∝ π_k N(y; A μ_k, s_k² AAᵀ + σ² I), and the evidence p(y) = Σ_k π_k N(y; A μ_k, …).
//! Small dense linear algebra in f64 (d and d_y are the benchmark's, ≤ a few dozen).

use super::GaussianMixture;
use crate::error::CoreError;
use crate::linalg::{chol_solve, cholesky, log_normal};
use crate::rng::Rng;

/// y = A x + σ ε, A row-major `d_y × d`.
#[derive(Debug, Clone)]
pub struct LinearGaussian {
    pub a: Vec<Vec<f64>>,
    pub sigma: f64,
}

impl LinearGaussian {
    pub fn dy(&self) -> usize {
        self.a.len()
    }

    /// A x.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.a
            .iter()
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }
}

/// Σ_k w_k N(m_k, S_k), with the Cholesky factors L_k (S_k = L_k L_kᵀ) and log p(y).
#[derive(Debug, Clone)]
pub struct GmmPosterior {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub chol: Vec<Vec<f64>>,
    pub log_evidence: f64,
}

impl GaussianMixture {
    /// The exact posterior given `y` observed through `obs`.
    pub fn posterior(&self, obs: &LinearGaussian, y: &[f64]) -> Result<GmmPosterior, CoreError> {
        let (d, dy) = (self.dim(), obs.dy());
        if obs.a.iter().any(|r| r.len() != d) || y.len() != dy || dy == 0 {
            return Err(CoreError::InvalidConfig(format!(
                "the observation matrix must be d_y × {d} and y of length d_y = {dy}"
            )));
        }
        if obs.sigma.is_nan() || obs.sigma <= 0.0 {
            return Err(CoreError::InvalidConfig(
                "observation sigma must be > 0".into(),
            ));
        }
        let s2 = obs.sigma * obs.sigma;
        let a = &obs.a;
        // AAᵀ and AᵀA.
        let aat: Vec<f64> = (0..dy * dy)
            .map(|ij| (0..d).map(|k| a[ij / dy][k] * a[ij % dy][k]).sum())
            .collect();
        let ata: Vec<f64> = (0..d * d)
            .map(|ij| (0..dy).map(|k| a[k][ij / d] * a[k][ij % d]).sum())
            .collect();
        let aty: Vec<f64> = (0..d)
            .map(|j| (0..dy).map(|k| a[k][j] * y[k]).sum())
            .collect();
        let mut logw = Vec::new();
        let mut means = Vec::new();
        let mut chol = Vec::new();
        for k in 0..self.weights.len() {
            let sk2 = self.stds[k].powi(2);
            let c: Vec<f64> = (0..dy * dy)
                .map(|ij| sk2 * aat[ij] + if ij / dy == ij % dy { s2 } else { 0.0 })
                .collect();
            let lc = cholesky(&c, dy)?;
            logw.push(self.weights[k].ln() + log_normal(y, &obs.apply(&self.means[k]), &lc));
            // Precision P = I/s_k² + AᵀA/σ²; S = P⁻¹; m = S (μ/s_k² + Aᵀy/σ²).
            let p: Vec<f64> = (0..d * d)
                .map(|ij| ata[ij] / s2 + if ij / d == ij % d { 1.0 / sk2 } else { 0.0 })
                .collect();
            let lp = cholesky(&p, d)?;
            let rhs: Vec<f64> = (0..d)
                .map(|j| self.means[k][j] / sk2 + aty[j] / s2)
                .collect();
            means.push(chol_solve(&lp, d, &rhs));
            // S's columns, then its Cholesky factor.
            let mut s = vec![0.0; d * d];
            for j in 0..d {
                let e: Vec<f64> = (0..d).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
                let col = chol_solve(&lp, d, &e);
                for i in 0..d {
                    s[i * d + j] = col[i];
                }
            }
            // Symmetrise against rounding before factorising.
            for i in 0..d {
                for j in 0..i {
                    let v = 0.5 * (s[i * d + j] + s[j * d + i]);
                    s[i * d + j] = v;
                    s[j * d + i] = v;
                }
            }
            chol.push(cholesky(&s, d)?);
        }
        let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logw.iter().map(|l| (l - m).exp()).sum();
        let log_evidence = m + z.ln();
        Ok(GmmPosterior {
            weights: logw.iter().map(|l| (l - log_evidence).exp()).collect(),
            means,
            chol,
            log_evidence,
        })
    }
}

impl GmmPosterior {
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// `n` exact draws, `[n, d]` row-major.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<f64> {
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let k = rng.categorical(&self.weights);
            let z: Vec<f64> = rng.normals(d).into_iter().map(f64::from).collect();
            let l = &self.chol[k];
            for i in 0..d {
                out.push(self.means[k][i] + (0..=i).map(|j| l[i * d + j] * z[j]).sum::<f64>());
            }
        }
        out
    }

    /// log p(x | y) at a point.
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let lp: Vec<f64> = (0..self.weights.len())
            .map(|k| {
                self.weights[k].max(1e-300).ln() + log_normal(x, &self.means[k], &self.chol[k])
            })
            .collect();
        let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
    }

    /// The posterior responsibilities of component k for the point `x`, summed over `xs`
    /// (`[n, d]`) and divided by n: the mode weights a sample set implies.
    pub fn mode_weights(&self, xs: &[f64]) -> Vec<f64> {
        let d = self.dim();
        let n = xs.len() / d;
        let mut acc = vec![0.0; self.weights.len()];
        for x in xs.chunks(d) {
            let logp: Vec<f64> = (0..self.weights.len())
                .map(|k| {
                    self.weights[k].max(1e-300).ln() + log_normal(x, &self.means[k], &self.chol[k])
                })
                .collect();
            let m = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logp.iter().map(|l| (l - m).exp()).sum();
            for (a, l) in acc.iter_mut().zip(&logp) {
                *a += (l - m).exp() / z / n as f64;
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixture() -> GaussianMixture {
        GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![-2.0, 0.0], vec![2.0, 1.0]],
            vec![0.5, 0.8],
            vec![0.5; 10],
        )
        .unwrap()
    }

    #[test]
    fn evidence_and_posterior_match_monte_carlo_over_the_prior() {
        // p(y) = E_prior[N(y; Ax, σ²)] and E[x | y] = E_prior[x N(y; Ax, σ²)] / p(y), by 400k
        // prior draws: independent of the closed form.
        let g = mixture();
        let obs = LinearGaussian {
            a: vec![vec![1.0, 0.5]],
            sigma: 0.7,
        };
        let y = [0.4];
        let post = g.posterior(&obs, &y).unwrap();
        let (xs, _) = g.sample(400_000, &mut Rng::new(1));
        let mut z = 0.0;
        let mut m = [0.0; 2];
        for x in xs.chunks(2) {
            let r = y[0] - obs.apply(x)[0];
            let l = (-0.5 * r * r / 0.49).exp() / (2.0 * std::f64::consts::PI * 0.49).sqrt();
            z += l;
            m[0] += l * x[0];
            m[1] += l * x[1];
        }
        let n = 400_000.0;
        let (z, m) = (z / n, [m[0] / z / n * n, m[1] / z / n * n]);
        assert!(
            (post.log_evidence - z.ln()).abs() < 0.01,
            "{} vs {}",
            post.log_evidence,
            z.ln()
        );
        let exact: Vec<f64> = (0..2)
            .map(|j| (0..2).map(|k| post.weights[k] * post.means[k][j]).sum())
            .collect();
        for j in 0..2 {
            assert!(
                (exact[j] - m[j]).abs() < 0.02,
                "mean[{j}]: {} vs {}",
                exact[j],
                m[j]
            );
        }
        // Draws from the posterior have its mean and its mode weights.
        let s = post.sample(100_000, &mut Rng::new(2));
        let w = post.mode_weights(&s);
        assert!(
            (w[0] - post.weights[0]).abs() < 0.01,
            "{w:?} vs {:?}",
            post.weights
        );
        let sm: f64 = s.chunks(2).map(|x| x[0]).sum::<f64>() / 100_000.0;
        assert!((sm - exact[0]).abs() < 0.02);
    }
}
