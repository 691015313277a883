//! The exactness benchmark: a Gaussian-mixture prior (an exact denoiser), a linear-Gaussian
//! observation, and every guidance method's samples against the closed-form posterior
//! (`sample --config experiments/gmm-<name>.toml`).
//!
//! Each method draws `n_samples` posterior samples: guidance methods one per trajectory, particle
//! methods one per independent system of K particles (drawn from its final weights). Scores:
//! the sliced-Wasserstein distance to as many exact posterior draws (averaged over `repeats`
//! independent exact sets), the same distance between two exact sets (the Monte Carlo floor), the
//! total-variation error of the posterior mode weights, and log Ẑ against log p(y).

mod config;
mod run;

pub use config::{GmmFile, MAX_DY, steps, stream};
pub use run::{GmmOptions, GmmReport, run};

use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use serde::Serialize;
use tweedie_core::gmm::{GaussianMixture, GmmPosterior, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

use crate::amortized::{CondMlp, ConditionalBridge};
use crate::catalog::{self, Method, Networks, Offers, Task};
use crate::noise::{Gaussian, NoiseModel};
use crate::operator::spectral::DenseSvd;
use crate::operator::{ForwardOperator, Mask, Matrix};
use crate::sampler::{self, Ddpm};
use crate::smc::log_sum_exp;

/// A built problem.
pub struct GmmProblem {
    pub prior: GaussianMixture,
    pub obs: LinearGaussian,
    pub y: Vec<f64>,
    pub posterior: GmmPosterior,
    pub schedule: NoiseSchedule,
}

/// The networks of the amortized methods, trained once per benchmark run.
#[derive(Default)]
pub struct Nets {
    pub eps: Option<CondMlp>,
    pub bridge: Option<ConditionalBridge>,
    /// Training seconds of the ε-network, and of the bridge's IPF on top of it.
    pub eps_seconds: f64,
    pub csb_seconds: f64,
}

/// One method's draws.
pub struct Draws {
    /// `[n, d]` row-major.
    pub samples: Vec<f64>,
    pub log_z: Option<Vec<f64>>,
    pub ess_mean: Option<f64>,
    pub seconds: f64,
    /// Network calls per trajectory, as the sampler loop counted them (None: the method's own
    /// count, for the amortized ones).
    pub nfe: Option<usize>,
}

impl GmmProblem {
    /// The same prior and observation model with another observation.
    pub fn with_y(&self, y: Vec<f64>) -> Result<GmmProblem> {
        let posterior = self.prior.posterior(&self.obs, &y)?;
        Ok(GmmProblem {
            prior: self.prior.clone(),
            obs: self.obs.clone(),
            y,
            posterior,
            schedule: self.schedule.clone(),
        })
    }

    /// `n` draws by a trained amortized method: one reverse trajectory each.
    fn draw_amortized(
        &self,
        file: &GmmFile,
        method: Method,
        n: usize,
        seed: u64,
        nets: &Nets,
    ) -> Result<Draws> {
        let clock = Instant::now();
        let (d, dy) = (self.prior.dim(), self.obs.dy());
        let mut rng = Rng::new(seed);
        let y: Vec<f32> = (0..n)
            .flat_map(|_| self.y.iter().map(|v| *v as f32))
            .collect();
        let samples = if method == Method::Csb {
            let bridge = nets
                .bridge
                .as_ref()
                .context("csb: the bridge was not trained")?;
            bridge.sample(&y, n, &mut rng)
        } else {
            let net = nets
                .eps
                .as_ref()
                .context("amortized: the network was not trained")?;
            let device = Device::flex();
            let cond = Tensor::<4>::from_data(TensorData::new(y, [n, dy, 1, 1]), &device);
            let model = tweedie_core::denoiser::Conditioned { net, cond };
            let timesteps = self
                .schedule
                .timesteps(steps(file, method), Spacing::Trailing)?;
            let mut ddpm = Ddpm {
                variance: tweedie_core::elbo::ModelVariance::Small,
                clip: false,
            };
            let x_t = rng.normal_tensor([n, d, 1, 1], &device);
            let (x0, _) = sampler::run(
                &model,
                &mut ddpm,
                &self.schedule,
                &timesteps,
                x_t,
                &mut rng,
                |_, _| {},
            );
            tweedie_core::host_values(x0)
        };
        Ok(Draws {
            samples: samples.into_iter().map(f64::from).collect(),
            log_z: None,
            ess_mean: None,
            seconds: clock.elapsed().as_secs_f64(),
            nfe: None,
        })
    }

    /// `n` posterior draws by `method` with `k` particles (particle methods).
    pub fn draw(
        &self,
        file: &GmmFile,
        method: Method,
        k: usize,
        n: usize,
        seed: u64,
        nets: &Nets,
    ) -> Result<Draws> {
        if method.is_amortized() {
            return self.draw_amortized(file, method, n, seed, nets);
        }
        let clock = Instant::now();
        let k = if method.is_particle() { k } else { 1 };
        let offers = file.offers();
        let task = GmmTask {
            problem: self,
            offers: &offers,
            rows: n * k,
        };
        let mut built = catalog::build(
            method,
            k,
            &file.settings(),
            &task,
            &self.schedule,
            n,
            seed ^ 0x5eed,
        )?;
        let nets = Networks {
            plain: &self.prior,
            grad: &self.prior,
        };
        let drawn = catalog::draw(
            &mut built,
            &task,
            nets,
            &self.schedule,
            steps(file, method),
            n * k,
            &mut Rng::new(seed),
            &mut || {},
        )?;
        Ok(Draws {
            samples: drawn.values.into_iter().map(f64::from).collect(),
            log_z: drawn.systems.map(|s| s.iter().map(|s| s.log_z).collect()),
            ess_mean: drawn.ess_mean,
            seconds: clock.elapsed().as_secs_f64(),
            nfe: Some(drawn.nfe),
        })
    }
}

/// The benchmark's rows: `rows` copies of its one observation, on the CPU.
struct GmmTask<'a> {
    problem: &'a GmmProblem,
    offers: &'a Offers,
    rows: usize,
}

impl Task for GmmTask<'_> {
    fn offers(&self) -> &Offers {
        self.offers
    }
    fn shape(&self) -> [usize; 3] {
        [self.problem.prior.dim(), 1, 1]
    }
    fn device(&self, grad: bool) -> Device {
        if grad {
            Device::flex().autodiff()
        } else {
            Device::flex()
        }
    }
    fn operator(&self) -> Result<Box<dyn ForwardOperator>> {
        Ok(Box::new(Matrix {
            a: self.problem.obs.a.clone(),
        }))
    }
    fn noise(&self) -> Result<Box<dyn NoiseModel>> {
        // Gaussian's σ_y is on the [0, 1] image scale (×2 inside); the GMM lives on its own.
        Ok(Box::new(Gaussian {
            sigma_y: self.problem.obs.sigma / 2.0,
        }))
    }
    fn y(&self, grad: bool) -> Result<Tensor<4>> {
        let dy = self.problem.obs.dy();
        let y: Vec<f32> = self.problem.y.iter().map(|v| *v as f32).collect();
        let y = Tensor::<4>::from_data(TensorData::new(y, [1, dy, 1, 1]), &self.device(grad));
        Ok(y.repeat_dim(0, self.rows))
    }
    fn mask(&self) -> Option<Mask> {
        None
    }
    /// ‖A‖²/σ²: A's largest singular value, squared, over the noise variance.
    fn curvature(&self) -> f64 {
        let s = DenseSvd::new(&self.problem.obs.a).largest();
        s * s / (self.problem.obs.sigma * self.problem.obs.sigma)
    }
}

/// Sliced 2-Wasserstein distance between two equal-size point sets `[n, d]`: the root mean over
/// `dirs` random unit directions of the 1-D W2² between the sorted projections.
pub fn sliced_wasserstein(a: &[f64], b: &[f64], d: usize, dirs: usize, rng: &mut Rng) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "sliced Wasserstein of sets of different sizes"
    );
    let n = a.len() / d;
    let mut total = 0.0;
    for _ in 0..dirs {
        let v: Vec<f64> = rng.normals(d).into_iter().map(f64::from).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        let proj = |s: &[f64]| {
            let mut p: Vec<f64> = s
                .chunks(d)
                .map(|x| x.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() / norm)
                .collect();
            p.sort_by(|x, y| x.total_cmp(y));
            p
        };
        let (pa, pb) = (proj(a), proj(b));
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    (total / dirs as f64).sqrt()
}

/// One line of the benchmark's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub method: String,
    pub particles: usize,
    pub sw: f64,
    pub sw_floor: f64,
    pub mode_weight_error: f64,
    /// log of the mean of Ẑ over the systems (particle methods).
    pub log_z: Option<f64>,
    pub ess_mean: Option<f64>,
    /// Network calls per posterior sample (particle methods: K per step).
    pub nfe: usize,
    /// Sampling seconds for the file's y.
    pub seconds: f64,
    /// Training seconds (amortized methods; the bridge's include its ε-network's).
    pub train_seconds: Option<f64>,
    /// The mean over fresh y ~ p(y) of sw / sw_floor (`run.fresh_y` > 0).
    pub sw_ratio_fresh: Option<f64>,
}

/// Scores `draws` against the exact posterior.
pub fn score(
    problem: &GmmProblem,
    file: &GmmFile,
    method: Method,
    k: usize,
    draws: &Draws,
) -> BenchRow {
    let d = problem.prior.dim();
    let n = draws.samples.len() / d;
    let mut rng = Rng::derive(file.run.seed, 7);
    let (mut sw, mut floor) = (0.0, 0.0);
    for _ in 0..file.run.repeats {
        let e1 = problem.posterior.sample(n, &mut rng);
        let e2 = problem.posterior.sample(n, &mut rng);
        sw += sliced_wasserstein(&draws.samples, &e1, d, 64, &mut rng);
        floor += sliced_wasserstein(&e1, &e2, d, 64, &mut rng);
    }
    let r = file.run.repeats as f64;
    let w = problem.posterior.mode_weights(&draws.samples);
    let tv = 0.5
        * w.iter()
            .zip(&problem.posterior.weights)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>();
    BenchRow {
        method: method.name().into(),
        particles: k,
        sw: sw / r,
        sw_floor: floor / r,
        mode_weight_error: tv,
        log_z: draws
            .log_z
            .as_ref()
            .map(|l| log_sum_exp(l) - (l.len() as f64).ln()),
        ess_mean: draws.ess_mean,
        nfe: k * draws.nfe.unwrap_or(steps(file, method)),
        seconds: draws.seconds,
        train_seconds: None,
        sw_ratio_fresh: None,
    }
}
