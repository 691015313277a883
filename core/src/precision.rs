//! Mixed-precision training (Micikevicius et al. 2018, "Mixed Precision Training", §3): the
//! weights the optimiser updates stay f32 ("master weights"); each step's forward and backward
//! pass run on an f16 copy of them, and the loss is multiplied by a scale S before the backward
//! pass so that small activation gradients do not flush to zero in f16 (§3.2), then the f32
//! gradients are divided by S. A step whose gradients overflowed (inf or NaN) is skipped and S
//! halved; after `growth_interval` clean steps S doubles ("dynamic loss scaling", as
//! `torch.cuda.amp.GradScaler` does).
//!
//! burn 0.22 has no automatic mixed precision: [`half_copy`] casts every parameter with a
//! differentiable cast, so the gradients reach the f32 parameters through the cast's backward.
//! The U-Net computes in its weights' dtype and keeps GroupNorm's statistics and the attention
//! softmax in f32 (`unet::norm`, `unet::blocks`); its output comes back in its input's dtype.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// The arithmetic of a training step (`[train] precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    F32,
    /// f16 forward and backward on an f16 copy of f32 master weights, with dynamic loss scaling.
    MixedF16,
}

/// `module` with every float parameter cast to `dtype` by a differentiable cast: gradients of a
/// loss computed with the copy flow back to `module`'s own parameters, in their dtype.
pub fn half_copy<M: Module>(module: &M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = p.consume();
            Param::from_mapped_value(id, t.cast(self.0), mapper)
        }
    }
    module.clone().map(&mut Cast(dtype))
}

/// The dynamic loss scale and its history, saved with a checkpoint so that a resumed run scales
/// as the uninterrupted one does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// S: the loss is multiplied by it before the backward pass.
    pub scale: f64,
    /// Clean steps since S last changed.
    pub clean: usize,
    /// Steps skipped for overflow, in all.
    pub skipped: usize,
}

/// The initial scale (2¹⁶, GradScaler's) and the clean steps before it doubles.
pub const INITIAL_SCALE: f64 = 65536.0;
pub const GROWTH_INTERVAL: usize = 2000;
/// Below this scale a run that still overflows is not a scaling problem: the forward pass itself
/// leaves f16's range.
pub const MIN_SCALE: f64 = 1.0 / 1024.0;

impl LossScale {
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            clean: 0,
            skipped: 0,
        }
    }

    /// Records a step: `finite` when its loss and gradients were all finite (the step is taken),
    /// else it is skipped and S halves. Returns whether to take the step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.clean += 1;
            if self.clean >= GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean = 0;
            }
        } else {
            self.scale /= 2.0;
            self.clean = 0;
            self.skipped += 1;
        }
        finite
    }

    /// Whether S has fallen so low that overflow cannot be from the scaling.
    pub fn exhausted(&self) -> bool {
        self.scale < MIN_SCALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = LossScale::new(8.0);
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (4.0, 1));
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 4.0);
        s.update(true);
        assert_eq!((s.scale, s.clean), (8.0, 0));
        let mut low = LossScale::new(MIN_SCALE);
        low.update(false);
        assert!(low.exhausted());
    }

    #[test]
    fn a_half_copy_computes_in_f16_and_sends_f32_gradients_to_the_master() {
        let dev = Device::flex().autodiff();
        let lin = burn::nn::LinearConfig::new(3, 2).init(&dev);
        let half = half_copy(&lin, FloatDType::F16);
        assert_eq!(half.weight.val().dtype(), burn::tensor::DType::F16);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &dev).cast(FloatDType::F16);
        let y = half.forward(x).cast(FloatDType::F32).sum();
        let grads = y.backward();
        let g = lin
            .weight
            .val()
            .grad(&grads)
            .expect("a gradient on the master weight");
        assert_eq!(g.dtype(), burn::tensor::DType::F32);
        // d(sum(x W + b))/dW[i][j] = x[i].
        let got = crate::host_values(g);
        let want = [1.0, 1.0, -2.0, -2.0, 0.5, 0.5];
        assert!(
            got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-3),
            "{got:?}"
        );
    }
}
