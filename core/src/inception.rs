//! The Inception-v3 of FID (Heusel et al. 2017, TTUR's TensorFlow graph "2015-12-05" as
//! pytorch-fid ports it): its pool3 features (2048 per image), the ones every paper's CIFAR-10
//! FID is computed on.
//!
//! The network is torchvision's Inception-v3 with pytorch-fid's four changes: `FIDInceptionA`,
//! `FIDInceptionC` and `FIDInceptionE_1` average-pool without counting the zero padding
//! (TensorFlow's pooling), and `FIDInceptionE_2` (`Mixed_7c`) max-pools its pooling branch. Each
//! `BasicConv2d` (convolution without bias, batch norm with ε = 0.001, ReLU) is read from the
//! file and its batch norm folded into the convolution. Inputs are images on [0, 1], resized to
//! 299×299 by bilinear interpolation (PyTorch's `align_corners=False`, as pytorch-fid) and mapped
//! to [−1, 1]. Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, read from the file
//! users have (or that `sample download inception` fetches when asked). `scripts/fid-parity.py`
//! checks the features against `pytorch_fid.inception.InceptionV3`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};

use crate::CoreError;
use crate::checkpoint::torch_file::TorchFile;

/// pytorch-fid's name for the weights file.
pub const WEIGHTS_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";

/// The weights file where users keep it, nothing downloaded: `$TWEEDIE_INCEPTION` (the file)
/// when set, else `~/.cache/tweedie/inception/` or the torch hub cache (`$TORCH_HOME`, default
/// `~/.cache/torch`, `hub/checkpoints/`), where pytorch-fid's own download puts it.
pub fn locate() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("TWEEDIE_INCEPTION") {
        let file = PathBuf::from(file);
        return file.is_file().then_some(file);
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let torch = std::env::var_os("TORCH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/torch"));
    [
        cache_dir()?.join(WEIGHTS_FILE),
        torch.join("hub/checkpoints").join(WEIGHTS_FILE),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Tweedie's own folder for the weights, `~/.cache/tweedie/inception/` (where `sample download
/// inception` puts them).
pub fn cache_dir() -> Option<PathBuf> {
    Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/tweedie/inception"))
}

/// The side the images are resized to.
pub const SIZE: usize = 299;

/// Features per image (the pool3 layer).
pub const FEATURES: usize = 2048;

/// A `BasicConv2d` with its batch norm folded in.
struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
}

impl Conv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        burn::tensor::activation::relu(crate::kernel::conv2d_with(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        ))
    }
}

/// The file's tensors, taken out as the network is built.
struct Weights<'a> {
    file: TorchFile,
    device: &'a Device,
}

impl Weights<'_> {
    /// `BasicConv2d` `name`: kernel `k` (h, w), `stride`, `padding` (h, w).
    fn conv(
        &mut self,
        name: &str,
        k: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> Result<Conv, CoreError> {
        let (shape, w) = self.file.take(&format!("{name}.conv.weight"))?;
        let [o, i, kh, kw] = <[usize; 4]>::try_from(shape.as_slice()).map_err(|_| {
            self.file
                .error(format!("{name}.conv.weight has shape {shape:?}"))
        })?;
        if (kh, kw) != k {
            return Err(self.file.error(format!(
                "{name}.conv.weight is {kh}×{kw}, Inception-v3 needs {}×{}",
                k.0, k.1
            )));
        }
        let mut bn = |p: &str| self.file.take_shaped(&format!("{name}.bn.{p}"), &[o]);
        let (gamma, beta, mean, var) = (
            bn("weight")?,
            bn("bias")?,
            bn("running_mean")?,
            bn("running_var")?,
        );
        // BN(conv(x)) = γ (conv(x) − μ)/√(σ² + ε) + β: scale the kernel, shift by the bias.
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + 0.001).sqrt())
            .collect();
        let per = i * kh * kw;
        let weight: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(j, v)| v * scale[j / per])
            .collect();
        let bias: Vec<f32> = (0..o).map(|c| beta[c] - mean[c] * scale[c]).collect();
        Ok(Conv {
            weight: Tensor::from_data(TensorData::new(weight, [o, i, kh, kw]), self.device),
            bias: Tensor::from_data(TensorData::new(bias, [o]), self.device),
            options: ConvOptions::new([stride; 2], [padding.0, padding.1], [1, 1], 1),
        })
    }
}

/// A branch: convolutions applied in order.
fn chain(x: Tensor<4>, convs: &[Conv]) -> Tensor<4> {
    convs.iter().fold(x, |x, c| c.forward(x))
}

/// 3×3 pooling, stride 1, padding 1: average without the padding, or max.
fn pool_same(x: Tensor<4>, max: bool) -> Tensor<4> {
    if max {
        max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([1, 1])
                .with_padding([1, 1]),
        )
    } else {
        avg_pool2d(
            x,
            AvgPoolOptions::new([3, 3])
                .with_stride([1, 1])
                .with_padding([1, 1])
                .with_count_include_pad(false),
        )
    }
}

fn pool_down(x: Tensor<4>) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]))
}

/// One mixed block: its branches (each a chain, some ending in two convolutions whose outputs are
/// concatenated) and its pooling branch.
enum Block {
    /// `FIDInceptionA` (5b–5d) and `FIDInceptionC` (6b–6e): chains, then pooled → 1×1.
    Chains {
        chains: Vec<Vec<Conv>>,
        pool: Box<Conv>,
    },
    /// `InceptionB` (6a) and `InceptionD` (7a): chains, then a 3×3 stride-2 max pooling.
    Reduce { chains: Vec<Vec<Conv>> },
    /// `FIDInceptionE_1` (7b, average) and `_2` (7c, max): 1×1; 1×1 then (1×3 ‖ 3×1); 1×1, 3×3
    /// then (1×3 ‖ 3×1); pooled → 1×1.
    Expanded(Box<Expanded>),
}

struct Expanded {
    one: Conv,
    split: (Vec<Conv>, Conv, Conv),
    double: (Vec<Conv>, Conv, Conv),
    pool: Conv,
    max: bool,
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::Chains { chains, pool } => {
                let mut out: Vec<Tensor<4>> = chains.iter().map(|c| chain(x.clone(), c)).collect();
                out.push(pool.forward(pool_same(x, false)));
                Tensor::cat(out, 1)
            }
            Block::Reduce { chains } => {
                let mut out: Vec<Tensor<4>> = chains.iter().map(|c| chain(x.clone(), c)).collect();
                out.push(pool_down(x));
                Tensor::cat(out, 1)
            }
            Block::Expanded(e) => {
                let Expanded {
                    one,
                    split,
                    double,
                    pool,
                    max,
                } = e.as_ref();
                let s = chain(x.clone(), &split.0);
                let d = chain(x.clone(), &double.0);
                let out = vec![
                    one.forward(x.clone()),
                    split.1.forward(s.clone()),
                    split.2.forward(s),
                    double.1.forward(d.clone()),
                    double.2.forward(d),
                    pool.forward(pool_same(x, *max)),
                ];
                Tensor::cat(out, 1)
            }
        }
    }
}

/// pytorch-fid's Inception-v3 up to pool3, on one device.
pub struct Inception {
    stem: Vec<Conv>,
    blocks: Vec<Block>,
    width: usize,
    device: Device,
}

impl Inception {
    /// Reads pytorch-fid's weights file (every tensor of the network must be there in its shape,
    /// and finite; the classifier's `fc` is ignored).
    pub fn read(path: &Path, device: &Device) -> Result<Self, CoreError> {
        let mut w = Weights {
            file: TorchFile::read(path, "pytorch-fid's Inception weights")?,
            device,
        };
        let stem = vec![
            w.conv("Conv2d_1a_3x3", (3, 3), 2, (0, 0))?,
            w.conv("Conv2d_2a_3x3", (3, 3), 1, (0, 0))?,
            w.conv("Conv2d_2b_3x3", (3, 3), 1, (1, 1))?,
            w.conv("Conv2d_3b_1x1", (1, 1), 1, (0, 0))?,
            w.conv("Conv2d_4a_3x3", (3, 3), 1, (0, 0))?,
        ];
        let mut blocks = Vec::new();
        for m in ["Mixed_5b", "Mixed_5c", "Mixed_5d"] {
            let c = |w: &mut Weights, n: &str, k, p| w.conv(&format!("{m}.{n}"), k, 1, p);
            blocks.push(Block::Chains {
                chains: vec![
                    vec![c(&mut w, "branch1x1", (1, 1), (0, 0))?],
                    vec![
                        c(&mut w, "branch5x5_1", (1, 1), (0, 0))?,
                        c(&mut w, "branch5x5_2", (5, 5), (2, 2))?,
                    ],
                    vec![
                        c(&mut w, "branch3x3dbl_1", (1, 1), (0, 0))?,
                        c(&mut w, "branch3x3dbl_2", (3, 3), (1, 1))?,
                        c(&mut w, "branch3x3dbl_3", (3, 3), (1, 1))?,
                    ],
                ],
                pool: Box::new(c(&mut w, "branch_pool", (1, 1), (0, 0))?),
            });
        }
        blocks.push(Block::Reduce {
            chains: vec![
                vec![w.conv("Mixed_6a.branch3x3", (3, 3), 2, (0, 0))?],
                vec![
                    w.conv("Mixed_6a.branch3x3dbl_1", (1, 1), 1, (0, 0))?,
                    w.conv("Mixed_6a.branch3x3dbl_2", (3, 3), 1, (1, 1))?,
                    w.conv("Mixed_6a.branch3x3dbl_3", (3, 3), 2, (0, 0))?,
                ],
            ],
        });
        let (row, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        for m in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"] {
            let c = |w: &mut Weights, n: &str, (k, p)| w.conv(&format!("{m}.{n}"), k, 1, p);
            let one = ((1, 1), (0, 0));
            blocks.push(Block::Chains {
                chains: vec![
                    vec![c(&mut w, "branch1x1", one)?],
                    vec![
                        c(&mut w, "branch7x7_1", one)?,
                        c(&mut w, "branch7x7_2", row)?,
                        c(&mut w, "branch7x7_3", col)?,
                    ],
                    vec![
                        c(&mut w, "branch7x7dbl_1", one)?,
                        c(&mut w, "branch7x7dbl_2", col)?,
                        c(&mut w, "branch7x7dbl_3", row)?,
                        c(&mut w, "branch7x7dbl_4", col)?,
                        c(&mut w, "branch7x7dbl_5", row)?,
                    ],
                ],
                pool: Box::new(c(&mut w, "branch_pool", one)?),
            });
        }
        blocks.push(Block::Reduce {
            chains: vec![
                vec![
                    w.conv("Mixed_7a.branch3x3_1", (1, 1), 1, (0, 0))?,
                    w.conv("Mixed_7a.branch3x3_2", (3, 3), 2, (0, 0))?,
                ],
                vec![
                    w.conv("Mixed_7a.branch7x7x3_1", (1, 1), 1, (0, 0))?,
                    w.conv("Mixed_7a.branch7x7x3_2", (1, 7), 1, (0, 3))?,
                    w.conv("Mixed_7a.branch7x7x3_3", (7, 1), 1, (3, 0))?,
                    w.conv("Mixed_7a.branch7x7x3_4", (3, 3), 2, (0, 0))?,
                ],
            ],
        });
        for (m, max) in [("Mixed_7b", false), ("Mixed_7c", true)] {
            let c = |w: &mut Weights, n: &str, k, p| w.conv(&format!("{m}.{n}"), k, 1, p);
            blocks.push(Block::Expanded(Box::new(Expanded {
                one: c(&mut w, "branch1x1", (1, 1), (0, 0))?,
                split: (
                    vec![c(&mut w, "branch3x3_1", (1, 1), (0, 0))?],
                    c(&mut w, "branch3x3_2a", (1, 3), (0, 1))?,
                    c(&mut w, "branch3x3_2b", (3, 1), (1, 0))?,
                ),
                double: (
                    vec![
                        c(&mut w, "branch3x3dbl_1", (1, 1), (0, 0))?,
                        c(&mut w, "branch3x3dbl_2", (3, 3), (1, 1))?,
                    ],
                    c(&mut w, "branch3x3dbl_3a", (1, 3), (0, 1))?,
                    c(&mut w, "branch3x3dbl_3b", (3, 1), (1, 0))?,
                ),
                pool: c(&mut w, "branch_pool", (1, 1), (0, 0))?,
                max,
            })));
        }
        let width = match blocks.last() {
            Some(Block::Expanded(e)) => [
                &e.one,
                &e.split.1,
                &e.split.2,
                &e.double.1,
                &e.double.2,
                &e.pool,
            ]
            .iter()
            .map(|c| c.weight.dims()[0])
            .sum(),
            _ => unreachable!("the network ends in Mixed_7c"),
        };
        Ok(Self {
            stem,
            blocks,
            width,
            device: device.clone(),
        })
    }

    /// Features per image: 2048 ([`FEATURES`]) for the published network (narrower for a test
    /// fixture with every width divided).
    pub fn width(&self) -> usize {
        self.width
    }

    /// pool3 features `[n, 2048]` of `n` images `[n, 3, h, w]` (values on [0, 1], flattened in
    /// that order), resized to 299×299 first.
    pub fn features(&self, images: &[f32], shape: [usize; 4]) -> Tensor<2> {
        let [n, c, h, w] = shape;
        assert_eq!(c, 3, "Inception takes RGB images");
        let resized = resize_bilinear(images, n * c, h, w, SIZE, SIZE);
        let x = Tensor::<4>::from_data(TensorData::new(resized, [n, c, SIZE, SIZE]), &self.device)
            * 2.0
            - 1.0;
        let x = chain(x, &self.stem[..3]);
        let x = pool_down(x);
        let x = chain(x, &self.stem[3..]);
        let x = pool_down(x);
        let x = self.blocks.iter().fold(x, |x, b| b.forward(x));
        let [n, c, h, w] = x.dims();
        x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
    }
}

/// Bilinear resize of `planes` planes `h × w` to `oh × ow`, as PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)` without antialiasing: the source of output
/// pixel d is (d + ½)·(in/out) − ½, clamped below at 0, between its two neighbours.
pub fn resize_bilinear(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let src = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ty, tx) = (taps(h, oh), taps(w, ow));
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in x.chunks_exact(h * w).take(planes) {
        for &(y0, y1, fy) in &ty {
            for &(x0, x1, fx) in &tx {
                let top = p[y0 * w + x0] * (1.0 - fx) + p[y0 * w + x1] * fx;
                let bottom = p[y1 * w + x0] * (1.0 - fx) + p[y1 * w + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}
