//! FID and KID on network features (Inception's pool3 for CIFAR-10), at the dimension papers use
//! (2048): moments and matrix square roots through faer's GEMM and self-adjoint eigensolver.
//!
//! - FID (Heusel et al. 2017, Eq. 6): ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}, with the
//!   covariances normalised by n − 1 as `numpy.cov` (pytorch-fid). tr (Σ₁Σ₂)^{1/2} is computed as
//!   Σ √λᵢ over the eigenvalues of the symmetric Σ₁^{1/2} Σ₂ Σ₁^{1/2}, which has the same
//!   eigenvalues as Σ₁Σ₂ (negative rounding values set to 0).
//! - KID (Bińkowski et al. 2018, Eq. 2 with the cubic kernel k(x, y) = (xᵀy / d + 1)³): the
//!   unbiased MMD² estimator, on `subsets` random subsets of `subset_size` from each set, mean and
//!   standard deviation over subsets (torchmetrics' `KernelInceptionDistance`).

use faer::{Mat, Side};

use crate::rng::Rng;

/// Mean and covariance (1/(n − 1)) of a feature set.
pub struct FeatureStats {
    pub mean: Vec<f64>,
    /// d × d.
    pub cov: Mat<f64>,
}

/// `n × d` row-major features as an f64 matrix.
fn matrix(f: &[f32], d: usize) -> Mat<f64> {
    let n = f.len() / d;
    Mat::from_fn(n, d, |i, j| f[i * d + j] as f64)
}

impl FeatureStats {
    /// The moments of `n × d` row-major features (n ≥ 2).
    pub fn of(f: &[f32], d: usize) -> Self {
        let n = f.len() / d;
        assert!(
            n >= 2 && f.len() == n * d,
            "need at least 2 rows of {d} features"
        );
        let x = matrix(f, d);
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x[(i, j)]).sum::<f64>() / n as f64)
            .collect();
        let c = Mat::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
        let cov = (c.transpose() * &c) * faer::Scale(1.0 / (n as f64 - 1.0));
        Self { mean, cov }
    }

    /// Moments given as a mean (d) and a row-major covariance (d × d), as files hold them.
    pub fn from_moments(mean: Vec<f64>, cov: &[f64]) -> Self {
        let d = mean.len();
        assert_eq!(cov.len(), d * d, "a d × d covariance");
        Self {
            cov: Mat::from_fn(d, d, |i, j| cov[i * d + j]),
            mean,
        }
    }

    /// The covariance, row-major.
    pub fn cov_row_major(&self) -> Vec<f64> {
        let d = self.mean.len();
        (0..d * d).map(|k| self.cov[(k / d, k % d)]).collect()
    }

    /// The Fréchet distance between the Gaussians of `self` and `other`.
    pub fn frechet(&self, other: &Self) -> f64 {
        let d = self.mean.len();
        let dm: f64 = self
            .mean
            .iter()
            .zip(&other.mean)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let trace = |m: &Mat<f64>| (0..d).map(|i| m[(i, i)]).sum::<f64>();
        let root = sqrt_psd(&self.cov);
        let m = &root * &other.cov * &root;
        let sym = Mat::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
        let eig = sym
            .self_adjoint_eigenvalues(Side::Lower)
            .expect("eigenvalues of a symmetric matrix");
        let tr_root: f64 = eig.iter().map(|l| l.max(0.0).sqrt()).sum();
        dm + trace(&self.cov) + trace(&other.cov) - 2.0 * tr_root
    }
}

/// Σ^{1/2} of a symmetric positive semi-definite matrix (negative rounding eigenvalues → 0).
fn sqrt_psd(a: &Mat<f64>) -> Mat<f64> {
    let n = a.nrows();
    let e = a
        .self_adjoint_eigen(Side::Lower)
        .expect("eigendecomposition of a symmetric matrix");
    let (u, s) = (e.U(), e.S().column_vector());
    let scaled = Mat::from_fn(n, n, |i, k| u[(i, k)] * s[k].max(0.0).sqrt());
    &scaled * u.transpose()
}

/// The unbiased MMD² between two feature sets under k(x, y) = (xᵀy / d + 1)³.
pub fn mmd2_poly(a: &[f32], b: &[f32], d: usize) -> f64 {
    let (x, y) = (matrix(a, d), matrix(b, d));
    let m = x.nrows() as f64;
    let kernel_sum = |p: &Mat<f64>, q: &Mat<f64>, off_diagonal: bool| {
        let g = p * q.transpose();
        let mut s = 0.0;
        for i in 0..g.nrows() {
            for j in 0..g.ncols() {
                if !(off_diagonal && i == j) {
                    s += (g[(i, j)] / d as f64 + 1.0).powi(3);
                }
            }
        }
        s
    };
    (kernel_sum(&x, &x, true) + kernel_sum(&y, &y, true)) / (m * (m - 1.0))
        - 2.0 * kernel_sum(&x, &y, false) / (m * m)
}

/// KID: mean and standard deviation of [`mmd2_poly`] over `subsets` pairs of random subsets of
/// `subset_size` rows (without replacement within a subset), drawn from `rng`. A subset size of
/// at least a set's rows takes the whole set.
pub fn kid(
    a: &[f32],
    b: &[f32],
    d: usize,
    subsets: usize,
    subset_size: usize,
    rng: &mut Rng,
) -> (f64, f64) {
    let pick = |f: &[f32], rng: &mut Rng| -> Vec<f32> {
        let n = f.len() / d;
        let k = subset_size.min(n);
        let mut idx: Vec<usize> = (0..n).collect();
        // A partial Fisher–Yates shuffle: the first k of a uniform permutation.
        for i in 0..k {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx[..k]
            .iter()
            .flat_map(|&i| f[i * d..(i + 1) * d].iter().copied())
            .collect()
    };
    let values: Vec<f64> = (0..subsets)
        .map(|_| {
            let (x, y) = (pick(a, rng), pick(b, rng));
            mmd2_poly(&x, &y, d)
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
        / (values.len() as f64 - 1.0).max(1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussians with diagonal covariances: FID's closed form is
    /// ‖μ₁ − μ₂‖² + Σ (σ₁ᵢ − σ₂ᵢ)², recovered from the sample moments' own closed form.
    #[test]
    fn frechet_matches_the_closed_form_for_commuting_covariances() {
        let d = 3;
        let a = FeatureStats {
            mean: vec![0.0, 1.0, 2.0],
            cov: Mat::from_fn(d, d, |i, j| if i == j { [1.0, 4.0, 9.0][i] } else { 0.0 }),
        };
        let b = FeatureStats {
            mean: vec![1.0, 1.0, 0.0],
            cov: Mat::from_fn(d, d, |i, j| if i == j { [4.0, 4.0, 1.0][i] } else { 0.0 }),
        };
        let want = (1.0 + 0.0 + 4.0) + (1.0f64 + 0.0 + 4.0);
        assert!((a.frechet(&b) - want).abs() < 1e-12, "{}", a.frechet(&b));
        assert!(a.frechet(&a).abs() < 1e-12);
    }

    /// The moments are numpy's: mean and 1/(n − 1) covariance.
    #[test]
    fn moments_are_the_sample_mean_and_unbiased_covariance() {
        let f = [1.0f32, 2.0, 3.0, 6.0, 5.0, 10.0];
        let s = FeatureStats::of(&f, 2);
        assert_eq!(s.mean, vec![3.0, 6.0]);
        // x: 1, 3, 5 (var 4); y: 2, 6, 10 (var 16); cov 8.
        assert!((s.cov[(0, 0)] - 4.0).abs() < 1e-12 && (s.cov[(1, 1)] - 16.0).abs() < 1e-12);
        assert!((s.cov[(0, 1)] - 8.0).abs() < 1e-12);
    }

    /// The unbiased MMD² by its definition in plain loops.
    #[test]
    fn mmd_matches_its_definition() {
        let d = 2;
        let a = [0.1f32, 0.5, -0.3, 0.2, 0.9, -1.0];
        let b = [0.0f32, 0.4, 1.2, -0.7, 0.3, 0.3];
        let k = |p: &[f32], q: &[f32]| {
            let dot = p[0] as f64 * q[0] as f64 + p[1] as f64 * q[1] as f64;
            (dot / d as f64 + 1.0).powi(3)
        };
        let row = |f: &[f32], i: usize| f[i * d..(i + 1) * d].to_vec();
        let m = 3.0;
        let mut xx = 0.0;
        let mut yy = 0.0;
        let mut xy = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    xx += k(&row(&a, i), &row(&a, j));
                    yy += k(&row(&b, i), &row(&b, j));
                }
                xy += k(&row(&a, i), &row(&b, j));
            }
        }
        let want = (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m);
        assert!((mmd2_poly(&a, &b, d) - want).abs() < 1e-12);
    }
}
