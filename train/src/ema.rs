//! Exponential moving average of a module's parameters, θ̄ ← d·θ̄ + (1 − d)·θ, kept on the plain
//! (non-autodiff) device and detached from any graph. burn has none built in; this is a
//! `ModuleVisitor` that snapshots the online parameters and a `ModuleMapper` that blends them in.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

struct Snapshot(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let t = p.val().detach();
        let n = t.shape().num_elements();
        self.0.insert(p.id, t.reshape([n]));
    }
}

struct Blend<'a> {
    online: &'a HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.online.get(&p.id).cloned() else {
            return p;
        };
        let d = self.decay;
        p.map(|e| {
            let s: Tensor<D> = src.reshape(e.shape());
            (e.mul_scalar(d) + s.mul_scalar(1.0 - d)).detach()
        })
    }
}

/// The decay at optimiser step `step` (0-based count of updates done before this one):
/// with warm-up, min(decay, (1 + n)/(10 + n)) as in TensorFlow's ExponentialMovingAverage
/// `num_updates`; otherwise `decay`.
pub fn decay_at(decay: f64, warmup: bool, step: usize) -> f64 {
    if warmup {
        decay.min((1.0 + step as f64) / (10.0 + step as f64))
    } else {
        decay
    }
}

/// Blends `online` (any device; its values are read detached on the plain device) into `ema`,
/// which must be a copy of the same module (same `ParamId`s), e.g. `online.valid()` at the start.
pub fn update<M: Module>(ema: M, online_plain: &M, decay: f64) -> M {
    let mut snap = Snapshot(HashMap::new());
    online_plain.visit(&mut snap);
    ema.map(&mut Blend {
        online: &snap.0,
        decay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn ema_moves_toward_the_online_weights_by_one_minus_decay() {
        let dev = Device::flex();
        let online: Linear = LinearConfig::new(2, 3).init(&dev);
        let ema = online.clone();
        let w0 = tweedie_core::host_values(ema.weight.val());
        // Move the online weights by +1 everywhere.
        let moved = online.clone().map(&mut Shift);
        let ema = update(ema, &moved, 0.9);
        let w1 = tweedie_core::host_values(ema.weight.val());
        for (a, b) in w0.iter().zip(&w1) {
            assert!((b - a - 0.1).abs() < 1e-6, "{a} -> {b}");
        }
        assert_eq!(decay_at(0.9999, true, 0), 0.1);
        assert_eq!(decay_at(0.9999, true, 1_000_000), 0.9999);
        assert_eq!(decay_at(0.5, false, 0), 0.5);
    }

    struct Shift;
    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.add_scalar(1.0))
        }
    }
}
