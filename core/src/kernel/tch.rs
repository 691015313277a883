//! [`FusedOps`] on LibTorch: libtorch's fused `native_group_norm` forward and its `silu` /
//! `silu_backward` kernels, and a convolution bias gradient that sums without a transpose. The
//! GroupNorm backward is [`super::composite`]'s, in torch operations (tch 0.22 does not expose
//! `native_group_norm_backward`; Rust loops over copies of the tensors and a six-pass version in
//! fused torch multiply-adds were both slower, BENCHMARKS.md).

use super::FusedOps;
use burn::backend::LibTorch;
use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;

/// burn-tch's `TchTensor`: its `tensor` field is the `tch::Tensor`.
type TchTensor = FloatTensor<LibTorch>;

impl FusedOps for LibTorch {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let s = x.shape();
        let (z, mean, rstd) = x.tensor.native_group_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            s[0] as i64,
            s[1] as i64,
            (s[2] * s[3]) as i64,
            groups as i64,
            eps,
        );
        let y = if silu { z.silu() } else { z };
        (
            TchTensor::new(y),
            TchTensor::new(mean),
            TchTensor::new(rstd),
        )
    }

    fn fused_silu(z: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(z.tensor.silu())
    }

    fn fused_silu_backward(z: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        // ATen's silu_backward(grad_output, self): tch makes `self` the receiver.
        TchTensor::new(z.tensor.silu_backward(&dy.tensor))
    }

    fn conv2d_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(
            dy.tensor
                .sum_dim_intlist([0i64, 2, 3].as_slice(), false, None),
        )
    }
}
