//! A non-linear operator: a saturating sensor response A(x) = tanh(g·x). It has no adjoint;
//! guidance reaches it through autodiff only.

use burn::prelude::*;

use super::ForwardOperator;

#[derive(Debug, Clone, Copy)]
pub struct Saturate {
    pub gain: f64,
}

impl ForwardOperator for Saturate {
    fn name(&self) -> String {
        format!("tanh{}", self.gain)
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        x.mul_scalar(self.gain).tanh()
    }
    fn is_linear(&self) -> bool {
        false
    }
    fn adjoint(&self, _y: Tensor<4>) -> Option<Tensor<4>> {
        None
    }
}
