//! Small dense linear algebra in f64 on the host, for the closed forms the tests and benchmarks
//! compare with (Gaussian posteriors and evidences, Fréchet distances): row-major n × n matrices,
//! n up to a few hundred.

use crate::error::CoreError;

/// Lower Cholesky factor of the symmetric positive definite n × n `m` (row-major).
pub fn cholesky(m: &[f64], n: usize) -> Result<Vec<f64>, CoreError> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let v = m[i * n + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return Err(CoreError::InvalidConfig(
                        "covariance is not positive definite".into(),
                    ));
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = (m[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// Solves L Lᵀ x = b.
pub fn chol_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; n];
    for i in 0..n {
        z[i] = (b[i] - (0..i).map(|k| l[i * n + k] * z[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (z[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    x
}

/// log N(y; mean, C) from C's Cholesky factor.
pub fn log_normal(y: &[f64], mean: &[f64], l: &[f64]) -> f64 {
    let n = y.len();
    let r: Vec<f64> = y.iter().zip(mean).map(|(a, b)| a - b).collect();
    let x = chol_solve(l, n, &r);
    let quad: f64 = r.iter().zip(&x).map(|(a, b)| a * b).sum();
    let logdet: f64 = (0..n).map(|i| l[i * n + i].ln()).sum::<f64>() * 2.0;
    -0.5 * (quad + logdet + n as f64 * (2.0 * std::f64::consts::PI).ln())
}

/// Eigen-decomposition of a symmetric n × n matrix (cyclic Jacobi): (eigenvalues, eigenvectors
/// as columns of a row-major matrix).
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i].powi(2))
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Σ^{1/2} of a symmetric positive semi-definite matrix (negative rounding eigenvalues → 0).
pub fn sqrtm(a: &[f64], n: usize) -> Vec<f64> {
    let (l, v) = sym_eigen(a, n);
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n)
                .map(|k| v[i * n + k] * l[k].max(0.0).sqrt() * v[j * n + k])
                .sum();
        }
    }
    out
}

pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}
