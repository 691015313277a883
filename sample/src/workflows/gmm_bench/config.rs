//! The benchmark file (`experiments/gmm-*.toml`): a mixture prior, an observation y = A x + σε,
//! the methods and their settings.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::gmm::{GaussianMixture, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};

use super::GmmProblem;
use crate::amortized::{CsbSettings, TrainSettings};
use crate::check::{self, Range};
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::pnpdm::PnpDmSettings;
use crate::sampler::{DapsSettings, DdnmSettings, DdrmSettings, RedDiffSettings};
use crate::smc::{Potential, Resampling, Twist};

/// A benchmark file (`kind = "gmm-benchmark"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmFile {
    pub kind: ExperimentKind,
    pub gmm: GmmSection,
    pub observation: ObservationSection,
    pub run: RunSection,
    #[serde(default)]
    pub fk: FkSection,
    #[serde(default)]
    pub guidance: GuidanceSection,
    /// The amortized network's training (methods `amortized` and `csb`).
    #[serde(default)]
    pub amortized: TrainSettings,
    /// The conditional Schrödinger bridge (method `csb`).
    #[serde(default)]
    pub csb: CsbSettings,
    /// DDRM (method `ddrm`; its own `steps`, the paper's 20 by default).
    #[serde(default)]
    pub ddrm: DdrmSettings,
    /// DDNM⁺ (method `ddnm`; its own `steps`).
    #[serde(default)]
    pub ddnm: DdnmSettings,
    /// RED-diff (method `reddiff`; its own `steps`).
    #[serde(default)]
    pub reddiff: RedDiffSettings,
    /// DAPS (method `daps`; its own `steps`).
    #[serde(default)]
    pub daps: DapsSettings,
    /// PnP-DM (method `pnpdm`; its own iterations).
    #[serde(default)]
    pub pnpdm: PnpDmSettings,
    /// MCGdiff (method `mcgdiff`: its K and steps are `[run] particles` and `steps`).
    #[serde(default)]
    pub mcgdiff: McgdiffSection,
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
    pub methods: Vec<GmmMethod>,
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
    #[serde(default = "default_resampling")]
    pub resampling: Resampling,
    /// Resample when ESS < threshold · K.
    #[serde(default = "default_threshold")]
    pub ess_threshold: f64,
    /// The particle methods' twist.
    #[serde(default = "default_twist")]
    pub twist: Twist,
    /// Also score every method on this many fresh y ~ p(y) (x from the prior, then the
    /// observation), each against its own exact posterior: amortization is the point of the
    /// amortized methods. 0: only the file's y.
    #[serde(default)]
    pub fresh_y: usize,
}

fn default_twist() -> Twist {
    Twist::Pigdm
}

fn default_repeats() -> usize {
    5
}
fn default_resampling() -> Resampling {
    Resampling::Systematic
}
fn default_threshold() -> f64 {
    0.5
}

/// FK steering's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FkSection {
    pub potential: Potential,
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
            potential: Potential::Difference,
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

/// MCGdiff's own setting in a benchmark file (K and steps are the run's, as for TDS and FK).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McgdiffSection {
    pub resampling: Resampling,
}

impl Default for McgdiffSection {
    fn default() -> Self {
        Self {
            resampling: Resampling::Systematic,
        }
    }
}

/// A method of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GmmMethod {
    /// DPS (Chung et al. 2023), one particle.
    Dps,
    /// DiffPIR (Zhu et al. 2023), one particle.
    Diffpir,
    /// ΠGDM (Song et al. 2023), one particle.
    Pigdm,
    /// Twisted diffusion sampler (Wu et al. 2023), K particles.
    Tds,
    /// FK steering (Singhal et al. 2025), K particles.
    Fk,
    /// A conditional ε-network trained on (x, y) pairs, then one reverse trajectory per sample.
    Amortized,
    /// The conditional Schrödinger bridge (Shi et al. 2022) built from that network by IPF.
    Csb,
    /// DDRM (Kawar et al. 2022), one particle, in A's singular basis.
    Ddrm,
    /// DDNM⁺ (Wang et al. 2023), one particle.
    Ddnm,
    /// RED-diff (Mardani et al. 2024), one optimised x₀ per draw.
    Reddiff,
    /// DAPS (Zhang et al. 2025), one particle.
    Daps,
    /// PnP-DM (Wu et al. 2024), one split Gibbs chain per draw.
    Pnpdm,
    /// MCGdiff (Cardoso et al. 2024), K particles in A's singular basis.
    Mcgdiff,
}

impl GmmMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dps => "dps",
            Self::Diffpir => "diffpir",
            Self::Pigdm => "pigdm",
            Self::Tds => "tds",
            Self::Fk => "fk",
            Self::Amortized => "amortized",
            Self::Csb => "csb",
            Self::Ddrm => "ddrm",
            Self::Ddnm => "ddnm",
            Self::Reddiff => "reddiff",
            Self::Daps => "daps",
            Self::Pnpdm => "pnpdm",
            Self::Mcgdiff => "mcgdiff",
        }
    }

    /// Whether it runs K particles (the file's `particles` list) rather than one.
    pub fn is_particle(self) -> bool {
        matches!(self, Self::Tds | Self::Fk | Self::Mcgdiff)
    }

    /// Whether it trains a network on (x, y) pairs first.
    pub fn is_amortized(self) -> bool {
        matches!(self, Self::Amortized | Self::Csb)
    }

    /// Reverse steps of the run: the method's own for DDRM and DDNM, else `[run] steps`.
    pub fn steps(self, file: &GmmFile) -> usize {
        match self {
            Self::Ddrm => file.ddrm.steps,
            Self::Ddnm => file.ddnm.steps,
            Self::Reddiff => file.reddiff.steps,
            Self::Daps => file.daps.steps,
            Self::Pnpdm => file.pnpdm.iterations,
            Self::Csb => file.csb.steps,
            _ => file.run.steps,
        }
    }

    /// The random stream of the run with `k` particles: `Rng::derive(seed, stream)`.
    pub fn stream(self, k: usize) -> u64 {
        1000 * (1 + self as u64) + k as u64
    }
}

/// The most observed coordinates a random A may have (its entries are drawn when the file is read).
pub const MAX_DY: usize = 4096;

impl ExperimentFile for GmmFile {
    const KIND: ExperimentKind = ExperimentKind::GmmBenchmark;
    fn kind(&self) -> ExperimentKind {
        self.kind
    }
}

impl GmmFile {
    /// Parses TOML text as a benchmark file (one-line errors with their line).
    pub fn parse(text: &str) -> Result<Self> {
        <Self as ExperimentFile>::parse(text)
    }

    /// Validates and builds the prior, observation and exact posterior.
    pub fn build(&self) -> Result<GmmProblem> {
        if self.run.methods.is_empty() {
            bail!("run.methods is empty");
        }
        if self.run.steps == 0 || self.run.n_samples < 2 || self.run.repeats == 0 {
            bail!("run.steps and run.repeats must be positive and run.n_samples ≥ 2");
        }
        if self.run.particles.is_empty() || self.run.particles.contains(&0) {
            bail!("run.particles must list positive particle counts");
        }
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
        if self.fk.interval == 0 {
            bail!("fk.interval must be at least 1 (resample every that many steps)");
        }
        if self.fk.window.is_some_and(|[a, b]| a >= b) {
            bail!("fk.window must be [first, last) with first < last");
        }
        let g = &self.guidance;
        check::float("guidance.dps_zeta", g.dps_zeta, Range::Positive)?;
        check::float("guidance.diffpir_lambda", g.diffpir_lambda, Range::Positive)?;
        check::float("guidance.diffpir_zeta", g.diffpir_zeta, Range::Unit)?;
        check::float("guidance.pigdm_weight", g.pigdm_weight, Range::NonNegative)?;
        if self.run.methods.iter().any(|m| m.is_amortized()) {
            self.amortized.validate("amortized")?;
        }
        if self.run.methods.contains(&GmmMethod::Csb) {
            self.csb.validate("csb")?;
        }
        self.ddrm.validate("ddrm")?;
        self.ddnm.validate("ddnm")?;
        self.reddiff.validate("reddiff")?;
        self.daps.validate("daps")?;
        self.pnpdm.validate("pnpdm")?;
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
