//! Every sampler-built method on a reconstruction problem ([`crate::catalog::build`]): one
//! system per posterior sample, K particles each for the particle methods (one for the others),
//! each system's draw taken from its final weights.
//!
//! Why one system per sample, not several draws from one weighted set: draws from one system
//! share its resampled ancestors (with K = 4 two draws are often the same particle), so their
//! spread would understate the posterior's; independent systems give independent draws, whose
//! spread is the posterior's as K grows, and one log Ẑ each (their mean estimates p(y) with a
//! standard error from their spread). The cost is K·steps network calls per sample.
//!
//! Systems go through the network in batches: ⌊batch_size / K⌋ whole systems for the particle
//! methods (at least one), whole images with all their samples for the others, so memory is
//! bounded by the batch size, not by the number of images.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::NoiseSchedule;

use super::{MethodRun, MethodSpec, Models, ParticleRun, Problem, ReconFile};
use crate::catalog::{self, Networks, Offers, Task};
use crate::noise::NoiseModel;
use crate::operator::{ForwardOperator, Mask};

/// A batch of a reconstruction's rows: the image each row observes.
struct ImageTask<'a> {
    file: &'a ReconFile,
    problem: &'a Problem,
    models: &'a Models<'a>,
    offers: &'a Offers,
    images: Vec<usize>,
}

impl Task for ImageTask<'_> {
    fn offers(&self) -> &Offers {
        self.offers
    }
    fn shape(&self) -> [usize; 3] {
        self.problem.shape
    }
    fn device(&self, grad: bool) -> Device {
        if grad {
            self.models.grad_device.clone()
        } else {
            self.models.device.clone()
        }
    }
    fn operator(&self) -> Result<Box<dyn ForwardOperator>> {
        let [_, h, w] = self.problem.shape;
        self.file.operator(h, w)
    }
    fn noise(&self) -> Result<Box<dyn NoiseModel>> {
        self.file.noise_model()
    }
    fn y(&self, grad: bool) -> Result<Tensor<4>> {
        Ok(self
            .problem
            .y_of(self.images.iter().copied(), 1, &self.device(grad)))
    }
    fn mask(&self) -> Option<Mask> {
        let [_, h, w] = self.problem.shape;
        self.file.mask(h, w)
    }
    /// ‖A‖²/σ² for Gaussian noise σ (0 without one), AAᵀ's mean diagonal standing in for its
    /// largest eigenvalue (equal for AAᵀ = c·I; blur's is at most 1).
    fn curvature(&self) -> f64 {
        let gram = self.operator().ok().and_then(|op| op.mean_gram_diagonal());
        self.offers
            .gaussian_sigma
            .map_or(0.0, |s| gram.unwrap_or(1.0) / (s * s))
    }
}

/// Runs `spec` on every image of `problem`; `on_step` is called after each reverse step of each
/// batch.
pub(super) fn reconstruct(
    file: &ReconFile,
    spec: MethodSpec,
    problem: &Problem,
    models: &Models,
    schedule: &NoiseSchedule,
    rng: &mut Rng,
    mut on_step: impl FnMut(),
) -> Result<MethodRun> {
    let clock = Instant::now();
    let method = spec.method;
    let [_, h, w] = problem.shape;
    let offers = file.offers(h, w)?;
    let settings = file.settings();
    let samples = file.run.samples;
    let particle = method.is_particle();
    let k = if particle { file.particles_of(spec) } else { 1 };
    let systems = problem.len() * samples;
    let per_batch = if particle {
        (file.run.batch_size / k).max(1)
    } else {
        (file.run.batch_size / samples).max(1) * samples
    };
    let nets = Networks {
        plain: models.plain,
        grad: models.grad,
    };
    let steps = settings.steps(method);
    let mut values = Vec::new();
    let mut stats = Vec::new();
    let (mut nfe, mut grad) = (0, false);
    let mut start = 0;
    while start < systems {
        let range = start..(start + per_batch).min(systems);
        start = range.end;
        let groups = range.len();
        // System s observes image s / samples; its K particles are consecutive rows.
        let task = ImageTask {
            file,
            problem,
            models,
            offers: &offers,
            images: range
                .flat_map(|s| std::iter::repeat_n(s / samples, k))
                .collect(),
        };
        let seed = if particle { rng.next_u64() } else { 0 };
        let mut built = catalog::build(method, k, &settings, &task, schedule, groups, seed)?;
        grad = built.needs_grad();
        let drawn = catalog::draw(
            &mut built,
            &task,
            nets,
            schedule,
            steps,
            groups * k,
            rng,
            &mut on_step,
        )?;
        nfe = k * drawn.nfe;
        values.extend(drawn.values);
        stats.extend(drawn.systems.unwrap_or_default());
    }
    Ok(MethodRun {
        method,
        samples,
        values,
        nfe,
        vjps: if grad { nfe } else { 0 },
        seconds: clock.elapsed().as_secs_f64(),
        particles: particle.then(|| ParticleRun {
            k,
            ess_mean: stats.iter().map(|s| s.ess_mean).collect(),
            resamplings: stats.iter().map(|s| s.resamplings).collect(),
            dropped: stats.iter().map(|s| s.dropped).collect(),
            log_z: stats.iter().map(|s| s.log_z).collect(),
        }),
        train_seconds: None,
    })
}
