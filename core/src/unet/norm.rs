//! Group normalisation (Wu & He 2018, eq. 1–3), optionally followed by SiLU.
//!
//! burn has no GroupNorm kernel. On Flex, NdArray and LibTorch this module calls
//! [`crate::kernel::FusedOps`], one operation with a hand-written gradient; elsewhere (wgpu, where
//! burn's fusion merges the elementwise chain) it composes tensor operations, folding 1/σ and γ
//! into one per-channel scale on `[B, C]` so that the activation is touched by one multiply and one
//! add after the statistics. The parameters and their names (`gamma`, `beta`) are those of
//! `burn::nn::GroupNorm`, so checkpoints written with either load into the other.

use crate::kernel;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::FloatDType;

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
        self.forward_with(x, false)
    }

    /// SiLU(GroupNorm(x)), the pre-activation of every convolution in the U-Net, as one operation.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: Tensor<4>, silu: bool) -> Tensor<4> {
        if kernel::fused_available(&x.device()) {
            let (gamma, beta) = (self.gamma.val(), self.beta.val());
            return kernel::group_norm_silu(x, gamma, beta, self.num_groups, self.epsilon, silu);
        }
        let y = self.compose(x);
        if silu {
            burn::tensor::activation::silu(y)
        } else {
            y
        }
    }

    /// The formula composed from tensor operations, for backends without [`kernel::FusedOps`].
    /// Statistics and affine in f32 whatever `x`'s dtype (f16 under mixed precision, where a
    /// mean of squares over a group overflows or loses its digits); the result in `x`'s dtype.
    fn compose(&self, x: Tensor<4>) -> Tensor<4> {
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
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
            .mul(self.gamma.val().cast(FloatDType::F32).reshape([1, c, 1, 1]));
        let beta = self.beta.val().cast(FloatDType::F32).reshape([1, c, 1, 1]);
        (centred.reshape([b, c, h, w]) * scale + beta).cast(dtype)
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

    #[derive(Clone, Copy, Debug)]
    enum Path {
        /// `forward_with`: the fused kernel on the backends that have one.
        Module,
        /// The tensor-operation composition used on the other backends.
        Compose,
        /// burn's own `nn::GroupNorm` and `activation::silu`.
        Burn,
    }

    /// Values and gradients (x, γ, β) of GroupNorm, + SiLU when `silu`, through `path` on `device`.
    fn run(path: Path, silu: bool, device: &Device) -> [Vec<f32>; 4] {
        let (b, c, h, w, g) = (2, 8, 3, 5, 4);
        let x = Tensor::<1>::from_floats(data(b * c * h * w, 1).as_slice(), device)
            .reshape([b, c, h, w])
            .require_grad();
        let gamma = Tensor::<1>::from_floats(data(c, 2).as_slice(), device).require_grad();
        let beta = Tensor::<1>::from_floats(data(c, 3).as_slice(), device).require_grad();
        let up = Tensor::<1>::from_floats(data(b * c * h * w, 4).as_slice(), device)
            .reshape([b, c, h, w]);
        let y = match path {
            Path::Burn => {
                let mut m = GroupNormConfig::new(g, c).with_epsilon(1e-6).init(device);
                m.gamma = Some(Param::from_tensor(gamma.clone()));
                m.beta = Some(Param::from_tensor(beta.clone()));
                let y = m.forward(x.clone());
                if silu {
                    burn::tensor::activation::silu(y)
                } else {
                    y
                }
            }
            Path::Module | Path::Compose => {
                let mut m = GroupNorm::new(g, c, 1e-6, device);
                m.gamma = Param::from_tensor(gamma.clone());
                m.beta = Param::from_tensor(beta.clone());
                match (path, silu) {
                    (Path::Module, _) => m.forward_with(x.clone(), silu),
                    (_, false) => m.compose(x.clone()),
                    (_, true) => burn::tensor::activation::silu(m.compose(x.clone())),
                }
            }
        };
        let grads = (y.clone() * up).sum().backward();
        [
            host_values(y),
            host_values(x.grad(&grads).unwrap()),
            host_values(gamma.grad(&grads).unwrap()),
            host_values(beta.grad(&grads).unwrap()),
        ]
    }

    fn assert_close(ours: &[Vec<f32>; 4], theirs: &[Vec<f32>; 4], case: &str) {
        for (k, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
            let (a, b) = (&ours[k], &theirs[k]);
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{case}: {what}[{i}]: {p} vs {q}"
                );
            }
        }
    }

    /// The fused kernels (Flex's loops, NdArray's primitive-op formulas) and the composition give
    /// burn's GroupNorm (+ SiLU) in value and in the gradients of x, γ and β, with non-trivial γ, β
    /// and a spatial size (15) that is not a multiple of the kernels' 8-wide accumulators.
    #[test]
    fn matches_burn_group_norm_in_value_and_gradient() {
        for device in crate::kernel::test_devices() {
            for silu in [false, true] {
                let theirs = run(Path::Burn, silu, &device);
                for path in [Path::Module, Path::Compose] {
                    let case = format!("{device:?} {path:?} silu={silu}");
                    assert_close(&run(path, silu, &device), &theirs, &case);
                }
            }
        }
    }

    /// Without autodiff the kernel runs its untracked path; the values are the same.
    #[test]
    fn inference_path_gives_the_same_values() {
        let (b, c, h, w, g) = (3, 64, 4, 4, 32);
        let xs = data(b * c * h * w, 7);
        let out = |device: &Device, fused: bool| {
            let x = Tensor::<1>::from_floats(xs.as_slice(), device).reshape([b, c, h, w]);
            let m = GroupNorm::new(g, c, 1e-6, device);
            host_values(if fused {
                m.forward_silu(x)
            } else {
                burn::tensor::activation::silu(m.compose(x))
            })
        };
        let (flex, reference) = (out(&Device::flex(), true), out(&Device::flex(), false));
        assert!(kernel::fused_available(&Device::flex()));
        for (p, q) in flex.iter().zip(&reference) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    /// The output is normalised per group: with γ = 1, β = 0 each group has mean 0, variance 1.
    #[test]
    fn output_groups_have_zero_mean_and_unit_variance() {
        let device = Device::flex();
        let (b, c, h, w, g) = (2, 8, 3, 5, 4);
        let x = Tensor::<1>::from_floats(data(b * c * h * w, 1).as_slice(), &device)
            .reshape([b, c, h, w]);
        let plain = GroupNorm::new(g, c, 0.0, &device).forward(x);
        let per = plain.reshape([b * g, c / g * h * w]);
        let mean = host_values(per.clone().mean_dim(1));
        let var = host_values(per.square().mean_dim(1));
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");
    }
}
