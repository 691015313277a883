//! The benchmark file (`experiments/gmm-*.toml`): a mixture prior, an observation y = A x + σε,
//! the methods and their settings.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tweedie_core::gmm::{GaussianMixture, LinearGaussian};
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};

use super::GmmProblem;
use crate::amortized::{CsbSettings, TrainSettings};
use crate::catalog::{Method, MethodSettings, Offers, OperatorOffers};
use crate::check::{self, Range};
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::pnpdm::PnpDmSettings;
use crate::sampler::{DapsSettings, DdnmSettings, DdrmSettings, RedDiffSettings};
use crate::settings::{
    DiffPirSection, DpsSection, FkSection, PiGdmSection, ReplacementSection, TdsSection,
};
use crate::smc::McgdiffSettings;

/// The benchmark has no replacement method; its settings view holds the default section.
static DEFAULT_REPLACEMENT: ReplacementSection = ReplacementSection { steps: 100 };

/// A benchmark file (`kind = "gmm-benchmark"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmFile {
    pub kind: ExperimentKind,
    pub gmm: GmmSection,
    pub observation: ObservationSection,
    pub run: RunSection,
    /// The methods' sections, the same as a reconstruction file's (`clip` does not apply: the
    /// mixture lives on its own scale).
    #[serde(default)]
    pub dps: DpsSection,
    #[serde(default)]
    pub diffpir: DiffPirSection,
    #[serde(default)]
    pub pigdm: PiGdmSection,
    #[serde(default)]
    pub tds: TdsSection,
    #[serde(default)]
    pub fk: FkSection,
    #[serde(default)]
    pub ddrm: DdrmSettings,
    #[serde(default)]
    pub ddnm: DdnmSettings,
    #[serde(default)]
    pub reddiff: RedDiffSettings,
    #[serde(default)]
    pub daps: DapsSettings,
    #[serde(default)]
    pub pnpdm: PnpDmSettings,
    #[serde(default)]
    pub mcgdiff: McgdiffSettings,
    /// The amortized network's training (methods `amortized` and `csb`).
    #[serde(default)]
    pub amortized: TrainSettings,
    /// The conditional Schrödinger bridge (method `csb`).
    #[serde(default)]
    pub csb: CsbSettings,
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
    /// The methods (each with its own section; K and steps of the particle methods in theirs).
    pub methods: Vec<Method>,
    /// Reverse steps of the amortized network's trajectory (method `amortized`).
    #[serde(default = "default_amortized_steps")]
    pub amortized_steps: usize,
    /// Posterior draws per method (and size of the exact reference sets).
    pub n_samples: usize,
    #[serde(default)]
    pub seed: u64,
    /// Independent exact reference sets the distances are averaged over.
    #[serde(default = "default_repeats")]
    pub repeats: usize,
    /// Also score every method on this many fresh y ~ p(y) (x from the prior, then the
    /// observation), each against its own exact posterior: amortization is the point of the
    /// amortized methods. 0: only the file's y.
    #[serde(default)]
    pub fresh_y: usize,
}

fn default_amortized_steps() -> usize {
    100
}

fn default_repeats() -> usize {
    5
}

/// The benchmark's random stream of `method` with `k` particles: `Rng::derive(seed, stream)`.
/// (The benchmark takes neither `pinv` nor `replacement`, the first two methods.)
pub fn stream(method: Method, k: usize) -> u64 {
    1000 * (method as u64 - 1) + k as u64
}

/// Reverse steps of `method` in a benchmark file (network calls per trajectory for most).
pub fn steps(file: &GmmFile, method: Method) -> usize {
    match method {
        Method::Amortized => file.run.amortized_steps,
        Method::Csb => file.csb.steps,
        m => file.settings().steps(m),
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
    /// Every method's settings section.
    pub fn settings(&self) -> MethodSettings<'_> {
        MethodSettings {
            dps: &self.dps,
            diffpir: &self.diffpir,
            pigdm: &self.pigdm,
            replacement: &DEFAULT_REPLACEMENT,
            tds: &self.tds,
            fk: &self.fk,
            ddrm: &self.ddrm,
            ddnm: &self.ddnm,
            reddiff: &self.reddiff,
            daps: &self.daps,
            pnpdm: &self.pnpdm,
            mcgdiff: &self.mcgdiff,
        }
    }

    /// What the observation offers the methods: a linear operator with a closed-form SVD and
    /// Gaussian noise, on the mixture's own (unbounded) scale.
    pub fn offers(&self) -> Offers {
        Offers {
            key: "run.methods",
            task: "the Gaussian-mixture benchmark",
            operator: Some(OperatorOffers {
                name: "the matrix A".into(),
                linear: true,
                spectral: true,
                mask: false,
                gram_known: true,
            }),
            noise: "gaussian".into(),
            gaussian_sigma: Some(self.observation.sigma),
            default_max_shift: f64::INFINITY,
            images: false,
            trained: true,
        }
    }

    /// Parses TOML text as a benchmark file (one-line errors with their line).
    pub fn parse(text: &str) -> Result<Self> {
        <Self as ExperimentFile>::parse(text)
    }

    /// Validates and builds the prior, observation and exact posterior.
    pub fn build(&self) -> Result<GmmProblem> {
        if self.run.n_samples < 2 || self.run.repeats == 0 || self.run.amortized_steps == 0 {
            bail!("run.repeats and run.amortized_steps must be positive and run.n_samples ≥ 2");
        }
        if let Some(m) = self
            .run
            .methods
            .iter()
            .find(|m| matches!(m, Method::Pinv | Method::Replacement))
        {
            bail!(
                "run.methods: {} is not a posterior sampler; the benchmark scores samples",
                m.name()
            );
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
        self.settings()
            .validate(&self.run.methods, &self.offers())?;
        if self.run.methods.iter().any(|m| m.is_amortized()) {
            self.amortized.validate("amortized")?;
        }
        if self.run.methods.contains(&Method::Csb) {
            self.csb.validate("csb")?;
        }
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
