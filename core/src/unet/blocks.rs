//! The DDPM U-Net's building blocks (Ho et al. 2020, appendix B; `diffusion_tf/models/unet.py`).

use crate::kernel::{conv2d, silu, softmax};
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::norm::GroupNorm;
use crate::rng::Rng;

/// Where initial weights come from: the host [`Rng`], so that initialisation is a pure function
/// of the seed (burn's device RNG is shared by the whole process).
pub(crate) struct Init<'a> {
    pub device: &'a Device,
    pub rng: &'a mut Rng,
}

impl Init<'_> {
    /// The official code's `variance_scaling(scale, 'fan_avg', 'uniform')`: U(−b, b) with
    /// b = √(3·scale / fan_avg) = √scale · √(6 / (fan_in + fan_out)) (Xavier-uniform, gain √scale).
    fn tf_uniform<const D: usize>(
        &mut self,
        shape: [usize; D],
        fan_in: usize,
        fan_out: usize,
        scale: f64,
    ) -> Tensor<D> {
        let bound = (scale * 6.0 / (fan_in + fan_out) as f64).sqrt();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((2.0 * self.rng.uniform() - 1.0) * bound) as f32)
            .collect();
        Tensor::<D>::from_data(TensorData::new(v, shape), self.device)
    }
}

/// A conv with TF-style init and zero bias. `padding` is (top, left, bottom, right).
pub(crate) fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: [usize; 4],
    scale: f64,
    init: &mut Init,
) -> Conv2d {
    let mut c = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding[0], padding[1], padding[2], padding[3],
        ))
        .with_initializer(Initializer::Zeros)
        .init(init.device);
    c.weight =
        Param::from_tensor(init.tf_uniform([cout, cin, k, k], cin * k * k, cout * k * k, scale));
    c.bias = Some(Param::from_tensor(Tensor::zeros([cout], init.device)));
    c
}

pub(crate) fn conv3(cin: usize, cout: usize, scale: f64, init: &mut Init) -> Conv2d {
    conv(cin, cout, 3, 1, [1, 1, 1, 1], scale, init)
}

pub(crate) fn conv1(cin: usize, cout: usize, scale: f64, init: &mut Init) -> Conv2d {
    conv(cin, cout, 1, 1, [0, 0, 0, 0], scale, init)
}

pub(crate) fn linear(din: usize, dout: usize, init: &mut Init) -> Linear {
    let mut l = LinearConfig::new(din, dout)
        .with_initializer(Initializer::Zeros)
        .init(init.device);
    l.weight = Param::from_tensor(init.tf_uniform([din, dout], din, dout, 1.0));
    l.bias = Some(Param::from_tensor(Tensor::zeros([dout], init.device)));
    l
}

/// GroupNorm(32) with the TF default ε = 1e-6.
pub(crate) fn group_norm(c: usize, device: &Device) -> GroupNorm {
    GroupNorm::new(32, c, 1e-6, device)
}

/// burn's dropout (Srivastava et al. 2014: keep with probability 1 − p, scale by 1/(1 − p)), with
/// the mask from this thread's mask stream when one is set ([`crate::rng::with_mask_stream`],
/// sharded training), else from the device generator as `Dropout::forward` does.
fn dropout(layer: &Dropout, h: Tensor<4>) -> Tensor<4> {
    let device = h.device();
    if layer.prob > 0.0 && device.is_autodiff() && layer.training.is_enabled() {
        let keep = 1.0 - layer.prob;
        if let Some(mask) = crate::rng::stream_mask(h.dims(), keep, &device) {
            let dtype = h.dtype();
            return h * mask.cast(dtype) * (1.0 / keep);
        }
    }
    layer.forward(h)
}

/// GN → SiLU → conv3×3 → + Linear(SiLU(temb)) → GN → SiLU → Dropout → conv3×3 (zero init), with
/// a 1×1 shortcut when the channel count changes.
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResBlock {
    pub(crate) fn new(
        cin: usize,
        cout: usize,
        temb_ch: usize,
        dropout: f64,
        init: &mut Init,
    ) -> Self {
        Self {
            norm1: group_norm(cin, init.device),
            conv1: conv3(cin, cout, 1.0, init),
            temb_proj: linear(temb_ch, cout, init),
            norm2: group_norm(cout, init.device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv3(cout, cout, 1e-10, init),
            nin_shortcut: (cin != cout).then(|| conv1(cin, cout, 1.0, init)),
        }
    }

    /// `x` `[B, Cin, H, W]`, `temb` `[B, 4ch]` → `[B, Cout, H, W]`.
    pub fn forward(&self, x: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
        let h = conv2d(&self.conv1, self.norm1.forward_silu(x.clone()));
        let h = h + self
            .temb_proj
            .forward(silu(temb))
            .unsqueeze_dims::<4>(&[2, 3]);
        let h = dropout(&self.dropout, self.norm2.forward_silu(h));
        let h = conv2d(&self.conv2, h);
        let x = match &self.nin_shortcut {
            Some(c) => conv2d(c, x),
            None => x,
        };
        x + h
    }
}

/// Single-head self-attention over the H·W positions: softmax(q kᵀ / √C) v, 1×1 q/k/v/proj_out
/// convs, residual.
#[derive(Module, Debug)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    pub(crate) fn new(c: usize, init: &mut Init) -> Self {
        Self {
            norm: group_norm(c, init.device),
            q: conv1(c, c, 1.0, init),
            k: conv1(c, c, 1.0, init),
            v: conv1(c, c, 1.0, init),
            proj_out: conv1(c, c, 1e-10, init),
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let hn = self.norm.forward(x.clone());
        let q = conv2d(&self.q, hn.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2); // [B, N, C]
        let k = conv2d(&self.k, hn.clone()).reshape([b, c, n]); // [B, C, N]
        let v = conv2d(&self.v, hn).reshape([b, c, n]); // [B, C, N]
        // [B, N(query), N(key)]; the softmax in f32 under mixed precision.
        let logits = q.matmul(k).mul_scalar((c as f64).powf(-0.5));
        let dtype = logits.dtype();
        let att = softmax(logits.cast(FloatDType::F32)).cast(dtype);
        // out[c, i] = Σ_j v[c, j] att[i, j], computed as v attᵀ so that the product is already
        // [B, C, N] and contiguous: (att v)ᵀ reshaped to [B, C, H, W] would be a channels-last
        // view, and on libtorch that layout then spreads through every later residual sum and
        // costs a copy at each reshape.
        let out = v.matmul(att.swap_dims(1, 2)).reshape([b, c, h, w]);
        x + conv2d(&self.proj_out, out)
    }
}

/// 3×3 conv with stride 2 and TensorFlow's 'SAME' padding (asymmetric for even sizes).
pub(crate) fn downsample(c: usize, resolution: usize, init: &mut Init) -> Conv2d {
    let out = resolution.div_ceil(2);
    let pad = ((out - 1) * 2 + 3).saturating_sub(resolution);
    conv(
        c,
        c,
        3,
        2,
        [pad / 2, pad / 2, pad - pad / 2, pad - pad / 2],
        1.0,
        init,
    )
}

/// Nearest-neighbour ×2 then the conv.
pub(crate) fn upsample(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let up = interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
    );
    conv2d(conv, up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, with_mask_stream};

    #[test]
    fn dropout_masks_come_from_the_thread_stream_when_one_is_set() {
        let device = Device::flex().autodiff();
        let layer = DropoutConfig::new(0.3).init();
        let x = Tensor::<4>::ones([4, 8, 16, 16], &device) * 2.0;
        let with = |seed| {
            with_mask_stream(Rng::new(seed), || {
                crate::host_values(dropout(&layer, x.clone()))
            })
        };
        let a = with(1);
        assert_eq!(a, with(1), "the same stream gives the same mask");
        assert_ne!(a, with(2), "another stream, another mask");
        // Kept values are scaled by 1/(1 - p); about p of them are dropped.
        let dropped = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.3).abs() < 0.02, "dropped {dropped}");
        assert!(a.iter().all(|v| *v == 0.0 || (v - 2.0 / 0.7).abs() < 1e-6));
        // Outside a stream: burn's dropout on the device generator; on an inference device none.
        assert_ne!(crate::host_values(dropout(&layer, x.clone())), a);
        let plain = Tensor::<4>::ones([2, 2, 2, 2], &Device::flex());
        let out = with_mask_stream(Rng::new(1), || dropout(&layer, plain.clone()));
        assert_eq!(crate::host_values(out), crate::host_values(plain));
    }
}
