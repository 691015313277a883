//! A dense linear map y = A x of flat vectors (`[B, d, 1, 1]` → `[B, d_y, 1, 1]`): the
//! observation of the Gaussian-mixture benchmarks (MCGdiff's layout: random A with d_y ≪ d).

use burn::prelude::*;

use super::ForwardOperator;

/// A, row-major `d_y × d`.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub a: Vec<Vec<f64>>,
}

impl Matrix {
    fn tensor(&self, device: &Device) -> Tensor<2> {
        let (dy, d) = (self.a.len(), self.a[0].len());
        let v: Vec<f32> = self.a.iter().flatten().map(|x| *x as f32).collect();
        Tensor::from_data(TensorData::new(v, [dy, d]), device)
    }
}

impl ForwardOperator for Matrix {
    fn name(&self) -> String {
        format!("matrix {}×{}", self.a.len(), self.a[0].len())
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let b = x.dims()[0];
        let a = self.tensor(&x.device());
        let dy = self.a.len();
        x.reshape([b as i32, -1])
            .matmul(a.transpose())
            .reshape([b, dy, 1, 1])
    }
    fn mean_gram_diagonal(&self) -> Option<f64> {
        let total: f64 = self.a.iter().flatten().map(|v| v * v).sum();
        Some(total / self.a.len() as f64)
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        let b = y.dims()[0];
        let a = self.tensor(&y.device());
        let d = self.a[0].len();
        Some(y.reshape([b, self.a.len()]).matmul(a).reshape([b, d, 1, 1]))
    }
    fn spectral(&self) -> Option<Box<dyn crate::operator::spectral::Spectral>> {
        Some(Box::new(self.svd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::tests::check_adjoint;

    #[test]
    fn matrix_is_its_own_transpose_adjoint() {
        let m = Matrix {
            a: vec![vec![1.0, -2.0, 0.5], vec![0.3, 0.0, 2.0]],
        };
        check_adjoint(&m, [4, 3, 1, 1]);
        let dev = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [1, 3, 1, 1]), &dev);
        assert_eq!(tweedie_core::host_values(m.apply(x)), vec![-1.5, 6.3]);
    }
}
