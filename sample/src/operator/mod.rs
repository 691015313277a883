//! Forward operators A of an observation y = A(x) + noise, on images `[B, C, H, W]` in [−1, 1].
//! All are written with differentiable tensor ops, so guidance can take gradients through them;
//! linear ones also give their adjoint Aᵀ and, where it has a closed form, the pseudo-inverse A⁺.

mod blur;
mod downsample;
mod identity;
mod mask;
mod saturate;

pub use blur::GaussianBlur;
pub use downsample::AvgPool;
pub use identity::Identity;
pub use mask::Mask;
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
    /// (AᵀA + ρI)⁻¹ v, where it has a closed form (the data step of DiffPIR, ΠGDM-style solvers).
    fn solve_normal(&self, _v: Tensor<4>, _rho: f64) -> Option<Tensor<4>> {
        None
    }
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
