//! Group normalisation (Wu & He 2018, eq. 1–3) with fewer full-size tensor operations than
//! `burn::nn::GroupNorm`.
//!
//! burn has no fused GroupNorm kernel: under autodiff every elementwise operation of the formula is
//! a pass over the activation forward and one to three more backward, and on the CPU these passes,
//! not the convolutions, are what separate a training step from PyTorch's (BENCHMARKS.md). This
//! version folds 1/σ and γ into one per-channel scale computed on `[B, C]`, so the activation is
//! touched by one multiply and one add after the statistics instead of a divide, a multiply and an
//! add, and the backward pass loses the divide's two extra full-size products. The parameters and
//! their names (`gamma`, `beta`) are those of `burn::nn::GroupNorm`, so checkpoints written with
//! either load into the other.

use burn::module::Param;
use burn::prelude::*;

/// GroupNorm over `num_groups` groups of channels with a per-channel affine (γ = 1, β = 0 at
/// initialisation).
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// Per-channel scale γ, `[C]`.
    pub gamma: Param<Tensor<1>>,
    /// Per-channel shift β, `[C]`.
    pub beta: Param<Tensor<1>>,
    num_groups: usize,
    epsilon: f64,
}

impl GroupNorm {
    /// `channels` must be a multiple of `num_groups`.
    pub fn new(num_groups: usize, channels: usize, epsilon: f64, device: &Device) -> Self {
        assert!(
            num_groups > 0 && channels.is_multiple_of(num_groups),
            "GroupNorm: {channels} channels do not split into {num_groups} groups"
        );
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            num_groups,
            epsilon,
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`: y = γ_c (x − μ_g) / √(σ²_g + ε) + β_c, with μ_g, σ²_g the
    /// mean and (biased) variance of each sample's group g ∋ c over its channels and positions.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let g = self.num_groups;
        let per_group = c / g;
        let xg = x.reshape([b, g, per_group * h * w]);
        let mean = xg.clone().mean_dim(2); // [B, G, 1]
        let centred = xg - mean;
        let var = centred.clone().square().mean_dim(2); // [B, G, 1]
        let inv_std = var.add_scalar(self.epsilon).sqrt().recip();
        // Per-channel scale γ_c / σ_g on [B, C, 1, 1]: the group's factor repeated over its channels.
        let scale = inv_std
            .expand([b, g, per_group])
            .reshape([b, c, 1, 1])
            .mul(self.gamma.val().reshape([1, c, 1, 1]));
        centred.reshape([b, c, h, w]) * scale + self.beta.val().reshape([1, c, 1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_values;
    use burn::nn::GroupNormConfig;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        rng.normals(n).iter().map(|z| z * 3.0 + 1.5).collect()
    }

    /// Same values and same gradients (x, γ, β) as burn's GroupNorm, with non-trivial γ and β.
    #[test]
    fn matches_burn_group_norm_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let (b, c, h, w, g) = (2, 8, 3, 5, 4);
        let x = Tensor::<1>::from_floats(data(b * c * h * w, 1).as_slice(), &device)
            .reshape([b, c, h, w]);
        let gamma = Tensor::<1>::from_floats(data(c, 2).as_slice(), &device);
        let beta = Tensor::<1>::from_floats(data(c, 3).as_slice(), &device);
        let up = Tensor::<1>::from_floats(data(b * c * h * w, 4).as_slice(), &device)
            .reshape([b, c, h, w]);

        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let (y, gam, bet) = if ours {
                let mut m = GroupNorm::new(g, c, 1e-6, &device);
                m.gamma = Param::from_tensor(gamma.clone().require_grad());
                m.beta = Param::from_tensor(beta.clone().require_grad());
                (m.forward(x.clone()), m.gamma.val(), m.beta.val())
            } else {
                let mut m = GroupNormConfig::new(g, c).with_epsilon(1e-6).init(&device);
                m.gamma = Some(Param::from_tensor(gamma.clone().require_grad()));
                m.beta = Some(Param::from_tensor(beta.clone().require_grad()));
                let gam = m.gamma.as_ref().unwrap().val();
                let bet = m.beta.as_ref().unwrap().val();
                (m.forward(x.clone()), gam, bet)
            };
            let grads = (y.clone() * up.clone()).sum().backward();
            (
                host_values(y),
                host_values(x.grad(&grads).unwrap()),
                host_values(gam.grad(&grads).unwrap()),
                host_values(bet.grad(&grads).unwrap()),
            )
        };
        let ours = run(true);
        let theirs = run(false);
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{what}[{i}]: {p} vs {q}"
                );
            }
        };
        close(&ours.0, &theirs.0, "y");
        close(&ours.1, &theirs.1, "dx");
        close(&ours.2, &theirs.2, "dgamma");
        close(&ours.3, &theirs.3, "dbeta");
        // The output is normalised per group: with γ = 1, β = 0 each group has mean 0, variance 1.
        let plain = GroupNorm::new(g, c, 0.0, &device).forward(x.clone());
        let per = plain.reshape([b * g, c / g * h * w]);
        let mean = host_values(per.clone().mean_dim(1));
        let var = host_values(per.square().mean_dim(1));
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");
    }
}
