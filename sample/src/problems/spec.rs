//! The observation model as the experiment files write it: the operator A (`[operator]`) and
//! the noise (`[noise]`), every parameter on the [0, 1] image scale, each built into the
//! problem's [`ForwardOperator`] or [`NoiseModel`] with its ranges checked. Reconstruction files
//! and the amortized route's training files share them.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::check::{self, Range};
use crate::noise::{Gaussian, NoiseModel, Poisson, StudentT};
use crate::operator::{
    AvgPool, ForwardOperator, GaussianBlur, Identity, Luminance, Mask, Saturate,
};

/// The forward operator A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OperatorSpec {
    /// Hides a box of `height × width` pixels at (`top`, `left`).
    InpaintBox {
        top: usize,
        left: usize,
        height: usize,
        width: usize,
    },
    /// Keeps each pixel with probability `keep` (the mask is drawn once, from `mask_seed`).
    InpaintRandom {
        keep: f64,
        #[serde(default)]
        mask_seed: u64,
    },
    /// Observes the left half. (The keyless variants are empty structs, not unit variants: serde
    /// lets a tagged unit variant take any other key silently.)
    InpaintHalf {},
    /// Observes all but the bottom-right quarter.
    InpaintQuarter {},
    /// Super-resolution: average pooling by `factor`.
    Sr { factor: usize },
    /// Gaussian blur with a `size × size` kernel of standard deviation `sigma` (pixels).
    Blur { size: usize, sigma: f64 },
    /// Denoising: A = I.
    Denoise {},
    /// The saturating response tanh(gain · x) (non-linear).
    Saturate { gain: f64 },
    /// Colourisation: the luminance of RGB images (BT.601 weights).
    Colorize {},
}

/// The noise model; every parameter on the [0, 1] image scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NoiseSpec {
    Gaussian { sigma_y: f64 },
    Poisson { rate: f64 },
    StudentT { nu: f64, scale: f64 },
}

impl OperatorSpec {
    /// The operator on `h × w` images; a spec that does not fit them is a one-line error.
    pub fn build(&self, h: usize, w: usize) -> Result<Box<dyn ForwardOperator>> {
        Ok(match *self {
            OperatorSpec::InpaintBox {
                top,
                left,
                height,
                width,
            } => {
                if height == 0 || width == 0 || top + height > h || left + width > w {
                    bail!(
                        "operator: box {height}×{width} at ({top}, {left}) does not fit {h}×{w} images"
                    );
                }
                Box::new(Mask::hide_box(h, w, top, left, height, width))
            }
            OperatorSpec::InpaintRandom { keep, mask_seed } => {
                check::float("operator.keep", keep, Range::OpenUnit)?;
                Box::new(Mask::random(h, w, keep, mask_seed))
            }
            OperatorSpec::InpaintHalf {} => Box::new(Mask::half(h, w)),
            OperatorSpec::InpaintQuarter {} => Box::new(Mask::quarter(h, w)),
            OperatorSpec::Sr { factor } => {
                if factor < 2 || !h.is_multiple_of(factor) || !w.is_multiple_of(factor) {
                    bail!("operator: sr factor {factor} must be ≥ 2 and divide {h}×{w}");
                }
                Box::new(AvgPool { factor })
            }
            OperatorSpec::Blur { size, sigma } => {
                if size % 2 == 0 || size > h.min(w) {
                    bail!(
                        "operator: blur needs an odd kernel size ≤ the image ({h}×{w}), got size {size}"
                    );
                }
                check::float("operator.sigma", sigma, Range::Positive)?;
                Box::new(GaussianBlur { size, sigma })
            }
            OperatorSpec::Denoise {} => Box::new(Identity),
            OperatorSpec::Colorize {} => Box::new(Luminance),
            OperatorSpec::Saturate { gain } => {
                check::float("operator.gain", gain, Range::Positive)?;
                Box::new(Saturate { gain })
            }
        })
    }
}

impl NoiseSpec {
    /// The noise model; parameters out of range are a one-line error naming the key.
    pub fn build(&self) -> Result<Box<dyn NoiseModel>> {
        let pos = |name: &str, v: f64| check::float(&format!("noise.{name}"), v, Range::Positive);
        Ok(match *self {
            NoiseSpec::Gaussian { sigma_y } => {
                // 0: a noiseless observation (the methods that need a likelihood refuse it).
                check::float("noise.sigma_y", sigma_y, Range::NonNegative)?;
                Box::new(Gaussian { sigma_y })
            }
            NoiseSpec::Poisson { rate } => {
                pos("rate", rate)?;
                Box::new(Poisson { rate })
            }
            NoiseSpec::StudentT { nu, scale } => {
                pos("nu", nu)?;
                pos("scale", scale)?;
                Box::new(StudentT { nu, scale })
            }
        })
    }
}
