//! Deblurring: A = convolution with a normalised Gaussian kernel (size k odd, std σ pixels),
//! zero padding, same output size, per channel. The kernel is symmetric, so Aᵀ is the same
//! convolution (zero-padded 'same' correlation with a flipped kernel is the exact transpose).

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use super::ForwardOperator;

#[derive(Debug, Clone)]
pub struct GaussianBlur {
    pub size: usize,
    pub sigma: f64,
}

impl GaussianBlur {
    /// The normalised k×k kernel.
    pub fn kernel(&self) -> Vec<f32> {
        let c = (self.size / 2) as f64;
        let mut k: Vec<f64> = (0..self.size * self.size)
            .map(|i| {
                let (r, q) = ((i / self.size) as f64 - c, (i % self.size) as f64 - c);
                (-(r * r + q * q) / (2.0 * self.sigma * self.sigma)).exp()
            })
            .collect();
        let s: f64 = k.iter().sum();
        k.iter_mut().for_each(|v| *v /= s);
        k.into_iter().map(|v| v as f32).collect()
    }

    fn conv(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        let k = self.size;
        let kernel: Vec<f32> = (0..c).flat_map(|_| self.kernel()).collect();
        let weight = Tensor::<4>::from_data(TensorData::new(kernel, [c, 1, k, k]), &x.device());
        let p = k / 2;
        conv2d(x, weight, None, ConvOptions::new([1, 1], [p, p], [1, 1], c))
    }
}

impl ForwardOperator for GaussianBlur {
    fn name(&self) -> String {
        format!("blur{}σ{}", self.size, self.sigma)
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv(x)
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.conv(y))
    }
    /// Σ k²: the diagonal of AAᵀ away from the border (zero padding lowers it there).
    fn mean_gram_diagonal(&self) -> Option<f64> {
        Some(self.kernel().iter().map(|v| (*v as f64).powi(2)).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::tests::check_adjoint;

    #[test]
    fn kernel_is_normalised_blur_keeps_constants_inside_and_is_self_adjoint() {
        let b = GaussianBlur {
            size: 5,
            sigma: 1.0,
        };
        let k = b.kernel();
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6 && k[12] > k[11]);
        let dev = Device::flex();
        let y = tweedie_core::host_values(b.apply(Tensor::<4>::ones([1, 2, 9, 9], &dev)));
        assert!(
            (y[4 * 9 + 4] - 1.0).abs() < 1e-6,
            "a constant image stays constant away from the border"
        );
        check_adjoint(&b, [2, 3, 9, 9]);
    }

    #[test]
    fn conjugate_gradients_solve_the_normal_equations_of_blur() {
        let b = GaussianBlur {
            size: 5,
            sigma: 1.0,
        };
        let dev = Device::flex();
        let v = tweedie_core::rng::Rng::new(3).normal_tensor([2, 1, 12, 12], &dev);
        let rho = 0.05;
        let z = crate::operator::solve_normal(&b, v.clone(), rho, 200);
        let back = b.adjoint(b.apply(z.clone())).expect("linear") + z.mul_scalar(rho);
        let err: f32 = (back - v).abs().max().into_scalar();
        assert!(err < 1e-3, "|(A'A + rho I) z - v| = {err}");
        // The regularised pseudo-inverse reproduces a blurred image's observation: A A+ y ≈ y.
        let x = tweedie_core::rng::Rng::new(4).normal_tensor([1, 1, 12, 12], &dev);
        let y = b.apply(x);
        let again = b.apply(crate::operator::pseudo_inverse(&b, y.clone()).expect("linear"));
        let rel: f32 = ((again - y.clone()).square().sum() / y.square().sum()).into_scalar();
        assert!(rel < 1e-2, "relative |A A+ y - y|² = {rel}");
    }
}
