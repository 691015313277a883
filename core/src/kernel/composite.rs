//! The fused operations written with the backend's primitive operations: the reference every
//! specialised kernel is tested against, and the implementation on backends without one.
//!
//! These are the formulas a fused kernel evaluates, not the chain autodiff would derive: the
//! backward pass reduces `dz` and `dz·x` once per (sample, channel) and then writes
//! `dx = A·dz + B·x + C` with per-(sample, channel) coefficients, as PyTorch's CPU GroupNorm kernel
//! does, instead of differentiating the statistics one operation at a time.

use super::FusedOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::Shape;
use burn::tensor::ops::ConvOptions;

fn dims4<B: Backend>(x: &FloatTensor<B>) -> [usize; 4] {
    let s = x.shape();
    assert_eq!(s.num_dims(), 4, "GroupNorm expects [B, C, H, W], got {s:?}");
    [s[0], s[1], s[2], s[3]]
}

/// A `[B, G]` per-group statistic repeated over each group's channels: `[B, C]`.
fn per_channel<B: Backend>(
    stat: FloatTensor<B>,
    b: usize,
    groups: usize,
    c: usize,
) -> FloatTensor<B> {
    let per = c / groups;
    let stat = B::float_reshape(stat, Shape::new([b, groups, 1]));
    let stat = B::float_expand(stat, Shape::new([b, groups, per]));
    B::float_reshape(stat, Shape::new([b, c]))
}

fn per_map<B: Backend>(t: FloatTensor<B>, b: usize, c: usize) -> FloatTensor<B> {
    B::float_reshape(t, Shape::new([b, c, 1, 1]))
}

/// The affine output before SiLU, `z = a·x + shift` with `a = γ_c·rstd_g` and
/// `shift = β_c − μ_g·a`, from the statistics repeated per channel (`[B, C]`).
fn pre_activation<B: Backend>(
    x: FloatTensor<B>,
    mean_c: FloatTensor<B>,
    rstd_c: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
) -> FloatTensor<B> {
    let [b, c, _, _] = dims4::<B>(&x);
    let a = B::float_mul(rstd_c, B::float_reshape(gamma, Shape::new([1, c])));
    let shift = B::float_sub(
        B::float_reshape(beta, Shape::new([1, c])),
        B::float_mul(mean_c, a.clone()),
    );
    B::float_add(
        B::float_mul(x, per_map::<B>(a, b, c)),
        per_map::<B>(shift, b, c),
    )
}

/// GroupNorm (Wu & He 2018, eq. 1–3), then SiLU when `silu`. Returns `(y, mean, rstd)`, the
/// statistics as `[B, G]` with rstd = 1/√(σ² + ε).
pub fn group_norm_forward<B: FusedOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, c, h, w] = dims4::<B>(&x);
    let n = c / groups * h * w;
    let xg = B::float_reshape(x.clone(), Shape::new([b, groups, n]));
    let mean = B::float_mean_dim(xg.clone(), 2);
    let centred = B::float_sub(xg, mean.clone());
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred), 2);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into())));
    let mean = B::float_reshape(mean, Shape::new([b, groups]));
    let rstd = B::float_reshape(rstd, Shape::new([b, groups]));
    let mean_c = per_channel::<B>(mean.clone(), b, groups, c);
    let rstd_c = per_channel::<B>(rstd.clone(), b, groups, c);
    let z = pre_activation::<B>(x, mean_c, rstd_c, gamma, beta);
    let y = if silu { B::fused_silu(z) } else { z };
    (y, mean, rstd)
}

/// Gradients `(dx, dγ, dβ)` of [`group_norm_forward`] for the upstream gradient `dy`.
///
/// With x̂ = (x − μ)·rstd, dz the gradient at the affine output, S1 = Σ_hw dz and S2 = Σ_hw dz·x per
/// (sample, channel), m1 = mean over the group of γ·S1 and m2 = mean over the group of
/// γ·(S2 − μ·S1)·rstd: dβ = Σ_b S1, dγ = Σ_b (S2 − μ·S1)·rstd and
/// dx = rstd·γ·dz − rstd²·m2·x + rstd·(μ·rstd·m2 − m1) (the chain rule through eq. 1–3).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward<B: FusedOps>(
    dy: FloatTensor<B>,
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    rstd: FloatTensor<B>,
    groups: usize,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, c, h, w] = dims4::<B>(&x);
    let per = c / groups;
    let inv_n = 1.0 / (per * h * w) as f64;
    let mean_c = per_channel::<B>(mean, b, groups, c);
    let rstd_c = per_channel::<B>(rstd, b, groups, c);
    let dz = if silu {
        let z = pre_activation::<B>(
            x.clone(),
            mean_c.clone(),
            rstd_c.clone(),
            gamma.clone(),
            beta,
        );
        B::fused_silu_backward(z, dy)
    } else {
        dy
    };
    let flat = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([b, c, h * w]));
    let bc = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([b, c]));
    let s1 = bc(B::float_sum_dim(flat(dz.clone()), 2));
    let s2 = bc(B::float_sum_dim(
        flat(B::float_mul(dz.clone(), x.clone())),
        2,
    ));
    // Σ_hw dz·x̂ per (sample, channel).
    let t = B::float_mul(
        B::float_sub(s2, B::float_mul(mean_c.clone(), s1.clone())),
        rstd_c.clone(),
    );
    let dbeta = B::float_reshape(B::float_sum_dim(s1.clone(), 0), Shape::new([c]));
    let dgamma = B::float_reshape(B::float_sum_dim(t.clone(), 0), Shape::new([c]));
    let gamma_row = B::float_reshape(gamma, Shape::new([1, c]));
    let group_mean = |v: FloatTensor<B>| {
        let v = B::float_reshape(
            B::float_mul(v, gamma_row.clone()),
            Shape::new([b, groups, per]),
        );
        let v = B::float_mul_scalar(B::float_sum_dim(v, 2), inv_n.into());
        per_channel::<B>(B::float_reshape(v, Shape::new([b, groups])), b, groups, c)
    };
    let m1 = group_mean(s1);
    let m2 = group_mean(t);
    let coef_dz = B::float_mul(rstd_c.clone(), gamma_row.clone());
    let rstd2_m2 = B::float_mul(B::float_mul(rstd_c.clone(), rstd_c.clone()), m2);
    let coef_x = B::float_neg(rstd2_m2.clone());
    let coef_1 = B::float_sub(B::float_mul(mean_c, rstd2_m2), B::float_mul(rstd_c, m1));
    let dx = B::float_add(
        B::float_add(
            B::float_mul(dz, per_map::<B>(coef_dz, b, c)),
            B::float_mul(x, per_map::<B>(coef_x, b, c)),
        ),
        per_map::<B>(coef_1, b, c),
    );
    (dx, dgamma, dbeta)
}

/// SiLU (Elfwing et al. 2018; Hendrycks & Gimpel's "swish"): z·σ(z).
pub fn silu<B: Backend>(z: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(z.clone(), B::sigmoid(z))
}

/// d/dz [z·σ(z)] · dy = dy·(σ + z·σ·(1 − σ)).
pub fn silu_backward<B: Backend>(z: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(z.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0f64.into());
    let d = B::float_add(s.clone(), B::float_mul(B::float_mul(z, s), one_minus));
    B::float_mul(dy, d)
}

/// Softmax over the last axis, shifted by the row maximum: exp(x − max) / Σ exp(x − max).
pub fn softmax<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let max = B::float_max_dim(x.clone(), last);
    let e = B::float_exp(B::float_sub(x, max));
    let sum = B::float_sum_dim(e.clone(), last);
    B::float_div(e, sum)
}

/// The gradient of [`softmax`] from its output `y`: y ⊙ (dy − Σ_last dy ⊙ y).
pub fn softmax_backward<B: Backend>(y: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(dy.clone(), y.clone()), last);
    B::float_mul(y, B::float_sub(dy, dot))
}

/// `(dx, dW, db)` of a convolution, each where `needed`: burn's input gradient (a transposed
/// convolution) and the backend's [`FusedOps::conv2d_weight_grad`] and
/// [`FusedOps::conv2d_bias_grad`].
#[allow(clippy::type_complexity)]
pub fn conv2d_backward<B: FusedOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
    options: ConvOptions<2>,
    needed: [bool; 3],
) -> (
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
) {
    let db = needed[2].then(|| B::conv2d_bias_grad(dy.clone()));
    let dx = needed[0]
        .then(|| B::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), options.clone()));
    let dw = needed[1].then(|| B::conv2d_weight_grad(x, weight, dy, options));
    (dx, dw, db)
}

/// Whether a convolution is a per-pixel matrix product: 1×1 kernel, unit stride and dilation, no
/// padding, one group.
pub(crate) fn pointwise(kernel: [usize; 2], options: &ConvOptions<2>) -> bool {
    kernel == [1, 1]
        && options.stride == [1, 1]
        && options.dilation == [1, 1]
        && options.padding == [(0, 0); 2]
        && options.groups == 1
}

/// The weight gradient of `conv2d(x, weight)` for the upstream gradient `dy`.
///
/// A 1×1 convolution is y_b = W·x_b per sample (x_b: `[C, HW]`), so dW = Σ_b dy_b·x_bᵀ: one
/// batched matrix product and a sum over the batch. burn derives it as a convolution over the
/// batch axis with the whole image as kernel, which costs several times more (BENCHMARKS.md).
/// Other shapes keep burn's derivation.
pub fn conv2d_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    let [o, c, kh, kw] = dims4::<B>(&weight);
    if !pointwise([kh, kw], &options) {
        return B::conv2d_weight_backward(x, weight, dy, options);
    }
    let [b, _, h, w] = dims4::<B>(&x);
    let dy = B::float_reshape(dy, Shape::new([b, o, h * w]));
    let xt = B::float_swap_dims(B::float_reshape(x, Shape::new([b, c, h * w])), 1, 2);
    let per_sample = B::float_matmul(dy, xt);
    B::float_reshape(B::float_sum_dim(per_sample, 0), Shape::new([o, c, 1, 1]))
}

/// The bias gradient of a convolution: Σ over batch and pixels of `dy: [B, O, H, W]`, reducing
/// the batch axis first (a contiguous sum of whole maps) instead of transposing `dy` as burn does.
pub fn conv2d_bias_grad<B: Backend>(dy: FloatTensor<B>) -> FloatTensor<B> {
    let [_, o, h, w] = dims4::<B>(&dy);
    let maps = B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([o, h * w]));
    B::float_reshape(B::float_sum_dim(maps, 1), Shape::new([o]))
}
