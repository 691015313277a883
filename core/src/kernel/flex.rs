//! [`FusedOps`] on Flex: GroupNorm + SiLU and SiLU as Rust loops over contiguous `f32` data,
//! parallel over (sample, group) blocks with rayon. Anything else (another dtype) goes to
//! [`composite`].
//!
//! Forward: three passes over a block (mean, centred variance, output). Backward: two (the
//! per-channel sums Σdz, Σdz·x while writing dz, then dx = A·dz + B·x + C in place), against about
//! twenty for the autodiff composition.

use super::{FusedOps, composite, conv};
use burn::backend::Flex;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DType, TensorData, TensorMetadata};
use burn::tensor::Shape;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Whether this thread's convolutions on flex run [`conv`]'s kernels (true unless
    /// `TWEEDIE_CONV=burn`) or burn-flex's own im2col path; see [`use_own_convolutions`].
    static OWN_CONV: Cell<bool> = Cell::new(std::env::var("TWEEDIE_CONV").as_deref() != Ok("burn"));
}

/// Run this thread's flex convolutions on [`conv`]'s kernels (`true`, the default) or on burn-flex's
/// own path (`false`, as before the kernels; also `TWEEDIE_CONV=burn` for a whole process). For
/// side-by-side checks and measurements; work on other threads (rayon's) is not affected.
pub fn use_own_convolutions(on: bool) {
    OWN_CONV.with(|c| c.set(on));
}

/// The kernel's geometry for a convolution with these options and f32 operands, or `None` where
/// burn's path runs (dilation, groups, asymmetric padding, another dtype, or switched off).
fn conv_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<conv::Geometry> {
    let symmetric = options.padding.iter().all(|(a, b)| a == b);
    if !OWN_CONV.with(Cell::get)
        || !symmetric
        || options.dilation != [1, 1]
        || options.groups != 1
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
    {
        return None;
    }
    let (xs, ws) = (x.shape(), weight.shape());
    if xs.num_dims() != 4 || ws.num_dims() != 4 {
        return None;
    }
    conv::Geometry::new(
        [xs[0], xs[1], xs[2], xs[3]],
        [ws[0], ws[1], ws[2], ws[3]],
        options.stride,
        [options.padding[0].0, options.padding[1].0],
    )
}

type FlexTensor = FloatTensor<Flex>;

/// Runs `f` compiled for the widest SIMD the CPU has (pulp's run-time dispatch: AVX-512, AVX2 +
/// FMA, or the baseline), so that its loops are vectorised at that width; the crate's own code is
/// otherwise built for the x86-64 baseline (SSE2). `f` is inlined into the dispatched function
/// where it is marked `#[inline(always)]`.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Contiguous f32 values, or `None` for another dtype.
fn values(t: &FlexTensor) -> Option<std::borrow::Cow<'_, [f32]>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    match t.as_slice::<f32>() {
        Some(s) => Some(std::borrow::Cow::Borrowed(s)),
        None => Some(std::borrow::Cow::Owned(
            t.to_contiguous().as_slice::<f32>()?.to_vec(),
        )),
    }
}

fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// e^x for f32 in a form the compiler vectorises: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its
/// degree-6 Taylor polynomial (relative error < 2e-7 on that interval), 2^n by the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    // ROUND's bits: in [2^23, 2^24) one unit of the last place is 1, so ROUND + n has bits
    // ROUND_BITS + n for the integers n that x's clamp allows.
    const ROUND_BITS: u32 = 0x4B40_0000;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from n's bits read off t in integer arithmetic: `n as i32` would be a saturating
    // float-to-int conversion, which the compiler does one lane at a time (a third of a SiLU).
    p * f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS).wrapping_add(127) << 23)
}

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

#[inline(always)]
fn silu_grad(z: f32) -> f32 {
    let s = sigmoid(z);
    s + z * s * (1.0 - s)
}

/// Σ f(a_i, b_i) over two slices of equal length with eight independent accumulators
/// (vectorised, and more accurate than one).
#[inline(always)]
fn sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    for (p, q) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += f(p[k], q[k]);
        }
    }
    let tail = a.len() - a.len() % 8;
    acc.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(&p, &q)| f(p, q))
            .sum::<f32>()
}

/// Σ f(v_i), as [`sum_zip`].
#[inline(always)]
fn sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    sum_zip(v, v, |x, _| f(x))
}

/// Block size for elementwise work: large enough to amortise rayon, small enough to spread.
const CHUNK: usize = 1 << 14;

struct Dims {
    b: usize,
    c: usize,
    hw: usize,
    groups: usize,
}

impl Dims {
    fn of(x: &FlexTensor, groups: usize) -> Self {
        let s = x.shape();
        Self {
            b: s[0],
            c: s[1],
            hw: s[2] * s[3],
            groups,
        }
    }
    fn per(&self) -> usize {
        self.c / self.groups
    }
    fn block(&self) -> usize {
        self.per() * self.hw
    }
}

impl FusedOps for Flex {
    fn fused_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if let Some(g) = conv_geometry(&x, &weight, &options)
            && let (Some(xs), Some(ws), Some(bs)) = (values(&x), values(&weight), values(&bias))
        {
            return tensor(conv::forward(&g, &xs, &ws, Some(&bs)), g.output());
        }
        <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options)
    }

    fn conv2d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        options: ConvOptions<2>,
        needed: [bool; 3],
    ) -> (Option<FlexTensor>, Option<FlexTensor>, Option<FlexTensor>) {
        if let Some(g) = conv_geometry(&x, &weight, &options)
            && let (Some(xs), Some(ws), Some(dys)) = (values(&x), values(&weight), values(&dy))
        {
            let [_, cout, ho, wo] = g.output();
            let (dx, dw) = conv::backward(&g, &xs, &ws, &dys, needed[0], needed[1]);
            let db = needed[2].then(|| tensor(conv::bias_grad(&dys, cout, ho * wo), [cout]));
            return (
                dx.map(|v| tensor(v, x.shape())),
                dw.map(|v| tensor(v, weight.shape())),
                db,
            );
        }
        composite::conv2d_backward::<Self>(x, weight, dy, options, needed)
    }

    fn group_norm_forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>) {
        let (Some(xs), Some(gs), Some(bs)) = (values(&x), values(&gamma), values(&beta)) else {
            let (y, mean, rstd) =
                composite::group_norm_forward::<Self>(x, gamma, beta, groups, eps, silu);
            return (y, mean, rstd, None);
        };
        let d = Dims::of(&x, groups);
        let (per, hw, n) = (d.per(), d.hw, d.block());
        let mut out = vec![0.0f32; xs.len()];
        let mut stats = vec![(0.0f32, 0.0f32); d.b * groups];
        out.par_chunks_mut(n)
            .zip(xs.par_chunks(n))
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(block, ((out, xs), stat))| {
                vectorized(
                    #[inline(always)]
                    || {
                        let g = block % groups;
                        let mean = sum(xs, |v| v) / n as f32;
                        let var = sum(xs, |v| (v - mean) * (v - mean)) / n as f32;
                        let rstd = 1.0 / (var + eps as f32).sqrt();
                        *stat = (mean, rstd);
                        for k in 0..per {
                            let ch = g * per + k;
                            let a = gs[ch] * rstd;
                            let shift = bs[ch] - mean * a;
                            let (o, xv) =
                                (&mut out[k * hw..(k + 1) * hw], &xs[k * hw..(k + 1) * hw]);
                            if silu {
                                for (o, &xv) in o.iter_mut().zip(xv) {
                                    let z = a * xv + shift;
                                    *o = z * sigmoid(z);
                                }
                            } else {
                                for (o, &xv) in o.iter_mut().zip(xv) {
                                    *o = a * xv + shift;
                                }
                            }
                        }
                    },
                )
            });
        let (mean, rstd): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        let shape = x.shape();
        (
            tensor(out, shape),
            tensor(mean, [d.b, groups]),
            tensor(rstd, [d.b, groups]),
            // The backward loop recomputes z in registers.
            None,
        )
    }

    fn group_norm_backward(
        dy: FlexTensor,
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        groups: usize,
        silu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let all = (
            values(&dy),
            values(&x),
            values(&gamma),
            values(&beta),
            values(&mean),
            values(&rstd),
        );
        let (Some(dys), Some(xs), Some(gs), Some(bs), Some(ms), Some(rs)) = all else {
            return composite::group_norm_backward::<Self>(
                dy, x, gamma, beta, mean, rstd, groups, silu,
            );
        };
        let d = Dims::of(&x, groups);
        let (per, hw, n) = (d.per(), d.hw, d.block());
        let inv_n = 1.0 / n as f32;
        let mut dx = vec![0.0f32; xs.len()];
        // Per (sample, channel): Σ dz and Σ dz·x̂, for dβ and dγ.
        let mut sums = vec![(0.0f32, 0.0f32); d.b * d.c];
        dx.par_chunks_mut(n)
            .zip(xs.par_chunks(n))
            .zip(dys.par_chunks(n))
            .zip(sums.par_chunks_mut(per))
            .enumerate()
            .for_each(|(block, (((dx, xs), dys), sums))| {
                vectorized(
                    #[inline(always)]
                    || {
                        let g = block % groups;
                        let (mu, r) = (ms[block], rs[block]);
                        let (mut m1, mut m2) = (0.0f32, 0.0f32);
                        for (k, sum_k) in sums.iter_mut().enumerate() {
                            let ch = g * per + k;
                            let span = k * hw..(k + 1) * hw;
                            let (dz, xv, dyv) =
                                (&mut dx[span.clone()], &xs[span.clone()], &dys[span]);
                            if silu {
                                let a = gs[ch] * r;
                                let shift = bs[ch] - mu * a;
                                for ((o, &xv), &dy) in dz.iter_mut().zip(xv).zip(dyv) {
                                    *o = dy * silu_grad(a * xv + shift);
                                }
                            } else {
                                dz.copy_from_slice(dyv);
                            }
                            let s1 = sum(dz, |v| v);
                            let s2 = sum_zip(dz, xv, |p, q| p * q);
                            let t = (s2 - mu * s1) * r;
                            *sum_k = (s1, t);
                            m1 += gs[ch] * s1;
                            m2 += gs[ch] * t;
                        }
                        let (m1, m2) = (m1 * inv_n, m2 * inv_n);
                        let coef_x = -r * r * m2;
                        let coef_1 = r * (mu * r * m2 - m1);
                        for k in 0..per {
                            let coef_dz = r * gs[g * per + k];
                            let span = k * hw..(k + 1) * hw;
                            for (o, &xv) in dx[span.clone()].iter_mut().zip(&xs[span]) {
                                *o = coef_dz * *o + coef_x * xv + coef_1;
                            }
                        }
                    },
                )
            });
        let mut dgamma = vec![0.0f32; d.c];
        let mut dbeta = vec![0.0f32; d.c];
        for row in sums.chunks(d.c) {
            for (ch, &(s1, t)) in row.iter().enumerate() {
                dbeta[ch] += s1;
                dgamma[ch] += t;
            }
        }
        (
            tensor(dx, x.shape()),
            tensor(dgamma, [d.c]),
            tensor(dbeta, [d.c]),
        )
    }

    fn fused_silu(z: FlexTensor) -> FlexTensor {
        let Some(zs) = values(&z) else {
            return composite::silu::<Self>(z);
        };
        let mut out = vec![0.0f32; zs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(zs.par_chunks(CHUNK))
            .for_each(|(o, z)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (o, &z) in o.iter_mut().zip(z) {
                            *o = z * sigmoid(z);
                        }
                    },
                )
            });
        tensor(out, z.shape())
    }

    fn fused_silu_backward(z: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let (Some(zs), Some(dys)) = (values(&z), values(&dy)) else {
            return composite::silu_backward::<Self>(z, dy);
        };
        let mut out = vec![0.0f32; zs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(zs.par_chunks(CHUNK).zip(dys.par_chunks(CHUNK)))
            .for_each(|(o, (z, dy))| {
                vectorized(
                    #[inline(always)]
                    || {
                        for ((o, &z), &dy) in o.iter_mut().zip(z).zip(dy) {
                            *o = dy * silu_grad(z);
                        }
                    },
                )
            });
        tensor(out, z.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_matches_std_to_f32_precision() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(exp(200.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    /// 2^n read from the rounding constant's bits gives the same values, bit for bit, as 2^n
    /// through a float-to-int conversion, over the whole clamped range and past its ends.
    #[test]
    fn exp_power_of_two_from_bits_equals_the_conversion() {
        let by_conversion = |x: f32| {
            let x = x.clamp(-87.0, 88.0);
            let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
            let p = 1.0
                + r * (1.0
                    + r * (0.5
                        + r * (1.0 / 6.0
                            + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
            p * f32::from_bits(((n as i32 + 127) << 23) as u32)
        };
        let mut x = -95.0f32;
        while x < 95.0 {
            assert_eq!(exp(x).to_bits(), by_conversion(x).to_bits(), "x = {x}");
            x += 0.000_7;
        }
    }
}
