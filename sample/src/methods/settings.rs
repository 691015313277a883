//! The settings sections of the methods whose samplers keep none of their own (`[dps]`,
//! `[diffpir]`, `[pigdm]`, `[replacement]`, `[tds]`, `[fk]`): the same structs, defaults and checks
//! in every experiment kind that runs them ([`crate::catalog::MethodSettings`]).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tweedie_core::elbo::ModelVariance;

use crate::check::{self, Range};
use crate::smc::{Potential, Resampling, SmcConfig, Twist};

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

impl DpsSection {
    pub fn validate(&self) -> Result<()> {
        positive_steps("dps", self.steps)?;
        check::float("dps.zeta", self.zeta, Range::Positive)?;
        Ok(())
    }
}

impl DiffPirSection {
    pub fn validate(&self) -> Result<()> {
        positive_steps("diffpir", self.steps)?;
        check::float("diffpir.lambda", self.lambda, Range::Positive)?;
        if self.iters == 0 {
            bail!("diffpir.iters must be at least 1 (iterations of the data step)");
        }
        check::float("diffpir.zeta", self.zeta, Range::Unit)?;
        Ok(())
    }
}

impl PiGdmSection {
    pub fn validate(&self) -> Result<()> {
        positive_steps("pigdm", self.steps)?;
        check::float("pigdm.weight", self.weight, Range::NonNegative)?;
        Ok(())
    }
}

impl ReplacementSection {
    pub fn validate(&self) -> Result<()> {
        positive_steps("replacement", self.steps)
    }
}

/// What `[tds]` and `[fk]` share: K, steps, resampling, twist and the shift bound.
pub struct ParticleCommon<'a> {
    pub key: &'static str,
    pub particles: &'a [usize],
    pub steps: usize,
    pub ess_threshold: f64,
    pub every: usize,
    pub twist: Option<Twist>,
    pub max_shift: Option<f64>,
}

impl TdsSection {
    pub fn common(&self) -> ParticleCommon<'_> {
        ParticleCommon {
            key: "tds",
            particles: &self.particles,
            steps: self.steps,
            ess_threshold: self.ess_threshold,
            every: self.every,
            twist: self.twist,
            max_shift: self.max_shift,
        }
    }
}

impl FkSection {
    pub fn common(&self) -> ParticleCommon<'_> {
        ParticleCommon {
            key: "fk",
            particles: &self.particles,
            steps: self.steps,
            ess_threshold: self.ess_threshold,
            every: self.every,
            twist: self.twist,
            max_shift: self.max_shift,
        }
    }

    fn validate_own(&self) -> Result<()> {
        check::float("fk.lambda", self.lambda, Range::Positive)?;
        if self.window.is_some_and(|[a, b]| a >= b) {
            bail!("fk.window must be [first, last) with first < last");
        }
        Ok(())
    }
}

impl ParticleCommon<'_> {
    /// The checks that need no task (the twist's fit is [`crate::catalog::check`]'s).
    pub fn validate(&self) -> Result<()> {
        let key = self.key;
        if let Some(m) = self.max_shift {
            check::float(&format!("{key}.max_shift"), m, Range::Positive)?;
        }
        let k = self.particles;
        if k.is_empty() || k.contains(&0) {
            bail!("{key}.particles must be at least 1 (a number or a non-empty list), got {k:?}");
        }
        if self.steps == 0 || self.every == 0 {
            bail!("{key}.steps and {key}.every must be positive");
        }
        check::float(
            &format!("{key}.ess_threshold"),
            self.ess_threshold,
            Range::UnitExclusiveZero,
        )?;
        Ok(())
    }
}

impl TdsSection {
    pub fn validate(&self) -> Result<()> {
        self.common().validate()
    }
}

impl FkSection {
    pub fn validate(&self) -> Result<()> {
        self.validate_own()?;
        self.common().validate()
    }
}

fn positive_steps(key: &str, steps: usize) -> Result<()> {
    if steps == 0 {
        bail!("{key}.steps must be positive");
    }
    Ok(())
}

/// The resampling rule of `[tds]` and `[fk]`.
pub(crate) fn when(rule: ResampleRule, th: f64, every: usize) -> crate::smc::ResampleWhen {
    match rule {
        ResampleRule::Ess => crate::smc::ResampleWhen::Ess(th),
        ResampleRule::Every => crate::smc::ResampleWhen::Every(every),
    }
}
