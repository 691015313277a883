//! Fused operations the U-Net spends its CPU time in, as a burn backend extension.
//!
//! burn has no GroupNorm or SiLU kernel: composed from elementwise operations, GroupNorm + SiLU
//! costs about twenty full passes over the activation per training step under autodiff, which is
//! where most of the gap to PyTorch on the CPU was (BENCHMARKS.md). [`FusedOps`] adds them as
//! backend operations with hand-written gradients:
//!
//! - **Flex** (the default CPU backend): [`flex`], Rust loops, three passes forward and two
//!   backward, parallel over (sample, group);
//! - **LibTorch**: libtorch's own `native_group_norm` and `silu`/`silu_backward`, with the
//!   backward of [`composite`] in torch operations;
//! - **NdArray**: [`composite`], the same formulas in primitive operations;
//! - anything else (wgpu, whose fusion already merges elementwise chains): the differentiable
//!   composition in [`crate::unet::GroupNorm`], chosen by [`fused_available`].
//!
//! [`autodiff`] records one graph node per call whose backward calls the backend's
//! `group_norm_backward` / `fused_silu_backward`.

// NdArray is deprecated in burn 0.22 but still one of our backends (`--backend ndarray`).
#![allow(deprecated)]

mod autodiff;
pub mod composite;
pub mod conv;
mod flex;
#[cfg(feature = "tch")]
mod tch;

pub use flex::use_own_convolutions;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// Backend operations with hand-written gradients. Defaults are [`composite`]'s primitive-op
/// formulas; backends override them with kernels.
#[backend_extension(Flex, NdArray, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait FusedOps: Backend {
    /// GroupNorm with affine γ, β over `groups` groups, followed by SiLU when `silu`.
    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        Self::group_norm_forward(x, gamma, beta, groups, eps, silu).0
    }

    /// [`Self::group_norm_silu`] that also returns the statistics `(mean, rstd)` as `[B, G]`, and
    /// the pre-activation z = γ·x̂ + β when the backend's backward would rather read it than
    /// recompute it (`None` otherwise, and always without SiLU).
    #[allow(clippy::type_complexity)]
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
        let (y, mean, rstd) =
            composite::group_norm_forward::<Self>(x, gamma, beta, groups, eps, silu);
        (y, mean, rstd, None)
    }

    /// `(dx, dγ, dβ)` for the upstream gradient `dy` of [`Self::group_norm_silu`]. (Where the
    /// forward kept z, the autodiff node applies SiLU's gradient itself and calls this without.)
    #[allow(clippy::too_many_arguments)]
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
        composite::group_norm_backward::<Self>(dy, x, gamma, beta, mean, rstd, groups, silu)
    }

    /// z·σ(z).
    fn fused_silu(z: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::silu::<Self>(z)
    }

    /// The gradient of [`Self::fused_silu`] at `z` for the upstream gradient `dy`.
    fn fused_silu_backward(z: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::silu_backward::<Self>(z, dy)
    }

    /// Softmax over the last axis ([`composite::softmax`]).
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::softmax::<Self>(x)
    }

    /// The gradient of [`Self::fused_softmax`] from its output `y` and the upstream `dy`.
    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::softmax_backward::<Self>(y, dy)
    }

    /// burn's `conv2d` as an operation of this extension, so that under autodiff its gradients are
    /// [`Self::conv2d_backward`]'s.
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options)
    }

    /// The gradients `(dx, dW, db)` of `conv2d(x, weight, bias)` for the upstream gradient `dy`,
    /// each computed only where `needed` ([`composite::conv2d_backward`]).
    #[allow(clippy::type_complexity)]
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
        composite::conv2d_backward::<Self>(x, weight, dy, options, needed)
    }

    /// dW of `conv2d(x, weight)` for the upstream gradient `dy` ([`composite::conv2d_weight_grad`]).
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        composite::conv2d_weight_grad::<Self>(x, weight, dy, options)
    }

    /// db of a convolution for the upstream gradient `dy: [B, O, H, W]`.
    fn conv2d_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composite::conv2d_bias_grad::<Self>(dy)
    }
}

impl FusedOps for burn::backend::NdArray {}

/// Whether `device`'s backend has [`FusedOps`] (Flex, NdArray, LibTorch, with or without
/// autodiff). On the others the callers compose the operation from tensor operations.
pub fn fused_available(device: &Device) -> bool {
    fn covers(device: &DispatchDevice) -> bool {
        match device {
            DispatchDevice::Flex(_) | DispatchDevice::NdArray(_) => true,
            #[cfg(feature = "tch")]
            DispatchDevice::LibTorch(_) => true,
            DispatchDevice::Autodiff(inner) => covers(inner),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    covers(device.as_dispatch())
}

/// GroupNorm over `groups` groups of `x: [B, C, H, W]` with per-channel γ, β `[C]`, then SiLU when
/// `silu`, as one differentiable operation. Only on backends where [`fused_available`].
pub fn group_norm_silu(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::group_norm_silu(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        groups,
        eps,
        silu,
    ))
}

/// SiLU, z·σ(z): one operation with its own gradient where [`fused_available`], burn's composition
/// elsewhere.
pub fn silu<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    if fused_available(&z.device()) {
        Tensor::from_dispatch(Dispatch::fused_silu(z.into_dispatch()))
    } else {
        burn::tensor::activation::silu(z)
    }
}

/// Softmax over the last axis: one operation with its own gradient where [`fused_available`]
/// (libtorch's kernels on LibTorch), burn's composition elsewhere.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if fused_available(&x.device()) {
        Tensor::from_dispatch(Dispatch::fused_softmax(x.into_dispatch()))
    } else {
        burn::tensor::activation::softmax(x, D - 1)
    }
}

/// A burn `Conv2d` layer applied to `x`: where [`fused_available`], one operation whose weight and
/// bias gradients are [`FusedOps`]'; elsewhere (and for layers without bias or with `Same`
/// padding) the layer's own `forward`. The parameters are the layer's, so records are unchanged.
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match layer.padding {
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return layer.forward(x),
    };
    let Some(bias) = &layer.bias else {
        return layer.forward(x);
    };
    if !fused_available(&x.device()) {
        return layer.forward(x);
    }
    // Asymmetric padding (TensorFlow's 'SAME' at stride 2) is done here, once, as zeros with the
    // input written in: burn pads inside the convolution and again in each of its two gradients,
    // through a host-side buffer that is copied to the device every time.
    let [(top, bottom), (left, right)] = padding;
    let (x, padding) = if top != bottom || left != right {
        let (t, l) = (top.min(bottom), left.min(right));
        let extra = [top - t, bottom - t, left - l, right - l];
        (pad_zeros(x, extra), [(t, t), (l, l)])
    } else {
        (x, padding)
    };
    let options =
        ConvOptions::new_with_padding(layer.stride, padding, layer.dilation, layer.groups);
    RECORDED.with(|r| {
        if let Some(calls) = r.borrow_mut().as_mut() {
            let padding = [padding[0].0, padding[1].0];
            let g = conv::Geometry::new(x.dims(), layer.weight.dims(), layer.stride, padding);
            calls.extend(g);
        }
    });
    Tensor::from_dispatch(Dispatch::fused_conv2d(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        options,
    ))
}

/// A convolution with bias of raw tensors (inference networks read from files: Inception,
/// AlexNet): the [`FusedOps`] kernel where [`fused_available`] (on flex, the shifted matrix
/// products of [`conv`]), burn's `conv2d` elsewhere.
pub fn conv2d_with(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !fused_available(&x.device()) {
        return burn::tensor::module::conv2d(x, weight, Some(bias), options);
    }
    Tensor::from_dispatch(Dispatch::fused_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
    ))
}

thread_local! {
    static RECORDED: std::cell::RefCell<Option<Vec<conv::Geometry>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns the convolutions [`conv2d`] was called with on this thread, in call order
/// (asymmetric padding already applied): the shapes of a network's convolutions, for `bench`.
pub fn record_convolutions(f: impl FnOnce()) -> Vec<conv::Geometry> {
    RECORDED.with(|r| *r.borrow_mut() = Some(Vec::new()));
    f();
    RECORDED.with(|r| r.borrow_mut().take().unwrap_or_default())
}

/// `x: [B, C, H, W]` with `[top, bottom, left, right]` rows and columns of zeros around it; the
/// gradient is the slice of the upstream one.
fn pad_zeros(x: Tensor<4>, [top, bottom, left, right]: [usize; 4]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let padded = Tensor::zeros([b, c, top + h + bottom, left + w + right], &x.device());
    padded.slice_assign([0..b, 0..c, top..top + h, left..left + w], x)
}

/// The autodiff devices of every backend with [`FusedOps`] in this build, for tests comparing
/// the kernels with burn's compositions (`--features tweedie-core/tch` adds LibTorch).
#[cfg(test)]
pub(crate) fn test_devices() -> Vec<Device> {
    let devices = vec![Device::flex().autodiff(), Device::ndarray().autodiff()];
    #[cfg(feature = "tch")]
    let devices = [devices, vec![Device::libtorch().autodiff()]].concat();
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_values;

    /// Each of our value lists against burn's, named by `names`: the same length and every element
    /// within `tol` relative to 1 + |burn's value|.
    fn assert_close(ours: &[Vec<f32>], theirs: &[Vec<f32>], names: &[&str], tol: f32, case: &str) {
        for ((a, b), what) in ours.iter().zip(theirs).zip(names) {
            assert_eq!(a.len(), b.len(), "{case} {what}");
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= tol * (1.0 + q.abs()),
                    "{case} {what}[{i}]: {p} vs {q}"
                );
            }
        }
    }

    /// The layer applied to `x0` through [`conv2d`] (`fused`) or its own forward: y and the
    /// gradients of x, W and b for a loss whose gradient differs per output element.
    fn conv_eval(layer: &burn::nn::conv::Conv2d, x0: &Tensor<4>, fused: bool) -> [Vec<f32>; 4] {
        let x = x0.clone().require_grad();
        let y = if fused {
            conv2d(layer, x.clone())
        } else {
            layer.forward(x.clone())
        };
        let r = y.clone().detach().sin();
        let grads = (y.clone() * r).sum().backward();
        [
            host_values(y),
            host_values(x.grad(&grads).unwrap()),
            host_values(layer.weight.grad(&grads).unwrap()),
            host_values(layer.bias.as_ref().unwrap().grad(&grads).unwrap()),
        ]
    }

    /// The fused SiLU (Flex's loop, NdArray's composition) against burn's in value and gradient,
    /// over the range where σ saturates, on both autodiff and plain devices.
    #[test]
    fn silu_matches_burn_in_value_and_gradient() {
        let zs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.05).collect();
        for device in test_devices() {
            let eval = |fused: bool| {
                let z = Tensor::<1>::from_floats(zs.as_slice(), &device).require_grad();
                let y = if fused {
                    silu(z.clone())
                } else {
                    burn::tensor::activation::silu(z.clone())
                };
                let grads = (y.clone() * y.clone()).sum().backward();
                [host_values(y), host_values(z.grad(&grads).unwrap())]
            };
            let case = format!("{device:?}");
            assert_close(&eval(true), &eval(false), &["y", "dz"], 2e-6, &case);
        }
        let plain = host_values(silu(Tensor::<1>::from_floats(
            zs.as_slice(),
            &Device::flex(),
        )));
        assert!((plain[600] - 5.0 / (1.0 + (-5.0f32).exp())).abs() < 1e-6);
    }

    /// The convolution op against burn's `Conv2d::forward`: output and the gradients of x, W and b,
    /// for a 1×1 (the matrix-product weight gradient), a padded 3×3 and a strided 3×3 with
    /// asymmetric padding (burn's derivation), on every backend with the extension.
    #[test]
    fn conv2d_matches_burn_in_value_and_gradients() {
        use burn::nn::conv::Conv2dConfig;
        let cases = [
            (3, 5, 1, 1, (0, 0, 0, 0)),
            (3, 5, 3, 1, (1, 1, 1, 1)),
            (4, 2, 3, 2, (0, 0, 1, 1)),
            // Padded in part by the convolution (1 row, 0 columns) and in part explicitly.
            (2, 3, 3, 1, (1, 0, 2, 1)),
        ];
        for device in test_devices() {
            for (cin, cout, k, stride, (top, left, bottom, right)) in cases {
                let layer = Conv2dConfig::new([cin, cout], [k, k])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
                    .init(&device);
                let mut rng = crate::rng::Rng::new(7);
                let x0 = rng.normal_tensor([2, cin, 7, 6], &device);
                let case = format!("{device:?} k={k} s={stride}");
                let names = ["y", "dx", "dW", "db"];
                let (ours, theirs) = (conv_eval(&layer, &x0, true), conv_eval(&layer, &x0, false));
                assert_close(&ours, &theirs, &names, 1e-4, &case);
            }
        }
    }

    /// The fused softmax against burn's in value and in the input gradient, with rows far from 0
    /// (the maximum shift matters) and a loss whose gradient differs per element.
    #[test]
    fn softmax_matches_burn_in_value_and_gradient() {
        for device in test_devices() {
            let mut rng = crate::rng::Rng::new(3);
            let x0 = rng
                .normal_tensor([2, 5, 7], &device)
                .mul_scalar(4.0)
                .add_scalar(30.0);
            let eval = |fused: bool| {
                let x = x0.clone().require_grad();
                let y = if fused {
                    softmax(x.clone())
                } else {
                    burn::tensor::activation::softmax(x.clone(), 2)
                };
                let r = y.clone().detach().mul_scalar(7.0).sin();
                let grads = (y.clone() * r).sum().backward();
                [host_values(y), host_values(x.grad(&grads).unwrap())]
            };
            let case = format!("{device:?}");
            assert_close(&eval(true), &eval(false), &["y", "dx"], 1e-5, &case);
        }
    }

    /// A burn `Conv2d` on larger batches and awkward shapes (batch 1 and 33, odd sizes, channels
    /// off multiples of 16, stride 2 with symmetric padding): the op (flex: [`conv`]'s kernels)
    /// against the layer's own forward and burn's gradients.
    #[test]
    fn conv2d_kernels_match_burn_on_batches_of_one_and_thirty_three() {
        use burn::nn::conv::Conv2dConfig;
        let cases = [
            (1, 17, 19, 3, 1, 1, 9, 7),
            (33, 3, 5, 3, 1, 1, 7, 5),
            (33, 5, 6, 3, 2, 1, 9, 8),
            (1, 20, 18, 1, 1, 0, 5, 3),
        ];
        let device = Device::flex().autodiff();
        for (batch, cin, cout, k, stride, pad, h, w) in cases {
            let layer = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(&device);
            let mut rng = crate::rng::Rng::new(9);
            let x0 = rng.normal_tensor([batch, cin, h, w], &device);
            let (ours, theirs) = (conv_eval(&layer, &x0, true), conv_eval(&layer, &x0, false));
            let case = format!("batch {batch} {cin}→{cout} k={k} s={stride} p={pad} {h}×{w}");
            assert_close(&ours, &theirs, &["y", "dx", "dW", "db"], 1e-4, &case);
        }
    }

    /// The whole U-Net on flex (attention, a stride-2 convolution with asymmetric padding,
    /// up-sampling) with the convolution kernels against burn-flex's own convolutions: ε̂, ∂x₀ and
    /// every parameter's gradient of L_simple within 1e-4 of the largest.
    #[test]
    fn the_unet_on_the_convolution_kernels_matches_burns_convolutions() {
        use crate::loss::l_simple;
        use crate::schedule::{BetaSchedule, NoiseSchedule};
        use crate::unet::UNetConfig;
        use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
        struct Redraw(crate::rng::Rng);
        impl ModuleMapper for Redraw {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (id, t, mapper) = p.consume();
                let dims = t.dims();
                let v: Vec<f32> = self
                    .0
                    .normals(dims.iter().product())
                    .iter()
                    .map(|z| 0.2 * z)
                    .collect();
                let fresh = Tensor::<1>::from_floats(v.as_slice(), &t.device()).reshape(dims);
                Param::from_mapped_value(id, fresh.require_grad(), mapper)
            }
        }
        struct Grads<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);
        impl ModuleVisitor for Grads<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if let Some(g) = p.val().grad(self.0) {
                    self.1.push(host_values(g));
                }
            }
        }
        let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
        let t = [3, 250, 999];
        let dev = Device::flex().autodiff();
        let run = |own: bool| {
            use_own_convolutions(own);
            let net = UNetConfig::new(1, 10, 32, vec![1, 2], 1, vec![5], 0.0).init_seeded(&dev, 7);
            let net = net.map(&mut Redraw(crate::rng::Rng::new(11)));
            let mut rng = crate::rng::Rng::new(2);
            let x0 = rng.normal_tensor([3, 1, 10, 10], &dev).require_grad();
            let eps = rng.normal_tensor([3, 1, 10, 10], &dev);
            let out = host_values(crate::denoiser::Denoiser::eps(&net, x0.clone(), &t));
            let grads = l_simple(&net, &s, x0.clone(), &t, eps).backward();
            let mut each = Grads(&grads, vec![host_values(x0.grad(&grads).unwrap())]);
            net.visit(&mut each);
            use_own_convolutions(true);
            (out, each.1)
        };
        let (ours, theirs) = (run(true), run(false));
        // Different summation orders: the two runs did take different paths.
        assert_ne!(ours.1, theirs.1, "both runs took the same convolution path");
        let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff =
            |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff(&ours.0, &theirs.0) < 1e-4 * max_abs(&theirs.0), "ε̂");
        assert_eq!(ours.1.len(), theirs.1.len());
        let scale = theirs.1.iter().fold(0f32, |m, g| m.max(max_abs(g)));
        for (i, (a, b)) in ours.1.iter().zip(&theirs.1).enumerate() {
            assert!(
                diff(a, b) < 1e-4 * scale,
                "gradient {i}: {} of {scale}",
                diff(a, b)
            );
        }
    }

    #[test]
    fn fused_operations_cover_the_cpu_backends_and_their_autodiff() {
        assert!(fused_available(&Device::flex()));
        assert!(fused_available(&Device::flex().autodiff()));
        assert!(fused_available(&Device::ndarray().autodiff()));
    }
}
