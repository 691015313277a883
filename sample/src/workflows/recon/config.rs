//! The experiment file of a reconstruction run (TOML), e.g. `experiments/mnist-sr4.toml`: plain
//! serde structs that reject unknown keys, turned into operators, noise models and method settings
//! by [`ReconFile::operator`], [`ReconFile::noise_model`] and [`ReconFile::validate`].

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::elbo::ModelVariance;
use tweedie_datasets::{DatasetName, Split};

use crate::check::{self, Range};
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::noise::NoiseModel;
use crate::operator::{ForwardOperator, Mask};
use crate::pnpdm::PnpDmSettings;
use crate::sampler::{DapsSettings, DdnmSettings, DdrmSettings, RedDiffSettings};
use crate::smc::McgdiffSettings;
use crate::smc::{Potential, ResampleWhen, Resampling, SmcConfig, Twist};
pub use crate::spec::{NoiseSpec, OperatorSpec};

/// A reconstruction experiment (`kind = "reconstruction"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconFile {
    pub kind: ExperimentKind,
    /// A run directory (its newest step) or a step directory; relative to the working directory.
    pub checkpoint: PathBuf,
    /// Seed of the observation noise and of every sampler draw.
    #[serde(default)]
    pub seed: u64,
    /// Output directory; default `out/<file stem>`.
    pub out: Option<PathBuf>,
    pub data: DataSection,
    pub operator: OperatorSpec,
    pub noise: NoiseSpec,
    pub run: RunSection,
    #[serde(default)]
    pub dps: DpsSection,
    #[serde(default)]
    pub diffpir: DiffPirSection,
    #[serde(default)]
    pub pigdm: PiGdmSection,
    #[serde(default)]
    pub replacement: ReplacementSection,
    #[serde(default)]
    pub tds: TdsSection,
    #[serde(default)]
    pub fk: FkSection,
    #[serde(default)]
    pub amortized: AmortizedSection,
    #[serde(default)]
    pub csb: CsbSection,
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
}

/// The amortized method: a conditional network trained for this file's observation model
/// (`train --config experiments/<task>-amortized.toml`), one ancestral trajectory per sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmortizedSection {
    /// Its checkpoint (a run or step directory).
    pub checkpoint: Option<PathBuf>,
    pub steps: usize,
}

impl Default for AmortizedSection {
    fn default() -> Self {
        Self {
            checkpoint: None,
            steps: 100,
        }
    }
}

/// The conditional Schrödinger bridge (Shi et al. 2022) on images: IPF with mean matching from
/// the amortized model (iteration 0), its iterations kept in `dir` and resumed from there, then
/// one trajectory of `steps` network calls per sample (`crate::amortized::csb`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsbSection {
    /// The conditional model of iteration 0; default: `[amortized] checkpoint`.
    pub checkpoint: Option<PathBuf>,
    /// Where the bridge's iterations are written and read back (required).
    pub dir: Option<PathBuf>,
    /// IPF iterations after the amortized model (each fits the forward, then the backward net).
    pub iterations: usize,
    /// Steps N of the chain: network calls per posterior sample.
    pub steps: usize,
    /// The reference's horizon S: ᾱ = e^{−2S} where the chain starts from N(0, I).
    pub horizon: f64,
    /// Where the steps lie on [0, S]: `quadratic` (short steps near the data) or `uniform`.
    pub spacing: crate::amortized::csb::BridgeSpacing,
    /// Optimiser steps per half-iteration, their batch, learning rate, and the steps between
    /// fresh simulated paths.
    pub train_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub refresh: usize,
    /// Seed of the training (pairs, paths, the forward net's initialisation).
    pub seed: u64,
}

impl Default for CsbSection {
    fn default() -> Self {
        Self {
            checkpoint: None,
            dir: None,
            iterations: 1,
            steps: 50,
            horizon: 3.0,
            spacing: crate::amortized::csb::BridgeSpacing::Quadratic,
            train_steps: 400,
            batch_size: 16,
            lr: 2e-4,
            refresh: 10,
            seed: 0,
        }
    }
}

impl CsbSection {
    /// The IPF settings.
    pub fn settings(&self) -> crate::amortized::CsbSettings {
        crate::amortized::CsbSettings {
            iterations: self.iterations,
            steps: self.steps,
            horizon: self.horizon,
            spacing: self.spacing,
            train_steps: self.train_steps,
            batch_size: self.batch_size,
            lr: self.lr,
            refresh: self.refresh,
            seed: self.seed,
        }
    }
}

/// Which images are reconstructed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dataset: DatasetName,
    /// Directory of the dataset's files (else `$TWEEDIE_DATA/<name>`, else `data/<name>`).
    pub dir: Option<PathBuf>,
    #[serde(default = "default_split")]
    pub split: Split,
    /// Explicit image indices; else `count` images from `start`.
    pub indices: Option<Vec<usize>>,
    #[serde(default)]
    pub start: usize,
    #[serde(default = "default_count")]
    pub count: usize,
}

fn default_split() -> Split {
    Split::Test
}
fn default_count() -> usize {
    20
}

/// What runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// The methods, in the order of the panel rows.
    pub methods: Vec<ReconMethod>,
    /// Posterior samples per image.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Images × samples per network call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Posterior samples shown in each panel row.
    #[serde(default = "default_show")]
    pub show_samples: usize,
    /// Use the raw trained weights instead of their EMA.
    #[serde(default)]
    pub raw_weights: bool,
}

fn default_samples() -> usize {
    4
}
fn default_batch() -> usize {
    80
}
fn default_show() -> usize {
    3
}

/// DPS (Chung et al. 2023) on a respaced DDPM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpsSection {
    pub steps: usize,
    pub rule: DpsRule,
    pub zeta: f64,
    /// DDPM variance: small (β̃) or large (β).
    pub variance: ModelVariance,
    /// Clamp x̂_0 to [−1, 1] in the prior's DDPM mean (the guidance term uses the raw x̂_0).
    pub clip: bool,
}

impl Default for DpsSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            rule: DpsRule::ResidualNorm,
            zeta: 1.0,
            variance: ModelVariance::Small,
            clip: true,
        }
    }
}

/// DiffPIR (Zhu et al. 2023).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffPirSection {
    pub steps: usize,
    pub lambda: f64,
    pub zeta: f64,
    /// Iterations of the data step when it has no closed form.
    pub iters: usize,
    /// Clamp x̂_0 to [−1, 1] before the data step.
    pub clip: bool,
}

impl Default for DiffPirSection {
    fn default() -> Self {
        Self {
            steps: 100,
            lambda: 7.0,
            zeta: 0.3,
            iters: 20,
            clip: true,
        }
    }
}

/// ΠGDM (Song et al. 2023) on a respaced DDPM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiGdmSection {
    pub steps: usize,
    pub weight: f64,
    pub variance: ModelVariance,
    /// Clamp x̂_0 to [−1, 1] in the prior's DDPM mean (the guidance term uses the raw x̂_0).
    pub clip: bool,
}

impl Default for PiGdmSection {
    fn default() -> Self {
        Self {
            steps: 100,
            weight: 1.0,
            variance: ModelVariance::Small,
            clip: true,
        }
    }
}

/// Replacement (RePaint without resampling) on a respaced DDPM chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplacementSection {
    pub steps: usize,
}

impl Default for ReplacementSection {
    fn default() -> Self {
        Self { steps: 100 }
    }
}

/// When a system's particles are resampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResampleRule {
    /// When the effective sample size falls below `ess_threshold` · K.
    Ess,
    /// Every `every` steps.
    Every,
}

/// How particles move from one step to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proposal {
    /// The prior's DDPM kernel: a bootstrap filter, no gradients through the network.
    Bootstrap,
    /// The DDPM kernel with its mean moved along ∇_{x_t} λ r_t (TDS's twisted proposal; one VJP
    /// through the network per particle and step).
    Twisted,
}

/// TDS (Wu et al. 2023, Algorithm 1): K particles per posterior sample, the twisted proposal,
/// weights by the twist's ratio (the difference potential with λ = 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdsSection {
    /// Particles K per posterior sample: a number, or a list to run each (rows `tds K=…`).
    /// Default 4.
    #[serde(deserialize_with = "crate::toml_file::one_or_many")]
    pub particles: Vec<usize>,
    /// Reverse steps. Default 100.
    pub steps: usize,
    /// Resampling scheme. Default systematic.
    pub resampling: Resampling,
    /// When to resample. Default ess.
    pub rule: ResampleRule,
    /// `rule = "ess"`: resample when ESS < ess_threshold · K, in (0, 1]. Default 0.5.
    pub ess_threshold: f64,
    /// `rule = "every"`: resample every this many steps. Default 1.
    pub every: usize,
    /// The approximation of p(y | x_t) the weights use. Default: pigdm where it applies
    /// (Gaussian noise and a known scale of AAᵀ; exact for a Gaussian prior), else tweedie.
    pub twist: Option<Twist>,
    /// Clamp x̂_0 to [−1, 1] in the prior's mean (the twist uses the raw x̂_0). Default true.
    pub clip: bool,
    /// Bound on the twisted proposal's shift of each pixel, in units of the step's σ_t (> 0;
    /// the weights stay exact whatever it is). Default: 1 under Poisson noise (its twist's
    /// gradient is unbounded near the intensity floor), none otherwise.
    pub max_shift: Option<f64>,
}

impl Default for TdsSection {
    fn default() -> Self {
        Self {
            particles: vec![4],
            steps: 100,
            resampling: Resampling::Systematic,
            rule: ResampleRule::Ess,
            ess_threshold: 0.5,
            every: 1,
            twist: None,
            clip: true,
            max_shift: None,
        }
    }
}

/// FK steering (Singhal et al. 2025): K particles per posterior sample weighted by a potential of
/// the rewards r_t = log p(y | x̂_0(x_t)) along each lineage, with the terminal correction that
/// makes the target the posterior.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FkSection {
    /// Particles K per posterior sample: a number, or a list to run each. Default 4.
    #[serde(deserialize_with = "crate::toml_file::one_or_many")]
    pub particles: Vec<usize>,
    /// Reverse steps. Default 100.
    pub steps: usize,
    /// Default systematic.
    pub resampling: Resampling,
    /// Default every.
    pub rule: ResampleRule,
    /// Default 0.5.
    pub ess_threshold: f64,
    /// Default 1 (every step).
    pub every: usize,
    /// Resample only at step indices in [window[0], window[1]) (counted from the first step).
    pub window: Option<[usize; 2]>,
    /// Default difference.
    pub potential: Potential,
    /// λ of the potential exp(λ r). Default 1 (with the difference potential: the posterior at
    /// every step).
    pub lambda: f64,
    /// Default bootstrap.
    pub proposal: Proposal,
    /// As `[tds] twist` (default: pigdm where it applies, else tweedie).
    pub twist: Option<Twist>,
    /// Default true.
    pub clip: bool,
    /// As `[tds] max_shift` (with `proposal = "twisted"`).
    pub max_shift: Option<f64>,
}

impl Default for FkSection {
    fn default() -> Self {
        Self {
            particles: vec![4],
            steps: 100,
            resampling: Resampling::Systematic,
            rule: ResampleRule::Every,
            ess_threshold: 0.5,
            every: 1,
            window: None,
            potential: Potential::Difference,
            lambda: 1.0,
            proposal: Proposal::Bootstrap,
            twist: None,
            clip: true,
            max_shift: None,
        }
    }
}

/// One run of a file: a method, and for TDS and FK one of its particle counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub method: ReconMethod,
    /// K (TDS and FK; None: the first of the file's list).
    pub particles: Option<usize>,
}

impl From<ReconMethod> for MethodSpec {
    fn from(method: ReconMethod) -> Self {
        Self {
            method,
            particles: None,
        }
    }
}

impl MethodSpec {
    /// The run's key in `metrics.json` and its output directory: `dps`, `tds-k4`.
    pub fn key(&self) -> String {
        match self.particles {
            Some(k) => format!("{}-k{k}", self.method.name()),
            None => self.method.name().to_string(),
        }
    }

    /// The run's random stream: the method's, and for particle counts one per K.
    pub fn stream(&self) -> u64 {
        match self.particles {
            Some(k) => 1000 * self.method.stream() + k as u64,
            None => self.method.stream(),
        }
    }
}

/// What a particle method runs with: K, steps, and the sampler's settings.
#[derive(Debug, Clone, Copy)]
pub struct ParticleSettings {
    pub particles: usize,
    pub steps: usize,
    pub config: SmcConfig,
}

/// DPS's step size on ∇_{x_t} of the likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpsRule {
    /// The paper's ζ_t = ζ′/‖y − A(x̂_0)‖ on ∇‖y − A(x̂_0)‖ (Chung et al. 2023, Algorithm 1); for
    /// Poisson counts ‖·‖_Λ with Λ = diag(1/(2y)) (§3.2, Algorithm 2).
    ResidualNorm,
    /// The plain likelihood score ζ ∇ log p(y | x̂_0), folded into ε as in classifier guidance.
    LogLikelihood,
}

/// A reconstruction method: one row of the panels, one entry of `metrics.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconMethod {
    /// A⁺y: the pseudo-inverse, in closed form or by conjugate gradients with a 1e-3 ridge (blur).
    Pinv,
    /// RePaint without resampling: the prior's chain with the observed pixels put back (masks only).
    Replacement,
    /// DPS (Chung et al. 2023): a step along ∇_{x_t} of the likelihood at x̂_0, through the network.
    Dps,
    /// DiffPIR (Zhu et al. 2023): a data-consistency step on x̂_0, then re-noising.
    Diffpir,
    /// ΠGDM (Song et al. 2023): the likelihood widened by x̂_0's uncertainty (Gaussian noise, linear A).
    Pigdm,
    /// TDS (Wu et al. 2023): K weighted, resampled particles per posterior sample (`[tds]`).
    Tds,
    /// FK steering (Singhal et al. 2025): K particles weighted by a reward potential (`[fk]`).
    Fk,
    /// A conditional network trained on (x, y) pairs of this observation model
    /// (`[amortized]`): one ancestral trajectory per sample, no guidance.
    Amortized,
    /// The conditional Schrödinger bridge refined from that network by IPF (`[csb]`): one
    /// bridge trajectory per sample.
    Csb,
    /// DDRM (Kawar et al. 2022): sampling in A's spectral basis (`[ddrm]`; Gaussian noise, an
    /// operator with a closed-form SVD).
    Ddrm,
    /// DDNM / DDNM⁺ (Wang et al. 2023): x̂₀'s range-space part replaced by the observation's
    /// (`[ddnm]`; Gaussian noise, an operator with a closed-form SVD).
    Ddnm,
    /// RED-diff (Mardani et al. 2024): x₀ optimised on the likelihood plus the stop-gradient
    /// denoising residual (`[reddiff]`; any operator and noise model).
    Reddiff,
    /// DAPS (Zhang et al. 2025): per annealing level an ODE to x̂₀, Langevin on x₀ with the
    /// likelihood, re-noising (`[daps]`; any operator and noise model).
    Daps,
    /// PnP-DM (Wu et al. 2024): split Gibbs sampling between a likelihood step and a
    /// diffusion-posterior step at an annealed coupling ρ (`[pnpdm]`; any operator and noise
    /// model, exact likelihood steps for Gaussian noise and a closed-form SVD).
    Pnpdm,
    /// MCGdiff (Cardoso et al. 2024): K particles per posterior sample in A's spectral basis,
    /// exact as K → ∞ (`[mcgdiff]`; Gaussian noise, an operator with a closed-form SVD).
    Mcgdiff,
}

impl ReconMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pinv => "pinv",
            Self::Replacement => "replacement",
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

    /// The method's own random stream (`Rng::derive(seed, stream)`): adding a method to a file
    /// does not change another's draws. New methods are appended, keeping the old streams.
    pub fn stream(self) -> u64 {
        100 + self as u64
    }

    /// Whether it differentiates through the network (runs on the autodiff device); particle
    /// methods decide by their proposal ([`ParticleSettings`]).
    pub fn is_guided(self) -> bool {
        matches!(self, Self::Dps | Self::Pigdm)
    }

    /// Whether it runs K particles per posterior sample.
    pub fn is_particle(self) -> bool {
        matches!(self, Self::Tds | Self::Fk | Self::Mcgdiff)
    }
}

impl ExperimentFile for ReconFile {
    const KIND: ExperimentKind = ExperimentKind::Reconstruction;
    fn kind(&self) -> ExperimentKind {
        self.kind
    }
}

impl ReconFile {
    /// Parses TOML text as a reconstruction file; the error is one line: `line N: <what is
    /// wrong>`.
    pub fn parse(text: &str) -> Result<Self> {
        <Self as ExperimentFile>::parse(text)
    }

    /// The operator for `h × w` images.
    pub fn operator(&self, h: usize, w: usize) -> Result<Box<dyn ForwardOperator>> {
        self.operator.build(h, w)
    }

    /// The twist a particle method uses: the file's, else pigdm where it applies (Gaussian noise
    /// and an operator whose AAᵀ scale is known), else tweedie.
    pub fn twist(&self, chosen: Option<Twist>) -> Twist {
        chosen.unwrap_or_else(|| {
            let fits = self.gaussian_sigma().is_some()
                && self
                    .operator(64, 64)
                    .is_ok_and(|op| op.mean_gram_diagonal().is_some());
            if fits { Twist::Pigdm } else { Twist::Tweedie }
        })
    }

    /// Checks `[tds]` or `[fk]` (`key`) for a file that runs it.
    fn validate_particles(
        &self,
        method: ReconMethod,
        key: &str,
        op: Option<&dyn ForwardOperator>,
    ) -> Result<()> {
        let (k, steps, th, every, twist, max_shift) = match method {
            ReconMethod::Tds => {
                let t = &self.tds;
                (
                    &t.particles,
                    t.steps,
                    t.ess_threshold,
                    t.every,
                    t.twist,
                    t.max_shift,
                )
            }
            _ => {
                let f = &self.fk;
                check::float("fk.lambda", f.lambda, Range::Positive)?;
                if f.window.is_some_and(|[a, b]| a >= b) {
                    bail!("fk.window must be [first, last) with first < last");
                }
                (
                    &f.particles,
                    f.steps,
                    f.ess_threshold,
                    f.every,
                    f.twist,
                    f.max_shift,
                )
            }
        };
        if let Some(m) = max_shift {
            check::float(&format!("{key}.max_shift"), m, Range::Positive)?;
        }
        if k.is_empty() || k.contains(&0) {
            bail!("{key}.particles must be at least 1 (a number or a non-empty list), got {k:?}");
        }
        if steps == 0 || every == 0 {
            bail!("{key}.steps and {key}.every must be positive");
        }
        check::float(
            &format!("{key}.ess_threshold"),
            th,
            Range::UnitExclusiveZero,
        )?;
        if twist == Some(Twist::Pigdm) {
            if self.gaussian_sigma().is_none() {
                bail!(
                    "{key}.twist = \"pigdm\" needs gaussian noise: its twist N(y; A x̂₀, σ² + \
                     (1 − ᾱ_t)·c) widens a Gaussian likelihood (use twist = \"tweedie\")"
                );
            }
            if op.is_some_and(|o| o.mean_gram_diagonal().is_none()) {
                bail!(
                    "{key}.twist = \"pigdm\" needs a linear operator with a known AAᵀ scale \
                     (use twist = \"tweedie\")"
                );
            }
        }
        Ok(())
    }

    /// The dataset indices of the images: the file's list, else `count` from `start`.
    pub fn image_indices(&self) -> Vec<usize> {
        match &self.data.indices {
            Some(ix) => ix.clone(),
            None => (self.data.start..self.data.start + self.data.count).collect(),
        }
    }

    /// Keeps only the first `n` images (`sample --n-images`).
    pub fn limit_images(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("--n-images must be positive");
        }
        self.data.count = n;
        if let Some(ix) = &mut self.data.indices {
            ix.truncate(n);
        }
        Ok(())
    }

    /// How many network batches `images` images take (each batch holds whole images with all
    /// their samples).
    pub fn chunks(&self, images: usize) -> usize {
        let per_batch = (self.run.batch_size / self.run.samples).max(1);
        images.div_ceil(per_batch)
    }

    /// The number of reverse steps `method` takes (0 for `pinv`).
    pub fn steps(&self, method: ReconMethod) -> usize {
        match method {
            ReconMethod::Dps => self.dps.steps,
            ReconMethod::Diffpir => self.diffpir.steps,
            ReconMethod::Pigdm => self.pigdm.steps,
            ReconMethod::Replacement => self.replacement.steps,
            ReconMethod::Tds => self.tds.steps,
            ReconMethod::Fk => self.fk.steps,
            ReconMethod::Amortized => self.amortized.steps,
            ReconMethod::Csb => self.csb.steps,
            ReconMethod::Ddrm => self.ddrm.steps,
            ReconMethod::Ddnm => self.ddnm.steps,
            ReconMethod::Reddiff => self.reddiff.steps,
            ReconMethod::Daps => self.daps.steps,
            ReconMethod::Pnpdm => self.pnpdm.iterations,
            ReconMethod::Mcgdiff => self.mcgdiff.steps,
            ReconMethod::Pinv => 0,
        }
    }

    /// The runs of the file, in its order: one per method, and one per K of TDS and FK.
    pub fn specs(&self) -> Vec<MethodSpec> {
        let mut out = Vec::new();
        for &method in &self.run.methods {
            let ks: &[usize] = match method {
                ReconMethod::Tds => &self.tds.particles,
                ReconMethod::Fk => &self.fk.particles,
                ReconMethod::Mcgdiff => &self.mcgdiff.particles,
                _ => {
                    out.push(method.into());
                    continue;
                }
            };
            out.extend(ks.iter().map(|&k| MethodSpec {
                method,
                particles: Some(k),
            }));
        }
        out
    }

    /// The particle settings of a `tds` or `fk` run (None for the other methods).
    pub fn particle_settings(&self, spec: impl Into<MethodSpec>) -> Option<ParticleSettings> {
        let spec = spec.into();
        let method = spec.method;
        let k = |list: &[usize]| spec.particles.or(list.first().copied()).unwrap_or(1);
        let when = |rule: ResampleRule, th: f64, every: usize| match rule {
            ResampleRule::Ess => ResampleWhen::Ess(th),
            ResampleRule::Every => ResampleWhen::Every(every),
        };
        match method {
            ReconMethod::Tds => {
                let t = &self.tds;
                Some(ParticleSettings {
                    particles: k(&t.particles),
                    steps: t.steps,
                    config: SmcConfig {
                        resampling: t.resampling,
                        when: when(t.rule, t.ess_threshold, t.every),
                        clip: t.clip,
                        inflate: self.twist(t.twist) == Twist::Pigdm,
                        max_shift: self.max_shift(t.max_shift),
                        ..SmcConfig::tds()
                    },
                })
            }
            ReconMethod::Fk => {
                let f = &self.fk;
                let w = f.window.unwrap_or([0, usize::MAX]);
                Some(ParticleSettings {
                    particles: k(&f.particles),
                    steps: f.steps,
                    config: SmcConfig {
                        potential: f.potential,
                        lambda: f.lambda,
                        guided: f.proposal == Proposal::Twisted,
                        resampling: f.resampling,
                        when: when(f.rule, f.ess_threshold, f.every),
                        window: (w[0], w[1]),
                        clip: f.clip,
                        inflate: self.twist(f.twist) == Twist::Pigdm,
                        max_shift: self.max_shift(f.max_shift),
                    },
                })
            }
            _ => None,
        }
    }

    /// Rows per network call of `method`'s batches: whole images with all their samples for the
    /// one-particle methods, whole systems of K particles for TDS and FK.
    pub fn method_chunks(&self, spec: MethodSpec, images: usize) -> usize {
        match self.particle_settings(spec) {
            Some(p) => {
                let per_batch = (self.run.batch_size / p.particles.max(1)).max(1);
                (images * self.run.samples).div_ceil(per_batch)
            }
            None => self.chunks(images),
        }
    }

    /// The inpainting mask, for the replacement baseline.
    pub fn mask(&self, h: usize, w: usize) -> Option<Mask> {
        match self.operator {
            OperatorSpec::InpaintBox {
                top,
                left,
                height,
                width,
            } => Some(Mask::hide_box(h, w, top, left, height, width)),
            OperatorSpec::InpaintRandom { keep, mask_seed } => {
                Some(Mask::random(h, w, keep, mask_seed))
            }
            OperatorSpec::InpaintHalf {} => Some(Mask::half(h, w)),
            OperatorSpec::InpaintQuarter {} => Some(Mask::quarter(h, w)),
            _ => None,
        }
    }

    pub fn noise_model(&self) -> Result<Box<dyn NoiseModel>> {
        self.noise.build()
    }

    /// σ of Gaussian observation noise on the model's [−1, 1] scale (DiffPIR, ΠGDM).
    /// The twisted proposal's shift bound: the file's, else [`crate::smc::POISSON_MAX_SHIFT`]
    /// under Poisson noise and none otherwise.
    pub fn max_shift(&self, set: Option<f64>) -> f64 {
        set.unwrap_or(match self.noise {
            NoiseSpec::Poisson { .. } => crate::smc::POISSON_MAX_SHIFT,
            _ => f64::INFINITY,
        })
    }

    pub fn gaussian_sigma(&self) -> Option<f64> {
        match self.noise {
            NoiseSpec::Gaussian { sigma_y } => Some(2.0 * sigma_y),
            _ => None,
        }
    }

    /// Checks what the types cannot: known methods that fit the operator and noise, positive
    /// counts.
    pub fn validate(&self) -> Result<()> {
        if self.run.methods.is_empty() {
            bail!("run.methods is empty");
        }
        for m in &self.run.methods {
            if self.run.methods.iter().filter(|x| *x == m).count() > 1 {
                bail!("run.methods: `{}` is listed twice", m.name());
            }
        }
        if self.run.samples == 0 || self.run.batch_size == 0 {
            bail!("run.samples and run.batch_size must be positive");
        }
        let uses = |m: ReconMethod| self.run.methods.contains(&m);
        let probe = self.operator(64, 64).ok();
        let linear = probe.as_ref().is_none_or(|op| op.is_linear());
        let probe = probe.as_deref();
        if uses(ReconMethod::Pinv) && !linear {
            bail!("run.methods: pinv needs a linear operator");
        }
        if uses(ReconMethod::Amortized) {
            if self.amortized.checkpoint.is_none() {
                bail!(
                    "run.methods: amortized needs `[amortized] checkpoint`, a model trained for \
                     this observation (train --config experiments/<task>-amortized.toml)"
                );
            }
            if self.amortized.steps == 0 {
                bail!("amortized.steps must be positive");
            }
        }
        if uses(ReconMethod::Csb) {
            if self.csb.checkpoint.is_none() && self.amortized.checkpoint.is_none() {
                bail!(
                    "run.methods: csb needs a conditional model to start from: `[csb] checkpoint` \
                     or `[amortized] checkpoint` (train --config experiments/<task>-amortized.toml)"
                );
            }
            if self.csb.dir.is_none() {
                bail!("run.methods: csb needs `[csb] dir`, where the bridge's iterations are kept");
            }
            self.csb.settings().validate("csb")?;
        }
        if self.gaussian_sigma() == Some(0.0)
            && let Some(m) = self.run.methods.iter().find(|m| {
                !matches!(
                    m,
                    ReconMethod::Pinv
                        | ReconMethod::Replacement
                        | ReconMethod::Ddrm
                        | ReconMethod::Ddnm
                        | ReconMethod::Amortized
                        | ReconMethod::Csb
                )
            })
        {
            bail!(
                "run.methods: {} needs noise.sigma_y > 0 (its likelihood is a density); a \
                 noiseless observation takes pinv, replacement, ddrm, ddnm, amortized and csb",
                m.name()
            );
        }
        for m in [ReconMethod::Ddrm, ReconMethod::Ddnm, ReconMethod::Mcgdiff] {
            if !uses(m) {
                continue;
            }
            if self.gaussian_sigma().is_none() {
                bail!(
                    "run.methods: {} needs gaussian noise, not {} (its steps split y's noise \
                     level per singular value)",
                    m.name(),
                    self.noise_model()?.name()
                );
            }
            if let Some(op) = probe
                && op.spectral().is_none()
            {
                bail!(
                    "run.methods: {} needs an operator with a closed-form SVD (inpainting, \
                     block-average super-resolution, colorization, denoising); {} has none",
                    m.name(),
                    op.name()
                );
            }
        }
        self.ddrm.validate("ddrm")?;
        self.ddnm.validate("ddnm")?;
        self.reddiff.validate("reddiff")?;
        self.daps.validate("daps")?;
        self.pnpdm.validate("pnpdm")?;
        self.mcgdiff.validate("mcgdiff")?;
        if uses(ReconMethod::Replacement) && self.mask(1, 1).is_none() {
            bail!("run.methods: replacement needs an inpainting operator");
        }
        if uses(ReconMethod::Pigdm) {
            if self.gaussian_sigma().is_none() {
                bail!(
                    "run.methods: pigdm needs gaussian noise (its p(y | x_t) ≈ N(A x̂₀, σ² + \
                     r_t² AAᵀ) widens a Gaussian likelihood; diffpir, dps, tds and fk take any \
                     noise model)"
                );
            }
            if !linear {
                bail!("run.methods: pigdm needs a linear operator");
            }
        }
        let steps = [
            ("tds", self.tds.steps),
            ("fk", self.fk.steps),
            ("dps", self.dps.steps),
            ("diffpir", self.diffpir.steps),
            ("pigdm", self.pigdm.steps),
            ("replacement", self.replacement.steps),
        ];
        if let Some((m, _)) = steps.iter().find(|(_, s)| *s == 0) {
            bail!("{m}.steps must be positive");
        }
        for (m, key) in [(ReconMethod::Tds, "tds"), (ReconMethod::Fk, "fk")] {
            if uses(m) {
                self.validate_particles(m, key, probe)?;
            }
        }
        check::float("dps.zeta", self.dps.zeta, Range::Positive)?;
        check::float("diffpir.lambda", self.diffpir.lambda, Range::Positive)?;
        if self.diffpir.iters == 0 {
            bail!("diffpir.iters must be at least 1 (iterations of the data step)");
        }
        check::float("diffpir.zeta", self.diffpir.zeta, Range::Unit)?;
        check::float("pigdm.weight", self.pigdm.weight, Range::NonNegative)?;
        self.noise_model()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR4: &str = r#"
kind = "reconstruction"
checkpoint = "checkpoints/mnist-tiny"
[data]
dataset = "mnist"
[operator]
kind = "sr"
factor = 4
[noise]
kind = "gaussian"
sigma_y = 0.05
[run]
methods = ["pinv", "dps", "diffpir", "pigdm"]
[dps]
steps = 200
zeta = 0.5
"#;

    #[test]
    fn particle_counts_expand_into_runs_with_their_own_streams() {
        let f = ReconFile::parse(&format!(
            "{}[tds]\nparticles = [1, 4, 16]\n[fk]\nparticles = 4\n",
            SR4.replace("\"pigdm\"]", "\"tds\", \"fk\"]")
        ))
        .unwrap();
        f.validate().unwrap();
        let keys: Vec<String> = f.specs().iter().map(|s| s.key()).collect();
        assert_eq!(
            keys,
            [
                "pinv", "dps", "diffpir", "tds-k1", "tds-k4", "tds-k16", "fk-k4"
            ]
        );
        let streams: Vec<u64> = f.specs().iter().map(|s| s.stream()).collect();
        let mut unique = streams.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), streams.len());
        assert_eq!(f.particle_settings(f.specs()[4]).unwrap().particles, 4);
        // Gaussian noise and an operator with a known AAᵀ: the widened twist by default.
        assert_eq!(f.twist(None), crate::smc::Twist::Pigdm);
    }

    #[test]
    fn a_preset_parses_with_defaults_and_validates() {
        let f = ReconFile::parse(SR4).unwrap();
        f.validate().unwrap();
        assert_eq!((f.data.count, f.run.samples, f.dps.steps), (20, 4, 200));
        assert_eq!(f.diffpir.steps, 100);
        assert_eq!(f.operator(28, 28).unwrap().name(), "sr×4");
        assert_eq!(f.gaussian_sigma(), Some(0.1));
    }

    #[test]
    fn bad_files_get_one_line_errors() {
        let cases = [
            (
                SR4.replace("factor = 4", "factor = 4\nfactr = 2"),
                "unknown field `factr`",
            ),
            (
                SR4.replace("kind = \"sr\"", "kind = \"zoom\""),
                "unknown variant `zoom`",
            ),
            (
                SR4.replace("\"pigdm\"]", "\"pigdm\", \"magic\"]"),
                "unknown variant `magic`, expected one of `pinv`, `replacement`, `dps`, `diffpir`, `pigdm`",
            ),
            (
                SR4.replace("\"gaussian\"\nsigma_y = 0.05", "\"poisson\"\nrate = 10.0"),
                "pigdm needs gaussian noise (its p(y | x_t)",
            ),
            (
                SR4.replace("zeta = 0.5", "zeta = 0.5\nrule = \"big\""),
                "unknown variant `big`, expected `residual-norm` or `log-likelihood`",
            ),
            (
                SR4.replace("methods = [\"pinv\", ", "methods = [\"replacement\", "),
                "replacement needs an inpainting",
            ),
            (SR4.replace("zeta = 0.5", "zeta = nan"), "dps.zeta = NaN"),
            (
                SR4.replace("sigma_y = 0.05", "sigma_y = inf"),
                "noise.sigma_y = inf",
            ),
            (
                SR4.replace("sigma_y = 0.05", "sigma_y = -0.05"),
                "noise.sigma_y must be ≥ 0, got -0.05",
            ),
            (
                SR4.replace("zeta = 0.5", "zeta = 0.0"),
                "dps.zeta must be > 0",
            ),
            (
                format!("{SR4}[diffpir]\nzeta = 1.5\n"),
                "diffpir.zeta must be in [0, 1], got 1.5",
            ),
            (
                format!(
                    "{}[tds]\nparticles = 0\n",
                    SR4.replace("\"pigdm\"]", "\"tds\"]")
                ),
                "tds.particles must be at least 1",
            ),
            (
                format!(
                    "{}[tds]\nparticles = [4, 0]\n",
                    SR4.replace("\"pigdm\"]", "\"tds\"]")
                ),
                "tds.particles must be at least 1",
            ),
            (
                format!(
                    "{}[fk]\ness_threshold = 1.5\n",
                    SR4.replace("\"pigdm\"]", "\"fk\"]")
                ),
                "fk.ess_threshold must be in (0, 1], got 1.5",
            ),
            (
                format!(
                    "{}[tds]\ntwist = \"pigdm\"\n",
                    SR4.replace("\"gaussian\"\nsigma_y = 0.05", "\"poisson\"\nrate = 10.0")
                        .replace("\"diffpir\", \"pigdm\"]", "\"diffpir\", \"tds\"]")
                ),
                "tds.twist = \"pigdm\" needs gaussian noise",
            ),
            (
                format!(
                    "{}[fk]\nproposal = \"magic\"\n",
                    SR4.replace("\"pigdm\"]", "\"fk\"]")
                ),
                "unknown variant `magic`, expected `bootstrap` or `twisted`",
            ),
            (
                format!("{SR4}[diffpir]\niters = 0\n"),
                "diffpir.iters must be at least 1",
            ),
            (
                SR4.replace("\"pigdm\"]", "\"ddrm\"]").replace(
                    "kind = \"sr\"\nfactor = 4",
                    "kind = \"blur\"\nsigma = 1.0\nsize = 5",
                ),
                "ddrm needs an operator with a closed-form SVD",
            ),
            (
                SR4.replace("\"pigdm\"]", "\"ddnm\"]").replace(
                    "kind = \"gaussian\"\nsigma_y = 0.05",
                    "kind = \"poisson\"\nrate = 50.0",
                ),
                "ddnm needs gaussian noise, not poisson",
            ),
            (
                SR4.replace("sigma_y = 0.05", "sigma_y = 0.0"),
                "dps needs noise.sigma_y > 0",
            ),
            (
                format!("{SR4}[daps]\nlr_min_ratio = 0.0\n"),
                "daps.lr_min_ratio must be",
            ),
            (format!("{SR4}[ddrm]\neta = 1.5\n"), "ddrm.eta must be"),
            (
                format!(
                    "{}[tds]\nmax_shift = -1.0\n",
                    SR4.replace("\"pigdm\"]", "\"tds\"]")
                ),
                "tds.max_shift must be > 0",
            ),
            (
                SR4.replace("[operator]", "[operator]\n__extra = 1")
                    .replace("kind = \"sr\"\nfactor = 4", "kind = \"denoise\""),
                "unknown field `__extra`",
            ),
        ];
        for (text, want) in cases {
            let err = ReconFile::parse(&text)
                .and_then(|f| f.validate())
                .expect_err(want);
            let msg = format!("{err:#}");
            assert!(msg.contains(want) && !msg.contains('\n'), "{msg}");
        }
        let f = ReconFile::parse(&SR4.replace("factor = 4", "factor = 5")).unwrap();
        assert!(format!("{:#}", f.operator(28, 28).err().unwrap()).contains("divide 28×28"));
    }
}
