//! The exactness benchmark: a Gaussian-mixture prior (an exact denoiser), a linear-Gaussian
//! observation, and every guidance method's samples against the closed-form posterior
//! (`sample --config experiments/gmm-<name>.toml`).
//!
//! Each method draws `n_samples` posterior samples: guidance methods one per trajectory, particle
//! methods one per independent system of K particles (drawn from its final weights). Scores:
//! the sliced-Wasserstein distance to as many exact posterior draws (averaged over `repeats`
//! independent exact sets), the same distance between two exact sets (the Monte Carlo floor), the
//! total-variation error of the posterior mode weights, and log Ẑ against log p(y).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::gmm::{GaussianMixture, GmmPosterior, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing};

use crate::check::{self, Range};
use crate::likelihood::Observation;
use crate::noise::Gaussian;
use crate::operator::Matrix;
use crate::sampler::{Ddpm, DiffPir, Dps, DpsStep, PiGdm, Sampler, run};
use crate::smc::{Potential, ResampleWhen, Resampling, Smc, SmcConfig, log_sum_exp};

/// A benchmark file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmFile {
    pub gmm: GmmSection,
    pub observation: ObservationSection,
    pub run: RunSection,
    #[serde(default)]
    pub fk: FkSection,
    #[serde(default)]
    pub guidance: GuidanceSection,
    /// Directory of the plots; default `out/<file stem>`.
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmSection {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    /// Isotropic standard deviation of each component.
    pub stds: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationSection {
    /// A, `d_y × d`; or `random_dy` rows of N(0, 1) entries drawn from `seed`.
    pub a: Option<Vec<Vec<f64>>>,
    pub random_dy: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    pub sigma: f64,
    /// The observation; or y = A x + σ ε with x drawn from the prior by `x_true_seed`.
    pub y: Option<Vec<f64>>,
    pub x_true_seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Any of dps, diffpir, pigdm, tds, fk.
    pub methods: Vec<String>,
    /// Particle counts K of the particle methods.
    pub particles: Vec<usize>,
    /// Reverse steps (a respaced linear-schedule DDPM chain with T = 1000).
    pub steps: usize,
    /// Posterior draws per method (and size of the exact reference sets).
    pub n_samples: usize,
    #[serde(default)]
    pub seed: u64,
    /// Independent exact reference sets the distances are averaged over.
    #[serde(default = "default_repeats")]
    pub repeats: usize,
    /// multinomial, stratified, systematic or residual.
    #[serde(default = "default_resampling")]
    pub resampling: String,
    /// Resample when ESS < threshold · K.
    #[serde(default = "default_threshold")]
    pub ess_threshold: f64,
    /// The particle methods' twist: "tweedie" (p(y | x̂_0), as in the TDS and FK papers) or
    /// "pigdm" (widened by x̂_0's uncertainty, see `Likelihood::log_prob_at`).
    #[serde(default = "default_twist")]
    pub twist: String,
}

fn default_twist() -> String {
    "pigdm".into()
}

fn default_repeats() -> usize {
    5
}
fn default_resampling() -> String {
    "systematic".into()
}
fn default_threshold() -> f64 {
    0.5
}

/// FK steering's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FkSection {
    /// difference, max or sum.
    pub potential: String,
    pub lambda: f64,
    /// Propose with the guided kernel (else the prior's: a bootstrap filter).
    pub guided: bool,
    /// Resample every `interval` steps, within step indices `window`.
    pub interval: usize,
    pub window: Option<[usize; 2]>,
}

impl Default for FkSection {
    fn default() -> Self {
        Self {
            potential: "difference".into(),
            lambda: 1.0,
            guided: false,
            interval: 1,
            window: None,
        }
    }
}

/// The gradient-guidance methods' settings (on the GMM's own scale).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuidanceSection {
    pub dps_zeta: f64,
    pub diffpir_lambda: f64,
    pub diffpir_zeta: f64,
    pub pigdm_weight: f64,
}

impl Default for GuidanceSection {
    fn default() -> Self {
        Self {
            dps_zeta: 1.0,
            diffpir_lambda: 1.0,
            diffpir_zeta: 1.0,
            pigdm_weight: 1.0,
        }
    }
}

pub const METHODS: [&str; 5] = ["dps", "diffpir", "pigdm", "tds", "fk"];

/// The most observed coordinates a random A may have (its entries are drawn when the file is read).
pub const MAX_DY: usize = 4096;

/// A built problem.
pub struct GmmProblem {
    pub prior: GaussianMixture,
    pub obs: LinearGaussian,
    pub y: Vec<f64>,
    pub posterior: GmmPosterior,
    pub schedule: NoiseSchedule,
}

impl GmmFile {
    pub fn parse(text: &str) -> Result<Self> {
        crate::toml_file::parse(text)
    }

    /// Validates and builds the prior, observation and exact posterior.
    pub fn build(&self) -> Result<GmmProblem> {
        for m in &self.run.methods {
            if !METHODS.contains(&m.as_str()) {
                bail!(
                    "run.methods: unknown method `{m}` (choose from {})",
                    METHODS.join(", ")
                );
            }
        }
        if self.run.steps == 0 || self.run.n_samples < 2 || self.run.repeats == 0 {
            bail!("run.steps and run.repeats must be positive and run.n_samples ≥ 2");
        }
        if self.run.particles.is_empty() || self.run.particles.contains(&0) {
            bail!("run.particles must list positive particle counts");
        }
        self.run
            .resampling
            .parse::<Resampling>()
            .map_err(|e| anyhow::anyhow!("run.resampling: {e}"))?;
        if !matches!(self.run.twist.as_str(), "tweedie" | "pigdm") {
            bail!(
                "run.twist: `{}` (expected tweedie or pigdm)",
                self.run.twist
            );
        }
        self.fk
            .potential
            .parse::<Potential>()
            .map_err(|e| anyhow::anyhow!("fk.potential: {e}"))?;
        check::floats("gmm.weights", &self.gmm.weights, Range::Positive)?;
        check::floats("gmm.stds", &self.gmm.stds, Range::Positive)?;
        for (i, m) in self.gmm.means.iter().enumerate() {
            check::floats(&format!("gmm.means[{i}]"), m, Range::Finite)?;
        }
        for (i, r) in self.observation.a.iter().flatten().enumerate() {
            check::floats(&format!("observation.a[{i}]"), r, Range::Finite)?;
        }
        check::floats(
            "observation.y",
            self.observation.y.as_deref().unwrap_or(&[]),
            Range::Finite,
        )?;
        check::float("observation.sigma", self.observation.sigma, Range::Positive)?;
        check::float(
            "run.ess_threshold",
            self.run.ess_threshold,
            Range::UnitExclusiveZero,
        )?;
        check::float("fk.lambda", self.fk.lambda, Range::Positive)?;
        let g = &self.guidance;
        check::float("guidance.dps_zeta", g.dps_zeta, Range::Positive)?;
        check::float("guidance.diffpir_lambda", g.diffpir_lambda, Range::Positive)?;
        check::float("guidance.diffpir_zeta", g.diffpir_zeta, Range::Unit)?;
        check::float("guidance.pigdm_weight", g.pigdm_weight, Range::NonNegative)?;
        if let Some(dy) = self.observation.random_dy
            && dy > MAX_DY
        {
            bail!("observation.random_dy must be at most {MAX_DY}, got {dy}");
        }
        let schedule = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000)?;
        let prior = GaussianMixture::new(
            self.gmm.weights.clone(),
            self.gmm.means.clone(),
            self.gmm.stds.clone(),
            schedule.alphas_cumprod.clone(),
        )
        .context("gmm")?;
        let d = prior.dim();
        let a = match (&self.observation.a, self.observation.random_dy) {
            (Some(a), None) => a.clone(),
            (None, Some(dy)) if dy > 0 => {
                let mut r = Rng::new(self.observation.seed);
                (0..dy)
                    .map(|_| r.normals(d).into_iter().map(f64::from).collect())
                    .collect()
            }
            _ => bail!("observation: give exactly one of `a` and `random_dy` (> 0)"),
        };
        let obs = LinearGaussian {
            a,
            sigma: self.observation.sigma,
        };
        let y = match (&self.observation.y, self.observation.x_true_seed) {
            (Some(y), None) => y.clone(),
            (None, Some(seed)) => {
                let mut r = Rng::new(seed);
                let (x, _) = prior.sample(1, &mut r);
                let e = r.normals(obs.dy());
                obs.apply(&x)
                    .iter()
                    .zip(e)
                    .map(|(m, e)| m + obs.sigma * e as f64)
                    .collect()
            }
            _ => bail!("observation: give exactly one of `y` and `x_true_seed`"),
        };
        let posterior = prior.posterior(&obs, &y).context("observation")?;
        Ok(GmmProblem {
            prior,
            obs,
            y,
            posterior,
            schedule,
        })
    }
}

/// One method's draws.
pub struct Draws {
    /// `[n, d]` row-major.
    pub samples: Vec<f64>,
    pub log_z: Option<Vec<f64>>,
    pub ess_mean: Option<f64>,
    pub seconds: f64,
}

impl GmmProblem {
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

    /// `n` posterior draws by `method` with `k` particles (particle methods) in `steps` steps.
    pub fn draw(
        &self,
        file: &GmmFile,
        method: &str,
        k: usize,
        n: usize,
        seed: u64,
    ) -> Result<Draws> {
        let clock = Instant::now();
        let d = self.prior.dim();
        let device = Device::flex();
        let grad_device = device.clone().autodiff();
        let timesteps = self.schedule.timesteps(file.run.steps, Spacing::Trailing)?;
        let mut rng = Rng::new(seed);
        let ddpm = Ddpm {
            variance: tweedie_core::elbo::ModelVariance::Small,
            clip: false,
        };
        let g = &file.guidance;
        let particles = matches!(method, "tds" | "fk");
        let rows = if particles { n * k } else { n };
        let mut smc: Option<Smc> = None;
        let mut plain: Box<dyn Sampler> = match method {
            "dps" => Box::new(Dps {
                likelihood: Box::new(self.observation(&grad_device)),
                rule: DpsStep::LogLikelihood { zeta: g.dps_zeta },
                ddpm,
            }),
            "pigdm" => {
                let o = self.observation(&grad_device);
                Box::new(PiGdm {
                    op: o.op,
                    y: o.y,
                    sigma: self.obs.sigma,
                    weight: g.pigdm_weight,
                    ddpm,
                })
            }
            "diffpir" => {
                let o = self.observation(&device);
                Box::new(DiffPir {
                    op: o.op,
                    y: o.y,
                    sigma_n: self.obs.sigma,
                    lambda: g.diffpir_lambda,
                    zeta: g.diffpir_zeta,
                    grad_steps: 50,
                    clip: false,
                })
            }
            "tds" | "fk" => {
                let resampling = file.run.resampling.parse().map_err(anyhow::Error::msg)?;
                let config = if method == "tds" {
                    SmcConfig {
                        resampling,
                        when: ResampleWhen::Ess(file.run.ess_threshold),
                        inflate: file.run.twist == "pigdm",
                        ..SmcConfig::tds()
                    }
                } else {
                    let w = file.fk.window.unwrap_or([0, usize::MAX]);
                    SmcConfig {
                        potential: file.fk.potential.parse().map_err(anyhow::Error::msg)?,
                        lambda: file.fk.lambda,
                        guided: file.fk.guided,
                        resampling,
                        when: ResampleWhen::Every(file.fk.interval),
                        window: (w[0], w[1]),
                        clip: false,
                        inflate: file.run.twist == "pigdm",
                    }
                };
                let dev = if config.guided { &grad_device } else { &device };
                smc = Some(Smc::new(
                    if method == "tds" { "tds" } else { "fk" },
                    Box::new(self.observation(dev)),
                    config,
                    n,
                    k,
                    seed ^ 0x5eed,
                ));
                Box::new(ddpm)
            }
            other => bail!("unknown method `{other}`"),
        };
        let sampler: &mut dyn Sampler = match smc.as_mut() {
            Some(s) => s,
            None => plain.as_mut(),
        };
        let dev = if sampler.needs_grad() {
            &grad_device
        } else {
            &device
        };
        let x_t = rng.normal_tensor([rows, d, 1, 1], dev);
        let (x0, _) = run(
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
        let (samples, log_z, ess_mean) = if let Some(smc) = smc.as_mut() {
            let picks = smc.pick();
            let s = picks
                .iter()
                .flat_map(|&i| all[i * d..(i + 1) * d].to_vec())
                .collect();
            (s, Some(smc.log_z().to_vec()), Some(smc.ess_mean()))
        } else {
            (all, None, None)
        };
        Ok(Draws {
            samples,
            log_z,
            ess_mean,
            seconds: clock.elapsed().as_secs_f64(),
        })
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
    pub seconds: f64,
}

/// Scores `draws` against the exact posterior.
pub fn score(
    problem: &GmmProblem,
    file: &GmmFile,
    method: &str,
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
        method: method.into(),
        particles: k,
        sw: sw / r,
        sw_floor: floor / r,
        mode_weight_error: tv,
        log_z: draws
            .log_z
            .as_ref()
            .map(|l| log_sum_exp(l) - (l.len() as f64).ln()),
        ess_mean: draws.ess_mean,
        seconds: draws.seconds,
    }
}
