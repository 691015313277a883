//! Super-resolution: A = average pooling by a factor k (k×k blocks). A Aᵀ = I/k², so
//! Aᵀ y = nearest-neighbour upsampling / k² and A⁺ y = k² Aᵀ y = nearest-neighbour upsampling.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::ForwardOperator;

#[derive(Debug, Clone, Copy)]
pub struct AvgPool {
    pub factor: usize,
}

impl AvgPool {
    fn upsample(&self, y: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = y.dims();
        interpolate(
            y,
            InterpolateOptions::new(InterpolateMode::Nearest)
                .with_output_size([h * self.factor, w * self.factor]),
        )
    }
}

impl ForwardOperator for AvgPool {
    fn name(&self) -> String {
        format!("sr×{}", self.factor)
    }
    /// # Panics
    /// If H or W is not a multiple of the factor (checked when an experiment is resolved).
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.factor;
        let [b, c, h, w] = x.dims();
        assert!(
            h % k == 0 && w % k == 0,
            "{h}×{w} is not divisible by the pooling factor {k}"
        );
        x.reshape([b, c, h / k, k, w / k, k])
            .mean_dim(5)
            .mean_dim(3)
            .reshape([b, c, h / k, w / k])
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        let k2 = (self.factor * self.factor) as f64;
        Some(self.upsample(y).div_scalar(k2))
    }
    fn pinv(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.upsample(y))
    }
    /// Woodbury with AAᵀ = I/k²: (AᵀA + ρI)⁻¹ v = (v − Aᵀ A v / (1/k² + ρ)) / ρ.
    fn gram_scale(&self) -> Option<f64> {
        Some(1.0 / (self.factor * self.factor) as f64)
    }
    fn solve_normal(&self, v: Tensor<4>, rho: f64) -> Option<Tensor<4>> {
        let k2 = (self.factor * self.factor) as f64;
        let atav = self.adjoint(self.apply(v.clone()))?;
        Some((v - atav.div_scalar(1.0 / k2 + rho)).div_scalar(rho))
    }
    fn spectral(&self) -> Option<Box<dyn crate::operator::spectral::Spectral>> {
        Some(Box::new(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::tests::{check_adjoint, check_pinv};

    #[test]
    fn pooling_averages_blocks_and_its_adjoint_and_pinv_hold() {
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new((0..16).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 4, 4]),
            &dev,
        );
        let y = tweedie_core::host_values(AvgPool { factor: 2 }.apply(x));
        assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
        for k in [2, 4] {
            check_adjoint(&AvgPool { factor: k }, [2, 1, 8, 8]);
            check_pinv(&AvgPool { factor: k }, [2, 3, 8, 8]);
            crate::operator::tests::check_solve(&AvgPool { factor: k }, [2, 1, 8, 8], 0.05);
        }
    }
}
