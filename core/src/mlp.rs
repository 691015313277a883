//! A conditional MLP for vector problems: ε̂(x_t, t, y), and the drifts of the conditional
//! Schrödinger bridge, which take the same inputs. The observation y enters the first layer with
//! x_t; t through the sinusoidal embedding of the U-Net ([`crate::unet::timestep_embedding`]),
//! added to the first layer's output; then residual layers h ← h + W·SiLU(h). Initial weights
//! come from the host [`Rng`] (a pure function of the seed), as for the U-Net.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::denoiser::ConditionalDenoiser;
use crate::rng::Rng;
use crate::unet::blocks::{Init, linear};
use crate::unet::timestep_embedding;

/// The shape of a [`CondMlp`].
#[derive(Config, Debug)]
pub struct CondMlpConfig {
    /// Dimension of x (and of the output).
    pub dim: usize,
    /// Dimension of the condition y.
    pub cond_dim: usize,
    #[config(default = 128)]
    pub width: usize,
    /// Residual hidden layers.
    #[config(default = 3)]
    pub depth: usize,
    #[config(default = 32)]
    pub time_dim: usize,
    /// Start with a zero output layer (a drift correction that starts at the reference's).
    #[config(default = false)]
    pub zero_output: bool,
}

impl CondMlpConfig {
    /// A network with weights drawn from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> CondMlp {
        let mut rng = Rng::new(seed);
        let mut init = Init {
            device,
            rng: &mut rng,
        };
        let w = self.width;
        let input = linear(self.dim + self.cond_dim, w, &mut init);
        let time = linear(self.time_dim, w, &mut init);
        let hidden = (0..self.depth).map(|_| linear(w, w, &mut init)).collect();
        let mut output = linear(w, self.dim, &mut init);
        if self.zero_output {
            output.weight = burn::module::Param::from_tensor(Tensor::zeros([w, self.dim], device));
        }
        CondMlp {
            input,
            time,
            hidden,
            output,
            dim: self.dim,
            cond_dim: self.cond_dim,
            width: self.width,
            time_dim: self.time_dim,
        }
    }
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct CondMlp {
    input: Linear,
    time: Linear,
    hidden: Vec<Linear>,
    output: Linear,
    dim: usize,
    cond_dim: usize,
    width: usize,
    time_dim: usize,
}

impl CondMlp {
    /// `x` `[B, d]`, one timestep per row, `y` `[B, d_y]` → `[B, d]`.
    pub fn forward(&self, x: Tensor<2>, t: &[usize], y: Tensor<2>) -> Tensor<2> {
        let device = x.device();
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let temb = timestep_embedding(
            Tensor::from_data(TensorData::new(tf, [t.len()]), &device),
            self.time_dim,
        );
        let mut h = self.input.forward(Tensor::cat(vec![x, y], 1)) + self.time.forward(temb);
        for layer in &self.hidden {
            h = h.clone() + layer.forward(silu(h));
        }
        self.output.forward(silu(h))
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The configuration this network was built from (with a random output layer).
    pub fn config(&self) -> CondMlpConfig {
        CondMlpConfig::new(self.dim, self.cond_dim)
            .with_width(self.width)
            .with_depth(self.hidden.len())
            .with_time_dim(self.time_dim)
    }
}

impl ConditionalDenoiser for CondMlp {
    /// Vectors travel as `[B, d, 1, 1]` (the samplers' image layout), the condition as
    /// `[B, d_y, 1, 1]`.
    fn eps_given(&self, x_t: Tensor<4>, t: &[usize], cond: Tensor<4>) -> Tensor<4> {
        let [b, d, _, _] = x_t.dims();
        let dy = cond.dims()[1];
        self.forward(x_t.reshape([b, d]), t, cond.reshape([b, dy]))
            .reshape([b, d, 1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_seeds_and_the_zero_output() {
        let dev = Device::flex();
        let cfg = CondMlpConfig::new(3, 2).with_width(16).with_depth(2);
        let x = Tensor::<2>::ones([4, 3], &dev);
        let y = Tensor::<2>::ones([4, 2], &dev);
        let t = [0, 10, 100, 999];
        let a = cfg.init(1, &dev).forward(x.clone(), &t, y.clone());
        let b = cfg.init(1, &dev).forward(x.clone(), &t, y.clone());
        assert_eq!(a.dims(), [4, 3]);
        assert_eq!(a.to_data(), b.to_data(), "same seed, same network");
        let c = cfg.init(2, &dev).forward(x.clone(), &t, y.clone());
        assert_ne!(a.to_data(), c.to_data());
        // The output depends on t and y.
        let rows: Vec<f32> = a.into_data().iter::<f32>().collect();
        assert_ne!(rows[0..3], rows[3..6]);
        let y2 = Tensor::<2>::zeros([4, 2], &dev);
        assert_ne!(
            cfg.init(1, &dev).forward(x.clone(), &t, y2).to_data(),
            b.to_data()
        );
        let z = cfg.with_zero_output(true).init(1, &dev).forward(x, &t, y);
        assert!(z.abs().max().into_scalar::<f32>() == 0.0);
    }
}
