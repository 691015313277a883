//! Colourisation: A = the luminance of a colour image, Y = w_R R + w_G G + w_B B per pixel with
//! ITU-R BT.601's weights (0.299, 0.587, 0.114; they sum to 1, so Y stays on the model's
//! [−1, 1] scale). One output channel; Aᵀ y = w ⊗ y, AAᵀ = ‖w‖² I, A⁺ y = Aᵀ y / ‖w‖², and
//! (AᵀA + ρI)⁻¹ v = (v − w (wᵀv)/(ρ + ‖w‖²))/ρ pixel by pixel (Sherman–Morrison).

use burn::prelude::*;

use super::ForwardOperator;

/// BT.601 luma weights of R, G, B.
pub const WEIGHTS: [f64; 3] = [0.299, 0.587, 0.114];

#[derive(Debug, Clone, Copy, Default)]
pub struct Luminance;

fn norm2() -> f64 {
    WEIGHTS.iter().map(|w| w * w).sum()
}

/// `[B, 3, H, W]` weighted by channel, or a `[B, 1, H, W]` spread over three weighted channels.
fn weights(device: &Device) -> Tensor<4> {
    let w: Vec<f32> = WEIGHTS.iter().map(|v| *v as f32).collect();
    Tensor::<4>::from_data(TensorData::new(w, [1, 3, 1, 1]), device)
}

impl ForwardOperator for Luminance {
    fn name(&self) -> String {
        "colorize".into()
    }
    /// # Panics
    /// If the images do not have three channels (checked when an experiment is resolved).
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        assert_eq!(c, 3, "colourisation needs RGB images, got {c} channels");
        let w = weights(&x.device());
        (x * w).sum_dim(1)
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        let w = weights(&y.device());
        Some(y * w)
    }
    fn pinv(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.adjoint(y)?.div_scalar(norm2()))
    }
    fn gram_scale(&self) -> Option<f64> {
        Some(norm2())
    }
    fn solve_normal(&self, v: Tensor<4>, rho: f64) -> Option<Tensor<4>> {
        let atav = self.adjoint(self.apply(v.clone()))?;
        Some((v - atav.div_scalar(rho + norm2())).div_scalar(rho))
    }
    fn spectral(&self) -> Option<Box<dyn crate::operator::spectral::Spectral>> {
        Some(Box::new(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::tests::{check_adjoint, check_pinv, check_solve};

    #[test]
    fn luminance_weights_channels_and_its_adjoint_pinv_and_solve_hold() {
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, -1.0, 0.5, 0.25, 0.0, -0.5], [1, 3, 1, 2]),
            &dev,
        );
        let y = tweedie_core::host_values(Luminance.apply(x));
        let want = [
            0.299 + 0.587 * 0.5 + 0.114 * 0.0,
            -0.299 + 0.587 * 0.25 - 0.114 * 0.5,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{y:?}");
        }
        // A grey image keeps its value.
        let grey = Tensor::<4>::ones([1, 3, 2, 2], &dev).mul_scalar(0.3);
        let g = tweedie_core::host_values(Luminance.apply(grey));
        assert!(g.iter().all(|v| (v - 0.3).abs() < 1e-6));
        check_adjoint(&Luminance, [2, 3, 4, 4]);
        check_pinv(&Luminance, [2, 3, 4, 4]);
        check_solve(&Luminance, [2, 3, 4, 4], 0.05);
    }
}
