//! LPIPS, the learned perceptual image patch similarity of Zhang et al. (2018), "The
//! Unreasonable Effectiveness of Deep Features as a Perceptual Metric", with the AlexNet trunk and
//! the `lpips` package's v0.1 linear layers: the distance the DPS, DiffPIR and DAPS tables and
//! InverseBench report beside PSNR and SSIM.
//!
//! d(x, y) = Σ_l mean_hw ‖w_l ⊙ (f̂_l(x) − f̂_l(y))‖² (the paper's Eq. 1), where f_l are the
//! activations after AlexNet's five ReLUs (torchvision's `features` 1, 4, 7, 9 and 11), f̂_l is f_l
//! divided by its channel norm at each pixel (plus 1e-10), and w_l are the linear layers' weights.
//! Inputs are on the [−1, 1] scale; as the package's v0.1 does, they first pass its scaling layer
//! (x − shift) / scale. Two choices of our own, outside the package: a one-channel image is
//! repeated to three channels, and an image smaller than [`MIN_SIZE`] on a side is enlarged by
//! the smallest integer factor that reaches it (nearest neighbour), since AlexNet's last pooling
//! has no input below 31 pixels (MNIST's 28×28 becomes 56×56).
//!
//! Weights are read from the files users already have: torchvision's AlexNet state dict
//! (`alexnet-owt-7be5be79.pth`, in the torch hub cache) and the package's `weights/v0.1/alex.pth`
//! (`lpips/weights/v0.1/alex.pth` in its install directory), or `sample download lpips`.
//! `scripts/lpips-parity.py` checks this module against `lpips.LPIPS(net="alex")`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use crate::CoreError;
use crate::checkpoint::torch_file::TorchFile;

/// The smallest height and width AlexNet's five stages take (its last pooling needs 3 inputs).
pub const MIN_SIZE: usize = 32;

/// torchvision's name for the AlexNet weights file.
pub const TRUNK_FILE: &str = "alexnet-owt-7be5be79.pth";

/// The `lpips` package's name for its AlexNet linear layers (v0.1).
pub const LINEAR_FILE: &str = "alex.pth";

/// The v0.1 scaling layer's shift and scale per RGB channel (`lpips.ScalingLayer`).
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// AlexNet's convolutions as torchvision names them: index in `features`, kernel, stride,
/// padding, and whether a 3×3 stride-2 max pooling comes first. The channels (3 → 64 → 192 → 384
/// → 256 → 256 in the published file) are read from the weights, so a narrower net of the same
/// shape (the test fixture's) runs the same code.
const TRUNK: [(usize, usize, usize, usize, bool); 5] = [
    (0, 11, 4, 2, false),
    (3, 5, 1, 2, true),
    (6, 3, 1, 1, true),
    (8, 3, 1, 1, false),
    (10, 3, 1, 1, false),
];

struct Stage {
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    pool_first: bool,
}

/// The LPIPS network (AlexNet trunk and five linear layers) on one device.
pub struct Lpips {
    stages: Vec<Stage>,
    /// `[1, C_l, 1, 1]` per layer, as the package stores them.
    linear: Vec<Tensor<4>>,
    device: Device,
}

/// The two weight files' paths.
#[derive(Debug, Clone)]
pub struct LpipsFiles {
    pub trunk: PathBuf,
    pub linear: PathBuf,
}

impl LpipsFiles {
    /// The files in `dir` under their published names ([`TRUNK_FILE`], [`LINEAR_FILE`]).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            trunk: dir.join(TRUNK_FILE),
            linear: dir.join(LINEAR_FILE),
        }
    }

    /// Where the files are looked for when not given: `$TWEEDIE_LPIPS` (a folder holding both),
    /// else the linear layers in `~/.cache/tweedie/lpips/` and the trunk there or in the torch hub
    /// cache (`$TORCH_HOME/hub/checkpoints`, `~/.cache/torch/hub/checkpoints`). `None` when either
    /// file is in none of them.
    pub fn locate() -> Option<Self> {
        if let Some(dir) = std::env::var_os("TWEEDIE_LPIPS") {
            let files = Self::in_dir(Path::new(&dir));
            return files.exist().then_some(files);
        }
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let ours = Self::cache_dir()?;
        let torch = std::env::var_os("TORCH_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/torch"))
            .join("hub/checkpoints");
        let linear = ours.join(LINEAR_FILE);
        let trunk = [ours.join(TRUNK_FILE), torch.join(TRUNK_FILE)]
            .into_iter()
            .find(|p| p.is_file())?;
        linear.is_file().then_some(Self { trunk, linear })
    }

    /// Tweedie's own folder for both files, `~/.cache/tweedie/lpips/` (where `sample download
    /// lpips` puts them).
    pub fn cache_dir() -> Option<PathBuf> {
        Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/tweedie/lpips"))
    }

    fn exist(&self) -> bool {
        self.trunk.is_file() && self.linear.is_file()
    }
}

impl Lpips {
    /// Reads both files onto `device`; every tensor LPIPS needs must be there, in its shape and
    /// finite (torchvision's classifier weights and any other extra tensors are ignored).
    pub fn read(files: &LpipsFiles, device: &Device) -> Result<Self, CoreError> {
        let mut trunk = TorchFile::read(&files.trunk, "torchvision's AlexNet weights")?;
        let mut stages = Vec::with_capacity(TRUNK.len());
        let mut widths = Vec::with_capacity(TRUNK.len());
        let mut cin = 3;
        for (idx, k, stride, padding, pool_first) in TRUNK {
            let key = format!("features.{idx}.weight");
            let cout = trunk.shape(&key)?.first().copied().unwrap_or(0);
            let w = trunk.take_shaped(&key, &[cout, cin, k, k])?;
            let b = trunk.take_shaped(&format!("features.{idx}.bias"), &[cout])?;
            stages.push(Stage {
                weight: Tensor::from_data(TensorData::new(w, [cout, cin, k, k]), device),
                bias: Tensor::from_data(TensorData::new(b, [cout]), device),
                stride,
                padding,
                pool_first,
            });
            widths.push(cout);
            cin = cout;
        }
        let mut lin = TorchFile::read(&files.linear, "the lpips package's linear layers")?;
        let linear = widths
            .iter()
            .enumerate()
            .map(|(l, &c)| {
                let w = lin.take_shaped(&format!("lin{l}.model.1.weight"), &[1, c, 1, 1])?;
                Ok(Tensor::from_data(TensorData::new(w, [1, c, 1, 1]), device))
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        Ok(Self {
            stages,
            linear,
            device: device.clone(),
        })
    }

    /// LPIPS between the images of `a` and `b` (`[n, c, h, w]` on the [−1, 1] scale, c = 1 or
    /// 3), one distance per image pair.
    pub fn distance(&self, a: Tensor<4>, b: Tensor<4>) -> Vec<f32> {
        assert_eq!(a.dims(), b.dims(), "lpips of images of different shapes");
        let n = a.dims()[0];
        let (fa, fb) = (self.features(a), self.features(b));
        let mut total = Tensor::<1>::zeros([n], &self.device);
        for ((x, y), w) in fa.into_iter().zip(fb).zip(&self.linear) {
            let d = (unit(x) - unit(y)).powi_scalar(2);
            // The 1×1 linear layer without bias, then the spatial mean (`spatial_average`).
            let [_, c, h, wd] = d.dims();
            let weighted = (d * w.clone().reshape([1, c, 1, 1]))
                .sum_dim(1)
                .reshape([n, h * wd]);
            total = total + weighted.mean_dim(1).reshape([n]);
        }
        crate::host_values(total)
    }

    /// The activations after each of AlexNet's five ReLUs.
    fn features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.prepare(x);
        let pool = MaxPoolOptions::new([3, 3]).with_stride([2, 2]);
        let mut out = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            if s.pool_first {
                x = max_pool2d(x, pool.clone());
            }
            let opts = ConvOptions::new([s.stride; 2], [s.padding; 2], [1, 1], 1);
            x = burn::tensor::activation::relu(crate::kernel::conv2d_with(
                x,
                s.weight.clone(),
                s.bias.clone(),
                opts,
            ));
            out.push(x.clone());
        }
        out
    }

    /// Gray to RGB, small images enlarged, then the v0.1 scaling layer.
    fn prepare(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        assert!(c == 1 || c == 3, "lpips takes 1 or 3 channels, not {c}");
        let x = if c == 1 { x.repeat_dim(1, 3) } else { x };
        let f = upscale_factor(h, w);
        let x = if f > 1 {
            // Nearest neighbour by an integer factor: each pixel becomes an f × f block.
            x.reshape([n, 3, h, 1, w, 1])
                .repeat_dim(3, f)
                .repeat_dim(5, f)
                .reshape([n, 3, h * f, w * f])
        } else {
            x
        };
        let shift = Tensor::<1>::from_floats(SHIFT, &self.device).reshape([1, 3, 1, 1]);
        let scale = Tensor::<1>::from_floats(SCALE, &self.device).reshape([1, 3, 1, 1]);
        (x - shift) / scale
    }
}

/// The smallest integer factor that brings both sides to at least [`MIN_SIZE`] (1 when they are).
pub fn upscale_factor(h: usize, w: usize) -> usize {
    MIN_SIZE.div_ceil(h.min(w).max(1))
}

/// x divided by its norm over channels at each pixel, plus 1e-10 (`lpips.normalize_tensor`).
fn unit(x: Tensor<4>) -> Tensor<4> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / (norm + 1e-10)
}
