//! The U-Net of the DDPM paper (Ho et al. 2020, appendix B), layer for layer as in the official
//! `diffusion_tf/models/unet.py`: parameter counts match the PyTorch port exactly
//! (`testdata/ref/params.json`; tested).

pub(crate) mod blocks;
mod embed;
mod norm;
mod precond;

pub use blocks::{AttnBlock, ResBlock};
pub use embed::timestep_embedding;
pub use norm::GroupNorm;
pub use precond::{PrecondTable, Precondition};

use crate::kernel::{conv2d, silu};
use blocks::{Init, conv3, downsample, group_norm, linear, upsample};
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::denoiser::{ConditionalDenoiser, Denoiser};
use crate::error::CoreError;
use crate::rng::Rng;

/// The U-Net presets, by the name experiment files and flags use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UNetPreset {
    /// ch 32, ch_mult [1, 2], 1 residual block per level, no attention, no dropout, 28×28×1
    /// (651,041 parameters): trains on two CPU cores.
    Tiny,
    /// The MNIST model of `params.json`: ch 64, ch_mult [1, 2, 2], attention at 14×14
    /// (6,469,889 parameters).
    Mnist,
    /// The DDPM paper's CIFAR-10 model: ch 128, ch_mult [1, 2, 2, 2], attention at 16×16
    /// (35,746,307 parameters).
    Cifar10,
}

/// Hyperparameters of the DDPM U-Net.
#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    /// Image channels (1 for MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image side length (square images).
    pub resolution: usize,
    /// Base channel count `ch`.
    pub ch: usize,
    /// Channel multiplier of each resolution level.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Resolutions at which an attention block follows each residual block.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability inside the residual blocks.
    pub dropout: f64,
    /// EDM-style preconditioning of the ε-output ([`Precondition`]); `None`: the plain DDPM
    /// network.
    #[config(default = "None")]
    pub precondition: Option<Precondition>,
    /// Extra input channels carrying a condition (the amortized route: the observation as an
    /// image, see `tweedie_sample::amortized::image`); 0 for an ordinary prior. The output keeps
    /// `in_channels`.
    #[config(default = 0)]
    pub cond_channels: usize,
}

impl UNetConfig {
    /// The paper's CIFAR-10 model (35,746,307 parameters).
    pub fn cifar10() -> Self {
        Self::new(3, 32, 128, vec![1, 2, 2, 2], 2, vec![16], 0.1)
    }
    /// The MNIST model of `params.json` (6,469,889 parameters).
    pub fn mnist() -> Self {
        Self::new(1, 28, 64, vec![1, 2, 2], 2, vec![14], 0.1)
    }
    /// A small model that trains on two CPU cores (651,041 parameters).
    pub fn tiny() -> Self {
        Self::new(1, 28, 32, vec![1, 2], 1, vec![], 0.0)
    }
    /// A preset's configuration.
    pub fn preset(preset: UNetPreset) -> Self {
        match preset {
            UNetPreset::Tiny => Self::tiny(),
            UNetPreset::Mnist => Self::mnist(),
            UNetPreset::Cifar10 => Self::cifar10(),
        }
    }

    /// Checks the shapes fit: GroupNorm(32) needs channel counts divisible by 32, levels need a
    /// resolution that survives the downsamplings, dropout is a probability.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidConfig(m));
        // Generous bounds that keep a damaged header from driving a huge allocation.
        if self.in_channels > 64
            || self.cond_channels > 64
            || self.resolution > 4096
            || self.ch > 8192
            || self.ch_mult.len() > 12
            || self.ch_mult.iter().any(|m| *m > 64)
            || self.num_res_blocks > 64
        {
            return bad(format!(
                "implausible model: in_channels {} (≤ 64, and cond_channels {}), resolution {} (≤ 4096), ch {} (≤ 8192), \
                 ch_mult {:?} (≤ 12 levels of ≤ 64), num_res_blocks {} (≤ 64)",
                self.in_channels,
                self.cond_channels,
                self.resolution,
                self.ch,
                self.ch_mult,
                self.num_res_blocks
            ));
        }
        if self.in_channels == 0
            || self.ch == 0
            || self.ch_mult.is_empty()
            || self.num_res_blocks == 0
        {
            return bad(
                "in_channels, ch, ch_mult and num_res_blocks must be non-empty / positive".into(),
            );
        }
        if let Some(m) = self
            .ch_mult
            .iter()
            .find(|m| !(self.ch * **m).is_multiple_of(32))
        {
            return bad(format!(
                "ch × ch_mult = {} × {m} is not divisible by GroupNorm's 32 groups",
                self.ch
            ));
        }
        let levels = self.ch_mult.len();
        let mut r = self.resolution;
        for _ in 1..levels {
            if !r.is_multiple_of(2) || r < 2 {
                return bad(format!(
                    "resolution {} cannot be halved {} times and doubled back (reached {r})",
                    self.resolution,
                    levels - 1
                ));
            }
            r /= 2;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if let Some(p) = &self.precondition {
            p.validate()?;
        }
        Ok(())
    }

    /// The number of parameters [`init`](Self::init) would allocate, computed without
    /// allocating (a damaged or hostile checkpoint header is checked against its weights file
    /// before any tensor is made). Saturates at `u64::MAX`.
    pub fn num_params(&self) -> u64 {
        let (ch, temb) = (self.ch as u64, 4 * self.ch as u64);
        let conv =
            |i: u64, o: u64, k: u64| i.saturating_mul(o).saturating_mul(k * k).saturating_add(o);
        let lin = |i: u64, o: u64| i.saturating_mul(o).saturating_add(o);
        let res = |i: u64, o: u64| {
            let short = if i != o { conv(i, o, 1) } else { 0 };
            [
                2 * i,
                conv(i, o, 3),
                lin(temb, o),
                2 * o,
                conv(o, o, 3),
                short,
            ]
            .into_iter()
            .fold(0u64, u64::saturating_add)
        };
        let attn = |c: u64| 2 * c + 4 * conv(c, c, 1);
        let mut n = [
            lin(ch, temb),
            lin(temb, temb),
            conv((self.in_channels + self.cond_channels) as u64, ch, 3),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add);
        let mut add = |x: u64| n = n.saturating_add(x);
        let (mut cur, mut res_now) = (ch, self.resolution);
        let mut skips = vec![ch];
        for (i, m) in self.ch_mult.iter().enumerate() {
            let cout = ch.saturating_mul(*m as u64);
            for _ in 0..self.num_res_blocks {
                add(res(cur, cout));
                cur = cout;
                if self.attn_resolutions.contains(&res_now) {
                    add(attn(cur));
                }
                skips.push(cur);
            }
            if i + 1 != self.ch_mult.len() {
                add(conv(cur, cur, 3));
                skips.push(cur);
                res_now = res_now.div_ceil(2);
            }
        }
        add(res(cur, cur));
        add(attn(cur));
        add(res(cur, cur));
        for i in (0..self.ch_mult.len()).rev() {
            let cout = ch.saturating_mul(self.ch_mult[i] as u64);
            for _ in 0..=self.num_res_blocks {
                let skip = skips.pop().unwrap_or(0);
                add(res(cur.saturating_add(skip), cout));
                cur = cout;
                if self.attn_resolutions.contains(&res_now) {
                    add(attn(cur));
                }
            }
            if i != 0 {
                res_now = res_now.saturating_mul(2);
                add(conv(cur, cur, 3));
            }
        }
        add(2 * cur);
        add(conv(cur, self.in_channels as u64, 3));
        n
    }

    /// Builds the network with seed 0 (see [`UNetConfig::init_seeded`]).
    pub fn init(&self, device: &Device) -> UNet {
        self.init_seeded(device, 0)
    }

    /// Builds the network with the official initialisation (Xavier-uniform, zero biases, the
    /// residual branches' last convs and the output conv at scale 1e-10), drawn from
    /// `Rng::new(seed)`: the same seed gives the same weights on every backend and thread.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> UNet {
        let mut rng = Rng::new(seed);
        let init = &mut Init {
            device,
            rng: &mut rng,
        };
        let ch = self.ch;
        let temb_ch = 4 * ch;
        let mut down = Vec::new();
        let mut skips = vec![ch];
        let (mut cur, mut res) = (ch, self.resolution);
        for (i, m) in self.ch_mult.iter().enumerate() {
            let cout = ch * m;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for _ in 0..self.num_res_blocks {
                blocks.push(ResBlock::new(cur, cout, temb_ch, self.dropout, init));
                cur = cout;
                attns.push(
                    self.attn_resolutions
                        .contains(&res)
                        .then(|| AttnBlock::new(cur, init)),
                );
                skips.push(cur);
            }
            let resample = (i + 1 != self.ch_mult.len()).then(|| {
                let d = downsample(cur, res, init);
                skips.push(cur);
                res = res.div_ceil(2);
                d
            });
            down.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        let mid_block1 = ResBlock::new(cur, cur, temb_ch, self.dropout, init);
        let mid_attn = AttnBlock::new(cur, init);
        let mid_block2 = ResBlock::new(cur, cur, temb_ch, self.dropout, init);
        let mut up = Vec::new();
        for i in (0..self.ch_mult.len()).rev() {
            let cout = ch * self.ch_mult[i];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for _ in 0..=self.num_res_blocks {
                let skip = skips.pop().expect("one skip per down block");
                blocks.push(ResBlock::new(cur + skip, cout, temb_ch, self.dropout, init));
                cur = cout;
                attns.push(
                    self.attn_resolutions
                        .contains(&res)
                        .then(|| AttnBlock::new(cur, init)),
                );
            }
            let resample = (i != 0).then(|| {
                res *= 2;
                conv3(cur, cur, 1.0, init)
            });
            up.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        debug_assert!(skips.is_empty());
        let temb_dense0 = linear(ch, temb_ch, init);
        let temb_dense1 = linear(temb_ch, temb_ch, init);
        let conv_in = conv3(self.in_channels + self.cond_channels, ch, 1.0, init);
        UNet {
            temb_dense0,
            temb_dense1,
            conv_in,
            down,
            mid_block1,
            mid_attn,
            mid_block2,
            up,
            norm_out: group_norm(cur, init.device),
            conv_out: conv3(cur, self.in_channels, 1e-10, init),
            ch,
            in_channels: self.in_channels,
            cond_channels: self.cond_channels,
            precond: self.precondition.as_ref().map(|p| {
                p.table()
                    .expect("a validated config's schedule builds (UNetConfig::validate)")
            }),
        }
    }
}

/// One resolution level: residual blocks, their optional attention, and the down/up sampling conv.
#[derive(Module, Debug)]
pub struct Level {
    blocks: Vec<ResBlock>,
    attns: Vec<Option<AttnBlock>>,
    resample: Option<Conv2d>,
}

/// The DDPM U-Net ε_θ(x_t, t).
#[derive(Module, Debug)]
pub struct UNet {
    temb_dense0: Linear,
    temb_dense1: Linear,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid_block1: ResBlock,
    mid_attn: AttnBlock,
    mid_block2: ResBlock,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    ch: usize,
    in_channels: usize,
    cond_channels: usize,
    /// Coefficients of the preconditioning, per timestep (not trained, not stored: rebuilt from
    /// the config).
    #[module(skip)]
    precond: Option<PrecondTable>,
}

fn apply_attn(attn: &Option<AttnBlock>, h: Tensor<4>) -> Tensor<4> {
    match attn {
        Some(a) => a.forward(h),
        None => h,
    }
}

impl UNet {
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` (float timesteps) → `[B, C, H, W]`.
    ///
    /// The network computes in its weights' dtype (f16 for the copy of a mixed-precision step,
    /// [`crate::precision`]): `x` and the embedding are cast to it, the output back to `x`'s.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>) -> Tensor<4> {
        let (out_dtype, dtype) = (x.dtype(), self.conv_in.weight.val().dtype());
        let x = x.cast(dtype);
        let temb = timestep_embedding(t, self.ch).cast(dtype);
        let temb = self
            .temb_dense1
            .forward(silu(self.temb_dense0.forward(temb)));

        let mut hs = vec![conv2d(&self.conv_in, x)];
        for level in &self.down {
            for (block, attn) in level.blocks.iter().zip(&level.attns) {
                let h = block.forward(hs.last().expect("non-empty").clone(), temb.clone());
                hs.push(apply_attn(attn, h));
            }
            if let Some(d) = &level.resample {
                let h = conv2d(d, hs.last().expect("non-empty").clone());
                hs.push(h);
            }
        }
        let h = hs.last().expect("non-empty").clone();
        let h = self.mid_block1.forward(h, temb.clone());
        let h = self.mid_attn.forward(h);
        let mut h = self.mid_block2.forward(h, temb.clone());
        for level in &self.up {
            for (block, attn) in level.blocks.iter().zip(&level.attns) {
                let skip = hs.pop().expect("one skip per up block");
                h = apply_attn(
                    attn,
                    block.forward(Tensor::cat(vec![h, skip], 1), temb.clone()),
                );
            }
            if let Some(u) = &level.resample {
                h = upsample(u, h);
            }
        }
        conv2d(&self.conv_out, self.norm_out.forward_silu(h)).cast(out_dtype)
    }

    /// Image channels the network expects.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Condition channels it also takes (0: an ordinary prior).
    pub fn cond_channels(&self) -> usize {
        self.cond_channels
    }

    /// ε̂ of x_t, with the condition's channels appended to the network's input (after the
    /// preconditioning's input scaling, which is x_t's alone).
    fn eps_with(&self, x_t: Tensor<4>, t: &[usize], cond: Option<Tensor<4>>) -> Tensor<4> {
        let device = x_t.device();
        let tf: Vec<f32> = t.iter().map(|v| *v as f32).collect();
        let tt = Tensor::<1>::from_data(TensorData::new(tf, [t.len()]), &device);
        let input = |x: Tensor<4>| match &cond {
            Some(c) => Tensor::cat(vec![x, c.clone()], 1),
            None => x,
        };
        match &self.precond {
            None => self.forward(input(x_t), tt),
            Some(p) => {
                // ε̂ = c_skip (x_t − √ᾱ μ) + c_out F(c_in (x_t − √ᾱ μ), t)  (precond.rs).
                let at = |c: &[f64]| crate::diffusion::gather(c, t, &device);
                let xc = x_t - at(&p.shift);
                let f = self.forward(input(xc.clone() * at(&p.c_in)), tt);
                xc * at(&p.c_skip) + f * at(&p.c_out)
            }
        }
    }

    /// The preconditioning coefficients per timestep, if the network is preconditioned.
    pub fn precond(&self) -> Option<&PrecondTable> {
        self.precond.as_ref()
    }
}

impl Denoiser for UNet {
    /// An unconditional network's ε̂ (a conditional one is used through
    /// [`ConditionalDenoiser`]; `tweedie_sample::prior::Prior::load` refuses it here).
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        debug_assert_eq!(
            self.cond_channels, 0,
            "a conditional U-Net needs its condition"
        );
        self.eps_with(x_t, t, None)
    }
}

impl ConditionalDenoiser for UNet {
    fn eps_given(&self, x_t: Tensor<4>, t: &[usize], cond: Tensor<4>) -> Tensor<4> {
        self.eps_with(x_t, t, Some(cond))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_reference_port() {
        // testdata/ref/params.json: PyTorch port of the official code, sum(p.numel()).
        let dev = Device::flex();
        assert_eq!(UNetConfig::tiny().init(&dev).num_params(), 651_041);
        assert_eq!(UNetConfig::mnist().init(&dev).num_params(), 6_469_889);
        assert_eq!(UNetConfig::cifar10().init(&dev).num_params(), 35_746_307);
        // Counted without allocating, for these and other shapes (attention, odd resolutions).
        let mut configs = vec![
            UNetConfig::tiny(),
            UNetConfig::mnist(),
            UNetConfig::cifar10(),
        ];
        configs.push(UNetConfig::new(
            3,
            20,
            32,
            vec![1, 2, 3],
            2,
            vec![10, 5],
            0.0,
        ));
        configs.push(UNetConfig::new(2, 9, 64, vec![2, 1], 1, vec![9, 5], 0.1));
        for cfg in configs {
            let counted = cfg.num_params();
            assert_eq!(counted, cfg.init(&dev).num_params() as u64, "{cfg:?}");
        }
    }

    #[test]
    fn forward_keeps_the_shape_and_validate_rejects_misfits() {
        let dev = Device::flex();
        let cfg = UNetConfig::new(1, 8, 32, vec![1, 2], 1, vec![4], 0.0);
        cfg.validate().unwrap();
        let net = cfg.init(&dev);
        let x = Tensor::<4>::ones([2, 1, 8, 8], &dev);
        let y = net.eps(x, &[3, 900]);
        assert_eq!(y.dims(), [2, 1, 8, 8]);
        assert!(
            UNetConfig::new(1, 28, 48, vec![1], 1, vec![], 0.0)
                .validate()
                .is_err()
        );
        assert!(
            UNetConfig::new(1, 14, 32, vec![1, 2, 2], 1, vec![], 0.0)
                .validate()
                .is_err()
        );
        assert!(crate::choice::parse::<UNetPreset>("huge").is_err());
        assert_eq!(UNetConfig::preset(UNetPreset::Tiny), UNetConfig::tiny());
    }

    #[test]
    fn initialisation_is_a_function_of_the_seed_with_the_official_scales() {
        let dev = Device::flex();
        let cfg = UNetConfig::tiny();
        let w = |seed| crate::host_values(cfg.init_seeded(&dev, seed).conv_in.weight.val());
        assert_eq!(w(3), w(3));
        assert_ne!(w(3), w(4));
        // conv_in: fan_in = 1·9, fan_out = 32·9 → bound √(6/297) ≈ 0.142; uniform variance b²/3.
        let v = w(3);
        let b = (6.0f64 / 297.0).sqrt();
        assert!(v.iter().all(|x| (x.abs() as f64) <= b));
        let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((var - b * b / 3.0).abs() < 0.15 * b * b / 3.0, "{var}");
        // Zero-initialised output conv (scale 1e-10).
        let out = crate::host_values(cfg.init_seeded(&dev, 3).conv_out.weight.val());
        assert!(out.iter().all(|x| x.abs() < 1e-5));
    }

    /// A fresh preconditioned network (output conv at scale 1e-10, so F ≈ 0) is the exact
    /// ε-predictor of Gaussian data N(μ, σ²): [`crate::denoiser::GaussianDenoiser`], an
    /// independent implementation of E[ε | x_t].
    #[test]
    fn a_fresh_preconditioned_network_is_the_gaussian_optimum() {
        use crate::checkpoint::ScheduleSpec;
        use crate::denoiser::GaussianDenoiser;
        let dev = Device::flex();
        let spec = ScheduleSpec::Cosine {
            timesteps: 1000,
            s: 0.008,
            max_beta: 0.999,
        };
        let mut cfg = UNetConfig::new(1, 8, 32, vec![1, 2], 1, vec![], 0.0);
        cfg.precondition = Some(Precondition {
            mean: -0.7,
            std: 0.6,
            schedule: spec.clone(),
        });
        cfg.validate().unwrap();
        let net = cfg.init_seeded(&dev, 1);
        let oracle = GaussianDenoiser {
            mean: -0.7,
            std: 0.6,
            alphas_cumprod: spec.build().unwrap().alphas_cumprod,
        };
        let t = [0, 10, 300, 700, 999];
        let x = crate::rng::Rng::new(2).normal_tensor([5, 1, 8, 8], &dev);
        let got = crate::host_values(net.eps(x.clone(), &t));
        let want = crate::host_values(oracle.eps(x, &t));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max |ε̂ − E[ε | x_t]| = {err}");
        // The plain network is not that predictor (its output is ≈ 0).
        cfg.precondition = None;
        let plain = crate::host_values(cfg.init_seeded(&dev, 1).eps(
            crate::rng::Rng::new(2).normal_tensor([5, 1, 8, 8], &dev),
            &t,
        ));
        assert!(plain.iter().all(|v| v.abs() < 1e-3));
        // A bad data std is a config error.
        cfg.precondition = Some(Precondition {
            mean: 0.0,
            std: 0.0,
            schedule: spec,
        });
        assert!(cfg.validate().is_err());
    }

    /// Checkpoints written before preconditioning existed (no `precondition` key) still load.
    #[test]
    fn configs_without_precondition_parse() {
        let mut v = serde_json::to_value(UNetConfig::tiny()).unwrap();
        v.as_object_mut().unwrap().remove("precondition");
        let back: UNetConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, UNetConfig::tiny());
    }
}
