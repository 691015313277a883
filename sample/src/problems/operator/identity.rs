//! Denoising: A = I.

use burn::prelude::*;

use super::ForwardOperator;

#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl ForwardOperator for Identity {
    fn name(&self) -> String {
        "identity".into()
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(y)
    }
    fn pinv(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(y)
    }
    fn gram_scale(&self) -> Option<f64> {
        Some(1.0)
    }
    fn solve_normal(&self, v: Tensor<4>, rho: f64) -> Option<Tensor<4>> {
        Some(v.div_scalar(1.0 + rho))
    }
    fn spectral(&self) -> Option<Box<dyn crate::operator::spectral::Spectral>> {
        Some(Box::new(*self))
    }
}
