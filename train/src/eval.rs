//! Evaluation on held-out images: L_simple and the full variational bound in bits/dim.

use burn::prelude::*;
use serde::Serialize;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::elbo::{ModelVariance, elbo_bpd};
use tweedie_core::loss::l_simple;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::NoiseSchedule;
use tweedie_datasets::{ImageBatcher, ImageItem, ImageSet};

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Images to use (the first n of the split).
    pub n: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// The fixed variance of p_θ(x_{t−1} | x_t).
    pub variance: ModelVariance,
    /// Clamp x̂_0 to [−1, 1] in the model mean (iDDPM's `clip_denoised`).
    pub clip: bool,
}

/// Averages over the evaluated images. The bound's terms are in bits/dim.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalResult {
    pub images: usize,
    /// L_simple with one (t, ε) per image.
    pub l_simple: f64,
    /// The whole bound: prior + Σ KL + decoder.
    pub bpd: f64,
    pub prior_bpd: f64,
    pub kl_bpd: f64,
    pub decoder_bpd: f64,
}

/// Evaluates `model` on the first `opts.n` images of `data`. `on_batch_step` is called once per
/// timestep of each batch's bound (for a progress bar).
pub fn evaluate(
    model: &dyn Denoiser,
    s: &NoiseSchedule,
    data: &ImageSet,
    device: &Device,
    opts: &EvalOptions,
    mut on_batch_step: impl FnMut(),
) -> EvalResult {
    let n = opts.n.min(data.len());
    let mut rng = Rng::new(opts.seed);
    let (mut ls, mut prior, mut kl, mut dec) = (0.0, 0.0, 0.0, 0.0);
    let mut start = 0;
    while start < n {
        let b = opts.batch_size.min(n - start);
        let items: Vec<ImageItem> = (start..start + b)
            .map(|i| ImageItem {
                shape: data.shape,
                pixels: data.image(i).to_vec(),
                label: data.labels[i],
            })
            .collect();
        let x0 = ImageBatcher.batch_with_flips(items, &[], device).images;
        let [_, c, h, w] = x0.dims();
        let t: Vec<usize> = (0..b).map(|_| rng.below(s.len())).collect();
        let eps = rng.normal_tensor([b, c, h, w], device);
        ls += l_simple(model, s, x0.clone(), &t, eps).into_scalar::<f32>() as f64 * b as f64;
        let terms = elbo_bpd(model, s, x0, opts.variance, opts.clip, &mut rng, |_| {
            on_batch_step()
        });
        prior += terms.prior.iter().sum::<f64>();
        dec += terms.decoder.iter().sum::<f64>();
        kl += terms.kl.iter().skip(1).flat_map(|k| k.iter()).sum::<f64>();
        start += b;
    }
    let nf = n.max(1) as f64;
    EvalResult {
        images: n,
        l_simple: ls / nf,
        bpd: (prior + kl + dec) / nf,
        prior_bpd: prior / nf,
        kl_bpd: kl / nf,
        decoder_bpd: dec / nf,
    }
}
