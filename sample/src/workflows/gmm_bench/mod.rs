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

pub use config::{FkSection, GmmFile, GmmMethod, GuidanceSection, MAX_DY};
pub use run::{GmmOptions, GmmReport, run};

use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use serde::Serialize;
use tweedie_core::gmm::{GaussianMixture, GmmPosterior, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

use crate::amortized::{CondMlp, ConditionalBridge};
use crate::likelihood::Observation;
use crate::noise::Gaussian;
use crate::operator::Matrix;
use crate::operator::spectral::{DenseSvd, Spectral};
use crate::sampler::{
    self, Daps, DapsSettings, Ddnm, DdnmSettings, Ddpm, Ddrm, DdrmSettings, DiffPir, Dps, DpsStep,
    PiGdm, RedDiff, Sampler, SpectralData,
};
use crate::smc::{Mcgdiff, McgdiffSettings, ResampleWhen, Smc, SmcConfig, Twist, log_sum_exp};

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

    /// The observation matrix's singular value decomposition.
    fn svd(&self) -> DenseSvd {
        DenseSvd::new(&self.obs.a)
    }

    /// `n` PnP-DM draws: one split Gibbs chain each, its likelihood steps exact (A's SVD).
    fn draw_pnpdm(&self, file: &GmmFile, n: usize, seed: u64) -> Result<Draws> {
        let clock = Instant::now();
        let d = self.prior.dim();
        let device = Device::flex();
        let o = self.observation(&device);
        let exact = SpectralData::new(
            Box::new(self.svd()),
            o.y.clone().repeat_dim(0, n),
            [d, 1, 1],
            self.obs.sigma,
        );
        let lik = crate::pnpdm::PnpLikelihood {
            likelihood: Box::new(o),
            exact: Some(exact),
            curvature: 0.0,
        };
        let settings = crate::pnpdm::PnpDmSettings {
            clip: false,
            ..file.pnpdm
        };
        let mut rng = Rng::new(seed);
        let x = Tensor::zeros([n, d, 1, 1], &device);
        let (x0, nfe) = crate::pnpdm::run(
            &self.prior,
            &self.schedule,
            &lik,
            &settings,
            x,
            &mut rng,
            || {},
        );
        Ok(Draws {
            samples: tweedie_core::host_values(x0)
                .into_iter()
                .map(f64::from)
                .collect(),
            log_z: None,
            ess_mean: None,
            seconds: clock.elapsed().as_secs_f64(),
            nfe: Some(nfe),
        })
    }

    /// `n` draws by a trained amortized method: one reverse trajectory each.
    fn draw_amortized(
        &self,
        file: &GmmFile,
        method: GmmMethod,
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
        let samples = if method == GmmMethod::Csb {
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
                .timesteps(method.steps(file), Spacing::Trailing)?;
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

    fn observation(&self, device: &Device) -> Observation {
        let dy = self.obs.dy();
        let y: Vec<f32> = self.y.iter().map(|v| *v as f32).collect();
        Observation {
            op: Box::new(Matrix {
                a: self.obs.a.clone(),
            }),
            // Gaussian's σ_y is on the [0, 1] image scale (×2 inside); the GMM lives on its own.
            noise: Box::new(Gaussian {
                sigma_y: self.obs.sigma / 2.0,
            }),
            y: Tensor::from_data(TensorData::new(y, [1, dy, 1, 1]), device),
        }
    }

    /// `method`'s sampler for `n` draws (`k` particles each for particle methods), its particles
    /// seeded from `seed`.
    fn sampler(&self, file: &GmmFile, method: GmmMethod, k: usize, n: usize, seed: u64) -> Built {
        let d = self.prior.dim();
        let device = Device::flex();
        let grad_device = device.clone().autodiff();
        let ddpm = Ddpm {
            variance: tweedie_core::elbo::ModelVariance::Small,
            clip: false,
        };
        let g = &file.guidance;
        let rows = if method.is_particle() { n * k } else { n };
        Built::Plain(match method {
            GmmMethod::Dps => Box::new(Dps {
                likelihood: Box::new(self.observation(&grad_device)),
                rule: DpsStep::LogLikelihood { zeta: g.dps_zeta },
                ddpm,
            }),
            GmmMethod::Pigdm => {
                let o = self.observation(&grad_device);
                Box::new(PiGdm {
                    op: o.op,
                    y: o.y,
                    sigma: self.obs.sigma,
                    weight: g.pigdm_weight,
                    ddpm,
                })
            }
            GmmMethod::Diffpir => {
                let o = self.observation(&device);
                Box::new(DiffPir {
                    op: o.op,
                    y: o.y,
                    sigma_n: self.obs.sigma,
                    lambda: g.diffpir_lambda,
                    zeta: g.diffpir_zeta,
                    grad_steps: 50,
                    clip: false,
                    likelihood: None,
                })
            }
            GmmMethod::Tds | GmmMethod::Fk => {
                let resampling = file.run.resampling;
                let inflate = file.run.twist == Twist::Pigdm;
                let config = if method == GmmMethod::Tds {
                    SmcConfig {
                        resampling,
                        when: ResampleWhen::Ess(file.run.ess_threshold),
                        inflate,
                        ..SmcConfig::tds()
                    }
                } else {
                    let w = file.fk.window.unwrap_or([0, usize::MAX]);
                    SmcConfig {
                        potential: file.fk.potential,
                        lambda: file.fk.lambda,
                        guided: file.fk.guided,
                        resampling,
                        when: ResampleWhen::Every(file.fk.interval),
                        window: (w[0], w[1]),
                        clip: false,
                        inflate,
                        max_shift: f64::INFINITY,
                    }
                };
                let dev = if config.guided { &grad_device } else { &device };
                return Built::Smc(Box::new(Smc::new(
                    method.name(),
                    Box::new(self.observation(dev)),
                    config,
                    n,
                    k,
                    seed ^ 0x5eed,
                )));
            }
            GmmMethod::Ddrm | GmmMethod::Ddnm => {
                let o = self.observation(&device);
                let svd = self.svd();
                let data = SpectralData::new(
                    Box::new(svd),
                    o.y.repeat_dim(0, rows),
                    [d, 1, 1],
                    self.obs.sigma,
                );
                if method == GmmMethod::Ddrm {
                    Box::new(Ddrm {
                        data,
                        settings: DdrmSettings {
                            clip: false,
                            ..file.ddrm
                        },
                    })
                } else {
                    Box::new(Ddnm {
                        data,
                        settings: DdnmSettings {
                            clip: false,
                            ..file.ddnm
                        },
                    })
                }
            }
            GmmMethod::Reddiff => {
                let o = self.observation(&device);
                let init = crate::operator::pseudo_inverse(o.op.as_ref(), o.y.clone())
                    .expect("a matrix is linear")
                    .repeat_dim(0, rows);
                Box::new(RedDiff::new(Box::new(o), init, file.reddiff))
            }
            GmmMethod::Daps => {
                let svd = self.svd();
                let curvature = svd.largest().powi(2) / (self.obs.sigma * self.obs.sigma);
                Box::new(Daps::new(
                    Box::new(self.observation(&device)),
                    DapsSettings {
                        clip: false,
                        ..file.daps
                    },
                    curvature,
                    self.schedule.alphas_cumprod.clone(),
                ))
            }
            GmmMethod::Mcgdiff => {
                let o = self.observation(&device);
                let svd = self.svd();
                // p(y) = p(ȳ) Πᵢ 1/sᵢ (A has full row rank here).
                let jac = -tweedie_core::host_values(svd.singular_values([d, 1, 1], &device))
                    .iter()
                    .filter(|s| **s > 0.0)
                    .map(|s| f64::from(*s).ln())
                    .sum::<f64>();
                let data = SpectralData::new(
                    Box::new(svd),
                    o.y.repeat_dim(0, rows),
                    [d, 1, 1],
                    self.obs.sigma,
                );
                let settings = McgdiffSettings {
                    particles: vec![k],
                    steps: file.run.steps,
                    resampling: file.mcgdiff.resampling,
                    clip: false,
                };
                return Built::Mcgdiff(Box::new(Mcgdiff::new(
                    data,
                    n,
                    k,
                    &settings,
                    seed ^ 0x5eed,
                    vec![jac; n],
                )));
            }
            GmmMethod::Amortized | GmmMethod::Csb | GmmMethod::Pnpdm => {
                unreachable!("drawn by their own routes")
            }
        })
    }

    /// `n` posterior draws by `method` with `k` particles (particle methods) in `steps` steps.
    pub fn draw(
        &self,
        file: &GmmFile,
        method: GmmMethod,
        k: usize,
        n: usize,
        seed: u64,
        nets: &Nets,
    ) -> Result<Draws> {
        if method.is_amortized() {
            return self.draw_amortized(file, method, n, seed, nets);
        }
        if method == GmmMethod::Pnpdm {
            return self.draw_pnpdm(file, n, seed);
        }
        let clock = Instant::now();
        let d = self.prior.dim();
        let timesteps = self
            .schedule
            .timesteps(method.steps(file), Spacing::Trailing)?;
        let mut rng = Rng::new(seed);
        let rows = if method.is_particle() { n * k } else { n };
        let mut built = self.sampler(file, method, k, n, seed);
        let sampler: &mut dyn Sampler = match &mut built {
            Built::Plain(s) => s.as_mut(),
            Built::Smc(s) => s.as_mut(),
            Built::Mcgdiff(m) => m.as_mut(),
        };
        let device = Device::flex();
        let dev = if sampler.needs_grad() {
            device.clone().autodiff()
        } else {
            device
        };
        let x_t = rng.normal_tensor([rows, d, 1, 1], &dev);
        let (x0, nfe) = sampler::run(
            &self.prior,
            sampler,
            &self.schedule,
            &timesteps,
            x_t,
            &mut rng,
            |_, _| {},
        );
        let all: Vec<f64> = tweedie_core::host_values(x0)
            .into_iter()
            .map(f64::from)
            .collect();
        // Particle methods: one draw per system from its final weights.
        let (picks, log_z, ess_mean) = match &mut built {
            Built::Plain(_) => (None, None, None),
            Built::Smc(smc) => (
                Some(smc.pick()?),
                Some(smc.log_z().to_vec()),
                Some(smc.ess_mean()),
            ),
            Built::Mcgdiff(m) => {
                let ess = (0..n).map(|g| m.ess_mean_of(g)).sum::<f64>() / n as f64;
                (Some(m.pick()), Some(m.log_z()), Some(ess))
            }
        };
        let samples = match picks {
            None => all,
            Some(p) => p
                .iter()
                .flat_map(|&i| all[i * d..(i + 1) * d].to_vec())
                .collect(),
        };
        Ok(Draws {
            samples,
            log_z,
            ess_mean,
            seconds: clock.elapsed().as_secs_f64(),
            nfe: Some(nfe),
        })
    }
}

/// A benchmark method's sampler: a plain update rule, or a particle system whose draws are
/// picked from its final weights.
enum Built {
    Plain(Box<dyn Sampler>),
    Smc(Box<Smc>),
    Mcgdiff(Box<Mcgdiff>),
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
    method: GmmMethod,
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
        nfe: k * draws.nfe.unwrap_or(method.steps(file)),
        seconds: draws.seconds,
        train_seconds: None,
        sw_ratio_fresh: None,
    }
}
