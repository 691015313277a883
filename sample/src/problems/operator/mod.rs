//! Forward operators A of an observation y = A(x) + noise, on images `[B, C, H, W]` in [−1, 1].
//! All are written with differentiable tensor ops, so guidance can take gradients through them;
//! linear ones also give their adjoint Aᵀ and, where it has a closed form, the pseudo-inverse A⁺.

mod blur;
mod downsample;
mod identity;
mod luminance;
mod mask;
mod matrix;
mod saturate;
pub mod spectral;

pub use blur::GaussianBlur;
pub use downsample::AvgPool;
pub use identity::Identity;
pub use luminance::{Luminance, WEIGHTS as LUMINANCE_WEIGHTS};
pub use mask::Mask;
pub use matrix::Matrix;
pub use saturate::Saturate;

use burn::prelude::*;

/// A forward operator.
pub trait ForwardOperator {
    /// A short description, e.g. `sr×4`.
    fn name(&self) -> String;
    /// A(x).
    fn apply(&self, x: Tensor<4>) -> Tensor<4>;
    /// Whether A is linear (then `adjoint` is `Some`).
    fn is_linear(&self) -> bool {
        true
    }
    /// Aᵀ y, for linear operators.
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>>;
    /// A⁺ y (Moore–Penrose), where it has a closed form.
    fn pinv(&self, _y: Tensor<4>) -> Option<Tensor<4>> {
        None
    }
    /// c with AAᵀ = c·I on the observed coordinates, where A has that form (ΠGDM's closed form).
    fn gram_scale(&self) -> Option<f64> {
        None
    }
    /// The mean diagonal entry of AAᵀ (= c when AAᵀ = c·I): the scalar stand-in for AAᵀ in an
    /// inflated twist (see [`crate::likelihood::Likelihood::log_prob_at`]).
    fn mean_gram_diagonal(&self) -> Option<f64> {
        self.gram_scale()
    }
    /// (AᵀA + ρI)⁻¹ v, where it has a closed form (the data step of DiffPIR, ΠGDM-style solvers).
    fn solve_normal(&self, _v: Tensor<4>, _rho: f64) -> Option<Tensor<4>> {
        None
    }
    /// A = U Σ Vᵀ in closed form, where it has one (the spectral methods: DDRM, DDNM).
    fn spectral(&self) -> Option<Box<dyn spectral::Spectral>> {
        None
    }
}

/// ⟨a, b⟩ per sample: `[B, …]` → B host values.
fn dot_per_sample(a: Tensor<4>, b: Tensor<4>) -> Vec<f64> {
    let n = a.dims()[0];
    tweedie_core::host_values((a * b).reshape([n as i32, -1]).sum_dim(1))
        .into_iter()
        .map(f64::from)
        .collect()
}

fn scale_per_sample(x: Tensor<4>, s: &[f64]) -> Tensor<4> {
    let s: Vec<f32> = s.iter().map(|v| *v as f32).collect();
    let n = s.len();
    let device = x.device();
    x * Tensor::<4>::from_data(TensorData::new(s, [n, 1, 1, 1]), &device)
}

/// (AᵀA + ρI)⁻¹ v for any linear `op`: its closed form where it has one, else `iters` steps of
/// conjugate gradients ([`conjugate_gradients`]). With ρ > 0 the system is symmetric positive
/// definite; ρ → 0 gives the least-squares (pseudo-inverse) solution restricted to the Krylov
/// space, i.e. a regularised A⁺.
pub fn solve_normal(op: &dyn ForwardOperator, v: Tensor<4>, rho: f64, iters: usize) -> Tensor<4> {
    if let Some(z) = op.solve_normal(v.clone(), rho) {
        return z;
    }
    conjugate_gradients(
        |x| {
            op.adjoint(op.apply(x.clone()))
                .expect("solve_normal needs a linear operator")
                + x.mul_scalar(rho)
        },
        v,
        iters,
    )
}

/// M⁻¹ b for a symmetric positive definite M given by its action, by at most `iters` steps of
/// conjugate gradients (Hestenes & Stiefel 1952) from 0, run independently per sample; a sample
/// stops moving once its residual is 1e-6 of the initial one.
pub fn conjugate_gradients(
    m: impl Fn(Tensor<4>) -> Tensor<4>,
    b: Tensor<4>,
    iters: usize,
) -> Tensor<4> {
    let mut x = b.zeros_like();
    let mut r = b;
    let mut p = r.clone();
    let mut rr = dot_per_sample(r.clone(), r.clone());
    let rr0: Vec<f64> = rr.clone();
    let done = |r: &f64, r0: &f64| *r <= 1e-12 * r0;
    for _ in 0..iters {
        let mp = m(p.clone());
        let pmp = dot_per_sample(p.clone(), mp.clone());
        let alpha: Vec<f64> = rr
            .iter()
            .zip(&pmp)
            .zip(&rr0)
            .map(|((r, q), r0)| if done(r, r0) || *q <= 0.0 { 0.0 } else { r / q })
            .collect();
        x = x + scale_per_sample(p.clone(), &alpha);
        r = r - scale_per_sample(mp, &alpha);
        let rr_new = dot_per_sample(r.clone(), r.clone());
        let beta: Vec<f64> = rr_new
            .iter()
            .zip(&rr)
            .map(|(n, o)| if *o > 0.0 { n / o } else { 0.0 })
            .collect();
        p = r.clone() + scale_per_sample(p, &beta);
        rr = rr_new;
        if rr.iter().zip(&rr0).all(|(r, r0)| done(r, r0)) {
            break;
        }
    }
    x
}

/// A⁺ y: the closed form where the operator has one, else the least-squares solution by
/// conjugate gradients on AᵀA z = Aᵀ y with a small ridge ρ = 1e-3 (ill-conditioned operators such
/// as blur would otherwise amplify the noise without bound). `None` for non-linear operators.
pub fn pseudo_inverse(op: &dyn ForwardOperator, y: Tensor<4>) -> Option<Tensor<4>> {
    if let Some(z) = op.pinv(y.clone()) {
        return Some(z);
    }
    let aty = op.adjoint(y)?;
    Some(solve_normal(op, aty, 1e-3, 100))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tweedie_core::rng::Rng;

    /// ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for random x, y: the adjoint is the transpose.
    pub fn check_adjoint(op: &dyn ForwardOperator, shape: [usize; 4]) {
        let dev = Device::flex();
        let mut r = Rng::new(4);
        let x = r.normal_tensor(shape, &dev);
        let ax = op.apply(x.clone());
        let ys = ax.dims();
        let y = r.normal_tensor(ys, &dev);
        let lhs: f32 = (ax * y.clone()).sum().into_scalar();
        let rhs: f32 = (x * op.adjoint(y).expect("linear")).sum().into_scalar();
        assert!(
            (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
            "{}: <Ax,y> = {lhs}, <x,A'y> = {rhs}",
            op.name()
        );
    }

    /// (AᵀA + ρI) z = v for z = `solve_normal(v, ρ)`.
    pub fn check_solve(op: &dyn ForwardOperator, shape: [usize; 4], rho: f64) {
        let dev = Device::flex();
        let v = Rng::new(6).normal_tensor(shape, &dev);
        let z = op.solve_normal(v.clone(), rho).expect("closed form");
        let back = op.adjoint(op.apply(z.clone())).expect("linear") + z.mul_scalar(rho);
        let err: f32 = (back - v).abs().max().into_scalar();
        assert!(err < 1e-4, "{}: |(A'A + rho I) z - v| = {err}", op.name());
    }

    /// A A⁺ A = A on random x.
    pub fn check_pinv(op: &dyn ForwardOperator, shape: [usize; 4]) {
        let dev = Device::flex();
        let mut r = Rng::new(5);
        let x = r.normal_tensor(shape, &dev);
        let ax = op.apply(x);
        let again = op.apply(op.pinv(ax.clone()).expect("pinv"));
        let err: f32 = (again - ax).abs().max().into_scalar();
        assert!(err < 1e-5, "{}: |A A+ A x - A x| = {err}", op.name());
    }
}
