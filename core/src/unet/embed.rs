//! Sinusoidal timestep embedding (Vaswani et al. 2017, §3.5), as in the official DDPM code
//! (`diffusion_tf/nn.py: get_timestep_embedding`): [sin | cos] with log(10000)/(half − 1) spacing.

use burn::prelude::*;

/// `t` `[B]` (float timesteps) → `[B, dim]`.
pub fn timestep_embedding(t: Tensor<1>, dim: usize) -> Tensor<2> {
    let device = t.device();
    let half = dim / 2;
    let scale = -(10000f64.ln()) / (half as f64 - 1.0).max(1.0);
    let freqs: Vec<f32> = (0..half).map(|i| (i as f64 * scale).exp() as f32).collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device);
    let args = t.unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim::<2>(0);
    let emb = Tensor::cat(vec![args.clone().sin(), args.cos()], 1);
    if dim % 2 == 1 {
        let [b, _] = emb.dims();
        Tensor::cat(vec![emb, Tensor::zeros([b, 1], &device)], 1)
    } else {
        emb
    }
}
