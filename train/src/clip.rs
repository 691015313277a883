//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` and the DDPM code do:
//! g ← g · min(1, c / ‖g‖₂) with ‖g‖₂ over *all* parameters together. (burn's own
//! `GradientClipping::Norm` clips each tensor separately, which is a different operation.)

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            let s = g.square().sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register(p.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of the gradients of `module`'s parameters.
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm { grads, acc: None };
    module.visit(&mut v);
    v.acc
        .map_or(0.0, |a| (a.into_scalar::<f32>() as f64).sqrt())
}

/// Multiplies every gradient of `module`'s parameters by `factor` (mixed precision's unscaling).
pub fn scale<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    module.visit(&mut Scale { grads, factor });
}

/// Scales the gradients so their global norm is at most `max_norm` (no-op for `max_norm` = 0).
/// Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_norm(module, grads);
    if max_norm > 0.0 && norm > max_norm {
        scale(module, grads, max_norm / (norm + 1e-6));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn clips_the_joint_norm_not_each_tensor() {
        let dev = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&dev);
        let x = Tensor::<2>::ones([4, 3], &dev).mul_scalar(10.0);
        let loss = lin.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &lin);
        let before = global_norm(&lin, &grads);
        // d/dW of Σ(xW + b) = Σ_rows x = 40 per weight entry (6 entries), d/db = 4 (2 entries).
        let want = (6.0 * 40.0f64.powi(2) + 2.0 * 16.0).sqrt();
        assert!((before - want).abs() < 1e-3 * want, "{before} vs {want}");
        let reported = clip_global_norm(&lin, &mut grads, 1.0);
        assert!((reported - before).abs() < 1e-9);
        let after = global_norm(&lin, &grads);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        // The bias gradient keeps its share of the joint norm (per-tensor clipping would make it 1).
        let gb: Tensor<1> = grads.get(lin.bias.as_ref().unwrap().id).unwrap();
        let nb = (gb.square().sum().into_scalar::<f32>() as f64).sqrt();
        assert!((nb - 32f64.sqrt() / want).abs() < 1e-4, "{nb}");
    }
}
