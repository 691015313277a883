//! [`FusedOps`] on LibTorch: libtorch's own kernels. Forward: `native_group_norm`, `silu`,
//! `softmax`. Backward: `silu_backward`, `_softmax_backward_data`, and the native GroupNorm and
//! (3×3) convolution backward kernels. tch 0.22 binds neither `native_group_norm_backward` nor
//! `convolution_backward`, so they are called through a TorchScript module bundled with the crate
//! (`aten_ops.pt`, TorchScript source written by `scripts/aten-ops.py`).

use super::{FusedOps, composite};
use burn::backend::LibTorch;
use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;
use burn::tensor::ops::ConvOptions;
use std::sync::OnceLock;
use tch::{CModule, IValue};

/// burn-tch's `TchTensor`: its `tensor` field is the `tch::Tensor`.
type TchTensor = FloatTensor<LibTorch>;

/// The TorchScript module (3 kB), loaded once per process.
fn aten_ops() -> &'static CModule {
    static OPS: OnceLock<CModule> = OnceLock::new();
    OPS.get_or_init(|| {
        CModule::load_data(&mut &include_bytes!("aten_ops.pt")[..])
            .expect("the bundled aten_ops.pt loads in the libtorch tch links")
    })
}

fn arg(t: &TchTensor) -> IValue {
    IValue::Tensor(t.tensor.shallow_clone())
}

/// Calls one of [`aten_ops`]' methods; each returns three tensors.
fn call(method: &str, args: &[IValue]) -> [tch::Tensor; 3] {
    let out = aten_ops()
        .method_is(method, args)
        .unwrap_or_else(|e| panic!("aten_ops.{method}: {e}"));
    let IValue::Tuple(items) = out else {
        panic!("aten_ops.{method} returned {out:?}, not a tuple");
    };
    let tensors: Vec<tch::Tensor> = items
        .into_iter()
        .map(|v| match v {
            IValue::Tensor(t) => t,
            other => panic!("aten_ops.{method} returned {other:?}, not a tensor"),
        })
        .collect();
    tensors
        .try_into()
        .unwrap_or_else(|_| panic!("aten_ops.{method} returned other than 3 tensors"))
}

impl FusedOps for LibTorch {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    ) {
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
        // With SiLU, z is kept for its gradient, as PyTorch's autograd keeps it: recomputing it
        // from the statistics costs two passes over the activation.
        let (y, z) = if silu {
            (z.silu(), Some(TchTensor::new(z)))
        } else {
            (z, None)
        };
        (
            TchTensor::new(y),
            TchTensor::new(mean),
            TchTensor::new(rstd),
            z,
        )
    }

    fn group_norm_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        groups: usize,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if silu {
            // Only reached by direct calls: under autodiff the node applies SiLU's gradient to
            // the z this backend's forward kept, then calls this without SiLU.
            return composite::group_norm_backward::<Self>(
                dy, x, gamma, beta, mean, rstd, groups, silu,
            );
        }
        let args = [
            arg(&dy),
            arg(&x),
            arg(&mean),
            arg(&rstd),
            arg(&gamma),
            IValue::Int(groups as i64),
        ];
        let [dx, dgamma, dbeta] = call("group_norm_backward", &args).map(TchTensor::new);
        (dx, dgamma, dbeta)
    }

    fn fused_silu(z: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(z.tensor.silu())
    }

    fn fused_silu_backward(z: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        // ATen's silu_backward(grad_output, self): tch makes `self` the receiver.
        TchTensor::new(z.tensor.silu_backward(&dy.tensor))
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let kind = x.tensor.kind();
        TchTensor::new(x.tensor.softmax(-1, kind))
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let kind = y.tensor.kind();
        TchTensor::new(tch::Tensor::internal_softmax_backward_data(
            &dy.tensor, &y.tensor, -1, kind,
        ))
    }

    fn conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
        needed: [bool; 3],
    ) -> (
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
        Option<FloatTensor<Self>>,
    ) {
        // 1×1 convolutions keep the batched-matmul weight gradient (the native kernel for them
        // measured no faster, BENCHMARKS.md); asymmetric padding does not reach this op from
        // kernel::conv2d, which pads explicitly first.
        let s = weight.shape();
        let symmetric = options.padding.iter().all(|&(a, b)| a == b);
        if composite::pointwise([s[2], s[3]], &options) || !symmetric {
            return composite::conv2d_backward::<Self>(x, weight, dy, options, needed);
        }
        let ints = |v: &[usize]| IValue::IntList(v.iter().map(|&a| a as i64).collect());
        let padding: Vec<usize> = options.padding.iter().map(|&(a, _)| a).collect();
        let args = [
            arg(&dy),
            arg(&x),
            arg(&weight),
            ints(&options.stride),
            ints(&padding),
            ints(&options.dilation),
            IValue::Int(options.groups as i64),
            IValue::BoolList(needed.to_vec()),
        ];
        // A gradient not asked for comes back as an undefined tensor.
        let [dx, dw, db] = call("conv2d_backward", &args);
        let keep = |t: tch::Tensor, k: bool| k.then(|| TchTensor::new(t));
        (
            keep(dx, needed[0]),
            keep(dw, needed[1]),
            keep(db, needed[2]),
        )
    }

    fn conv2d_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(
            dy.tensor
                .sum_dim_intlist([0i64, 2, 3].as_slice(), false, None),
        )
    }
}
