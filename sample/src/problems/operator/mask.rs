//! Inpainting: y = m ⊙ x with a 0/1 mask m over pixels (shared by all channels). The observation
//! keeps the image's shape (unobserved pixels are 0), so A = Aᵀ = A⁺ = diag(m).

use burn::prelude::*;
use tweedie_core::rng::Rng;

use super::ForwardOperator;

/// A pixel mask of `h × w`, 1 where observed.
#[derive(Debug, Clone)]
pub struct Mask {
    pub kind: String,
    pub h: usize,
    pub w: usize,
    pub observed: Vec<bool>,
}

impl Mask {
    /// Hides the box of rows `top..top+bh` and columns `left..left+bw`.
    pub fn hide_box(h: usize, w: usize, top: usize, left: usize, bh: usize, bw: usize) -> Self {
        let observed = (0..h * w).map(|i| {
            let (r, c) = (i / w, i % w);
            !(r >= top && r < top + bh && c >= left && c < left + bw)
        });
        Self {
            kind: format!("box{bh}x{bw}@{top},{left}"),
            h,
            w,
            observed: observed.collect(),
        }
    }
    /// Keeps each pixel independently with probability `keep` (seeded).
    pub fn random(h: usize, w: usize, keep: f64, seed: u64) -> Self {
        let mut r = Rng::new(seed);
        Self {
            kind: format!("random{keep}"),
            h,
            w,
            observed: (0..h * w).map(|_| r.uniform() < keep).collect(),
        }
    }
    /// Observes the left half (TDS's "half" inpainting task).
    pub fn half(h: usize, w: usize) -> Self {
        let m = Self::hide_box(h, w, 0, w / 2, h, w - w / 2);
        Self {
            kind: "half".into(),
            ..m
        }
    }
    /// Observes all but the bottom-right quarter (TDS's "quarter" task).
    pub fn quarter(h: usize, w: usize) -> Self {
        let m = Self::hide_box(h, w, h / 2, w / 2, h - h / 2, w - w / 2);
        Self {
            kind: "quarter".into(),
            ..m
        }
    }
    pub(crate) fn tensor(&self, device: &Device) -> Tensor<4> {
        let v: Vec<f32> = self
            .observed
            .iter()
            .map(|o| if *o { 1.0 } else { 0.0 })
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [1, 1, self.h, self.w]), device)
    }
}

impl ForwardOperator for Mask {
    fn name(&self) -> String {
        format!("inpaint-{}", self.kind)
    }
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let m = self.tensor(&x.device());
        x * m
    }
    fn adjoint(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.apply(y))
    }
    fn pinv(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.apply(y))
    }
    /// AᵀA = diag(m): divide by m + ρ pixelwise.
    fn gram_scale(&self) -> Option<f64> {
        Some(1.0)
    }
    fn solve_normal(&self, v: Tensor<4>, rho: f64) -> Option<Tensor<4>> {
        let m = self.tensor(&v.device());
        Some(v / m.add_scalar(rho))
    }
    fn spectral(&self) -> Option<Box<dyn crate::operator::spectral::Spectral>> {
        Some(Box::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::tests::{check_adjoint, check_pinv};

    #[test]
    fn masks_hide_what_they_say_and_are_self_adjoint() {
        let b = Mask::hide_box(4, 4, 1, 1, 2, 2);
        assert_eq!(b.observed.iter().filter(|o| !**o).count(), 4);
        assert!(!b.observed[5] && b.observed[0]);
        assert_eq!(Mask::half(4, 4).observed.iter().filter(|o| **o).count(), 8);
        assert_eq!(
            Mask::quarter(4, 4).observed.iter().filter(|o| **o).count(),
            12
        );
        let r = Mask::random(28, 28, 0.3, 1);
        let frac = r.observed.iter().filter(|o| **o).count() as f64 / 784.0;
        assert!((frac - 0.3).abs() < 0.06, "{frac}");
        check_adjoint(&b, [2, 3, 4, 4]);
        check_pinv(&r, [2, 1, 28, 28]);
        crate::operator::tests::check_solve(&b, [2, 3, 4, 4], 0.3);
    }
}
