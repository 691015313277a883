//! Unconditional samples from a trained model (`sample --checkpoint DIR`): `n` images by one
//! sampler, in batches, written as `samples.npy` and `grid.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_core::parallel::Sharded;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::Spacing;

use crate::check::{self, Range};
use crate::output::write_samples;
use crate::prior::Prior;
use crate::sampler::{SamplerKind, draw_images};

/// What to draw.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub checkpoint: PathBuf,
    pub sampler: SamplerKind,
    /// Sampling steps; default 50, or T for DDPM.
    pub steps: Option<usize>,
    /// DDIM's η in [0, 1].
    pub eta: f64,
    /// Default: the sampler's own.
    pub spacing: Option<Spacing>,
    /// DDPM's variance; default the model's (an imported scheduler's `variance_type`), else β̃.
    pub variance: Option<ModelVariance>,
    /// Clamp x̂_0 to [−1, 1] at each step; default the model's (`clip_sample`), else yes.
    pub clip: Option<bool>,
    pub raw_weights: bool,
    pub n: usize,
    pub batch_size: usize,
    pub shards: usize,
    pub seed: u64,
    pub backend: BackendKind,
    pub quiet: bool,
}

/// The images drawn.
pub struct Generated {
    /// uint8, `shape` = N×H×W×C.
    pub images: Vec<u8>,
    pub shape: [usize; 4],
    /// "64 images, ema at step 2500, ddpm sampler, 100 steps, 100 network calls, 36.1 s".
    pub summary: String,
}

pub fn run(o: &GenerateOptions) -> Result<Generated> {
    if o.n == 0 || o.batch_size == 0 || o.shards == 0 {
        bail!("--n, --batch-size and --shards must be positive");
    }
    check::float("--eta", o.eta, Range::Unit)?;
    let device = o.backend.device()?;
    let prior = Prior::load(&o.checkpoint, &device, o.raw_weights)?;
    if let Some(note) = prior.weights_note(o.raw_weights) {
        eprintln!("{note}");
    }
    let big_t = prior.schedule.len();
    let steps = o.steps.unwrap_or(match o.sampler {
        SamplerKind::Ddpm => big_t,
        _ => 50.min(big_t),
    });
    let timesteps = prior
        .schedule
        .timesteps(steps, o.spacing.unwrap_or(o.sampler.default_spacing()))?;
    let defaults = prior.meta.sampling.unwrap_or_default();
    let variance = o
        .variance
        .or(defaults.variance)
        .unwrap_or(ModelVariance::Small);
    let clip = o.clip.or(defaults.clip).unwrap_or(true);
    let mut sampler = o.sampler.build(o.eta, variance, clip);
    let [c, r, _] = prior.image_shape();
    let mut rng = Rng::new(o.seed);
    let bar = crate::progress::bar(
        o.n.div_ceil(o.batch_size) * timesteps.len(),
        o.quiet,
        "{spinner} sampling [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}",
    );
    let clock = Instant::now();
    let den = Sharded {
        inner: &prior.model,
        backend: o.backend,
        shards: o.shards,
    };
    let (images, nfe) = draw_images(
        &den,
        sampler.as_mut(),
        &prior.schedule,
        &timesteps,
        o.n,
        o.batch_size,
        [c, r, r],
        &mut rng,
        &device,
        || bar.inc(1),
    );
    bar.finish_and_clear();
    let summary = format!(
        "{} images, {} at step {}, {} sampler, {} steps, {nfe} network calls, {:.1} s",
        o.n,
        prior.weights.name(),
        prior.meta.step,
        sampler.name(),
        timesteps.len(),
        clock.elapsed().as_secs_f64()
    );
    Ok(Generated {
        images,
        shape: [o.n, r, r, c],
        summary,
    })
}

impl Generated {
    /// Writes `out/samples.npy` and `out/grid.png`.
    pub fn write(&self, out: &Path) -> Result<()> {
        write_samples(out, &self.images, self.shape)
    }
}
