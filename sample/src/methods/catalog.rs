//! One declaration per posterior method. A method is named once ([`Method`]), says once what it
//! needs of a task ([`Method::needs`], checked against what the task offers by [`check`], the one
//! place its one-line errors come from), reads one settings section with one set of checks
//! ([`MethodSettings`]), and is built in one place ([`build`]) and drawn by one loop ([`draw`]).
//! The reconstruction runner, the Gaussian-mixture benchmark and the class-conditional runner
//! only describe their task ([`Task`]: its likelihood, operator, observation rows and devices)
//! and lay out its rows; none of them builds a method. Adding a method means a variant, its
//! needs, its section and its arm of [`build`].
//!
//! The amortized routes (`amortized`, `csb`) train networks on (x, y) pairs first; their needs are
//! declared here, and the runners that hold such networks build them.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::denoiser::Denoiser;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

use crate::likelihood::{Likelihood, Observation};
use crate::noise::NoiseModel;
use crate::operator::spectral::Spectral;
use crate::operator::{ForwardOperator, Mask, pseudo_inverse};
use crate::pnpdm::{PnpDmSettings, PnpLikelihood};
use crate::sampler::{
    self, Daps, DapsSettings, Ddnm, DdnmSettings, Ddpm, Ddrm, DdrmSettings, DiffPir, Dps, DpsStep,
    PiGdm, RedDiff, RedDiffSettings, Replacement, Sampler, SpectralData,
};
use crate::settings::{
    DiffPirSection, DpsRule, DpsSection, FkSection, ParticleSettings, PiGdmSection, Proposal,
    ReplacementSection, TdsSection, when,
};
use crate::smc::{Mcgdiff, McgdiffSettings, Smc, SmcConfig, Twist};

/// A posterior method: one row of a reconstruction's panels, one line of the benchmark's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
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
    /// denoising residual (`[reddiff]`; any likelihood).
    Reddiff,
    /// DAPS (Zhang et al. 2025): per annealing level an ODE to x̂₀, Langevin on x₀ with the
    /// likelihood, re-noising (`[daps]`; any likelihood).
    Daps,
    /// PnP-DM (Wu et al. 2024): split Gibbs sampling between a likelihood step and a
    /// diffusion-posterior step at an annealed coupling ρ (`[pnpdm]`; any likelihood, exact
    /// likelihood steps for Gaussian noise and a closed-form SVD).
    Pnpdm,
    /// MCGdiff (Cardoso et al. 2024): K particles per posterior sample in A's spectral basis,
    /// exact as K → ∞ (`[mcgdiff]`; Gaussian noise, an operator with a closed-form SVD).
    Mcgdiff,
}

/// What a method needs of its task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// An observation y = A(x) + noise (a class label has none).
    pub operator: bool,
    pub linear: bool,
    /// Gaussian noise.
    pub gaussian: bool,
    /// A closed-form singular value decomposition of A.
    pub spectral: bool,
    /// An inpainting mask.
    pub mask: bool,
    /// σ_y > 0 (its likelihood is a density).
    pub density: bool,
    /// Networks trained on (x, y) pairs, which only some runners hold.
    pub trained: bool,
}

/// What a task offers its methods.
#[derive(Debug, Clone)]
pub struct Offers {
    /// The key that lists the methods, for errors: `run.methods`, `class.methods`.
    pub key: &'static str,
    /// The task as errors name it when it lacks an operator (`class labels`).
    pub task: &'static str,
    /// The operator (None: a likelihood with no y = A(x) + noise).
    pub operator: Option<OperatorOffers>,
    /// The noise model's name and, for Gaussian noise, σ on the model's scale.
    pub noise: String,
    pub gaussian_sigma: Option<f64>,
    /// The twisted proposal's default shift bound (Poisson noise's is finite).
    pub default_max_shift: f64,
    /// Values live in [−1, 1] (images): the sections' `clip` settings apply; else they are off.
    pub images: bool,
    /// The runner holds trained amortized networks.
    pub trained: bool,
}

/// What an operator offers.
#[derive(Debug, Clone)]
pub struct OperatorOffers {
    pub name: String,
    pub linear: bool,
    pub spectral: bool,
    pub mask: bool,
    /// The scale of AAᵀ is known (ΠGDM's widened twist).
    pub gram_known: bool,
}

impl OperatorOffers {
    /// What `op` offers (`mask`: whether the task has an inpainting mask).
    pub fn of(op: &dyn ForwardOperator, mask: bool) -> Self {
        Self {
            name: op.name(),
            linear: op.is_linear(),
            spectral: op.spectral().is_some(),
            mask,
            gram_known: op.mean_gram_diagonal().is_some(),
        }
    }
}

impl Method {
    pub const ALL: [Method; 15] = [
        Self::Pinv,
        Self::Replacement,
        Self::Dps,
        Self::Diffpir,
        Self::Pigdm,
        Self::Tds,
        Self::Fk,
        Self::Amortized,
        Self::Csb,
        Self::Ddrm,
        Self::Ddnm,
        Self::Reddiff,
        Self::Daps,
        Self::Pnpdm,
        Self::Mcgdiff,
    ];

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

    /// Whether it runs K particles per posterior sample.
    pub fn is_particle(self) -> bool {
        matches!(self, Self::Tds | Self::Fk | Self::Mcgdiff)
    }

    /// Whether it trains a network on (x, y) pairs first.
    pub fn is_amortized(self) -> bool {
        matches!(self, Self::Amortized | Self::Csb)
    }

    pub fn needs(self) -> Needs {
        let any = Needs {
            density: true,
            ..Needs::default()
        };
        let observed = Needs {
            operator: true,
            ..Needs::default()
        };
        let spectral = Needs {
            operator: true,
            linear: true,
            gaussian: true,
            spectral: true,
            ..Needs::default()
        };
        match self {
            Self::Pinv => Needs {
                linear: true,
                ..observed
            },
            Self::Replacement => Needs {
                mask: true,
                ..observed
            },
            Self::Dps | Self::Tds | Self::Fk | Self::Reddiff | Self::Daps | Self::Pnpdm => any,
            Self::Diffpir => Needs {
                operator: true,
                ..any
            },
            Self::Pigdm => Needs {
                operator: true,
                linear: true,
                gaussian: true,
                ..any
            },
            Self::Ddrm | Self::Ddnm => spectral,
            Self::Mcgdiff => Needs {
                density: true,
                ..spectral
            },
            Self::Amortized | Self::Csb => Needs {
                trained: true,
                ..observed
            },
        }
    }
}

/// Whether `method` can run on a task that offers `offers`; the error is one line naming both.
pub fn check(method: Method, offers: &Offers) -> Result<()> {
    let (key, m) = (offers.key, method.name());
    let needs = method.needs();
    if needs.trained && !offers.trained {
        bail!(
            "{key}: {m} is not available for {}: it needs a network trained on (x, y) pairs",
            offers.task
        );
    }
    let Some(op) = &offers.operator else {
        if needs.operator {
            bail!(
                "{key}: {m} needs an observation y = A(x) + noise; {} have none (take dps, tds, \
                 fk, reddiff, daps or pnpdm)",
                offers.task
            );
        }
        return Ok(());
    };
    if needs.linear && !op.linear {
        bail!("{key}: {m} needs a linear operator; {} is not", op.name);
    }
    if needs.gaussian && offers.gaussian_sigma.is_none() {
        if method == Method::Pigdm {
            bail!(
                "{key}: pigdm needs gaussian noise (its p(y | x_t) ≈ N(A x̂₀, σ² + r_t² AAᵀ) widens \
                 a Gaussian likelihood; diffpir, dps, tds and fk take any noise model), not {}",
                offers.noise
            );
        }
        bail!(
            "{key}: {m} needs gaussian noise, not {} (its steps split y's noise level per singular \
             value)",
            offers.noise
        );
    }
    if needs.spectral && !op.spectral {
        bail!(
            "{key}: {m} needs an operator with a closed-form SVD (inpainting, block-average \
             super-resolution, colorization, denoising); {} has none",
            op.name
        );
    }
    if needs.mask && !op.mask {
        bail!(
            "{key}: {m} needs an inpainting operator; {} is not one",
            op.name
        );
    }
    if needs.density && offers.gaussian_sigma == Some(0.0) {
        bail!(
            "{key}: {m} needs noise.sigma_y > 0 (its likelihood is a density); a noiseless \
             observation takes pinv, replacement, ddrm, ddnm, amortized and csb"
        );
    }
    Ok(())
}

/// Every method's settings section, as a file holds them (the same structs in every kind).
#[derive(Clone, Copy)]
pub struct MethodSettings<'a> {
    pub dps: &'a DpsSection,
    pub diffpir: &'a DiffPirSection,
    pub pigdm: &'a PiGdmSection,
    pub replacement: &'a ReplacementSection,
    pub tds: &'a TdsSection,
    pub fk: &'a FkSection,
    pub ddrm: &'a DdrmSettings,
    pub ddnm: &'a DdnmSettings,
    pub reddiff: &'a RedDiffSettings,
    pub daps: &'a DapsSettings,
    pub pnpdm: &'a PnpDmSettings,
    pub mcgdiff: &'a McgdiffSettings,
}

impl MethodSettings<'_> {
    /// Checks every section (used or not, so a typo'd value never waits for the day it is used)
    /// and whether each of `methods` fits the task: listed once, its needs met, its twist fitting.
    pub fn validate(&self, methods: &[Method], offers: &Offers) -> Result<()> {
        if methods.is_empty() {
            bail!("{} is empty", offers.key);
        }
        for m in methods {
            if methods.iter().filter(|x| *x == m).count() > 1 {
                bail!("{}: `{}` is listed twice", offers.key, m.name());
            }
        }
        for &m in methods {
            check(m, offers)?;
        }
        self.dps.validate()?;
        self.diffpir.validate()?;
        self.pigdm.validate()?;
        self.replacement.validate()?;
        self.ddrm.validate("ddrm")?;
        self.ddnm.validate("ddnm")?;
        self.reddiff.validate("reddiff")?;
        self.daps.validate("daps")?;
        self.pnpdm.validate("pnpdm")?;
        self.mcgdiff.validate("mcgdiff")?;
        if methods.contains(&Method::Dps)
            && self.dps.rule == DpsRule::ResidualNorm
            && offers.operator.is_none()
        {
            bail!(
                "dps.rule = \"residual-norm\" needs an observation y = A(x) + noise; {} take \
                 rule = \"log-likelihood\"",
                offers.task
            );
        }
        for (m, common) in [
            (Method::Tds, self.tds.common()),
            (Method::Fk, self.fk.common()),
        ] {
            if !methods.contains(&m) {
                continue;
            }
            if m == Method::Fk {
                self.fk.validate()?;
            } else {
                self.tds.validate()?;
            }
            let key = common.key;
            if common.twist == Some(Twist::Pigdm) {
                if offers.gaussian_sigma.is_none() {
                    bail!(
                        "{key}.twist = \"pigdm\" needs gaussian noise: its twist N(y; A x̂₀, σ² + \
                         (1 − ᾱ_t)·c) widens a Gaussian likelihood (use twist = \"tweedie\")"
                    );
                }
                if offers.operator.as_ref().is_some_and(|o| !o.gram_known) {
                    bail!(
                        "{key}.twist = \"pigdm\" needs a linear operator with a known AAᵀ scale \
                         (use twist = \"tweedie\")"
                    );
                }
            }
        }
        Ok(())
    }

    /// Reverse steps of `method` (PnP-DM: its iterations; 0 for `pinv`; the amortized routes'
    /// are their runners').
    pub fn steps(&self, method: Method) -> usize {
        match method {
            Method::Dps => self.dps.steps,
            Method::Diffpir => self.diffpir.steps,
            Method::Pigdm => self.pigdm.steps,
            Method::Replacement => self.replacement.steps,
            Method::Tds => self.tds.steps,
            Method::Fk => self.fk.steps,
            Method::Ddrm => self.ddrm.steps,
            Method::Ddnm => self.ddnm.steps,
            Method::Reddiff => self.reddiff.steps,
            Method::Daps => self.daps.steps,
            Method::Pnpdm => self.pnpdm.iterations,
            Method::Mcgdiff => self.mcgdiff.steps,
            Method::Pinv | Method::Amortized | Method::Csb => 0,
        }
    }

    /// The particle counts a particle method runs (one run each); None for the others.
    pub fn particles(&self, method: Method) -> Option<&[usize]> {
        match method {
            Method::Tds => Some(&self.tds.particles),
            Method::Fk => Some(&self.fk.particles),
            Method::Mcgdiff => Some(&self.mcgdiff.particles),
            _ => None,
        }
    }

    /// The twist a particle method uses: the section's, else pigdm where it applies (Gaussian
    /// noise and an operator whose AAᵀ scale is known), else tweedie.
    pub fn twist(chosen: Option<Twist>, offers: &Offers) -> Twist {
        chosen.unwrap_or_else(|| {
            let fits = offers.gaussian_sigma.is_some()
                && offers.operator.as_ref().is_some_and(|o| o.gram_known);
            if fits { Twist::Pigdm } else { Twist::Tweedie }
        })
    }

    /// The settings of a `tds` or `fk` run with `k` particles (None for the other methods).
    pub fn particle_settings(
        &self,
        method: Method,
        k: usize,
        offers: &Offers,
    ) -> Option<ParticleSettings> {
        let shift = |s: Option<f64>| s.unwrap_or(offers.default_max_shift);
        let inflate = |t: Option<Twist>| Self::twist(t, offers) == Twist::Pigdm;
        match method {
            Method::Tds => {
                let t = self.tds;
                Some(ParticleSettings {
                    particles: k,
                    steps: t.steps,
                    config: SmcConfig {
                        resampling: t.resampling,
                        when: when(t.rule, t.ess_threshold, t.every),
                        clip: t.clip && offers.images,
                        inflate: inflate(t.twist),
                        max_shift: shift(t.max_shift),
                        ..SmcConfig::tds()
                    },
                })
            }
            Method::Fk => {
                let f = self.fk;
                let w = f.window.unwrap_or([0, usize::MAX]);
                Some(ParticleSettings {
                    particles: k,
                    steps: f.steps,
                    config: SmcConfig {
                        potential: f.potential,
                        lambda: f.lambda,
                        guided: f.proposal == Proposal::Twisted,
                        resampling: f.resampling,
                        when: when(f.rule, f.ess_threshold, f.every),
                        window: (w[0], w[1]),
                        clip: f.clip && offers.images,
                        inflate: inflate(f.twist),
                        max_shift: shift(f.max_shift),
                    },
                })
            }
            _ => None,
        }
    }
}

/// A task's rows as its methods see them: one row per trajectory (one-particle methods) or per
/// particle (K consecutive rows per system), each with its observation.
pub trait Task {
    fn offers(&self) -> &Offers;
    /// `[C, H, W]` of one row.
    fn shape(&self) -> [usize; 3];
    /// The plain device, or its autodiff twin for methods that differentiate through the network.
    fn device(&self, grad: bool) -> Device;
    /// The operator (tasks with an observation).
    fn operator(&self) -> Result<Box<dyn ForwardOperator>>;
    fn noise(&self) -> Result<Box<dyn NoiseModel>>;
    /// Every row's observation y on [`Task::device`] (tasks with an observation).
    fn y(&self, grad: bool) -> Result<Tensor<4>>;
    /// The inpainting mask (replacement).
    fn mask(&self) -> Option<Mask>;
    /// A bound on −∇² log p(y | x) for the step sizes of DAPS and PnP-DM (0: none).
    fn curvature(&self) -> f64;
    /// p(y | x) of every row; by default the observation y = A(x) + noise.
    fn likelihood(&self, grad: bool) -> Result<Box<dyn Likelihood>> {
        Ok(Box::new(self.observation(grad)?))
    }
    fn observation(&self, grad: bool) -> Result<Observation> {
        Ok(Observation {
            op: self.operator()?,
            noise: self.noise()?,
            y: self.y(grad)?,
        })
    }
}

/// A built method: a plain update rule, a particle system (its draws picked from its final
/// weights), or PnP-DM's split Gibbs chain.
pub enum Built {
    Plain(Box<dyn Sampler>),
    Smc(Box<Smc>),
    Mcgdiff(Box<Mcgdiff>),
    Pnpdm(Box<(PnpLikelihood, PnpDmSettings)>),
}

impl Built {
    /// Whether it differentiates through the network (runs on the autodiff device).
    pub fn needs_grad(&self) -> bool {
        match self {
            Self::Plain(s) => s.needs_grad(),
            Self::Smc(s) => s.needs_grad(),
            Self::Mcgdiff(m) => m.needs_grad(),
            Self::Pnpdm(_) => false,
        }
    }
}

/// Builds `method` on `task`'s rows: `groups` systems of `k` particles for particle methods
/// (`seed` seeds their resampling), one trajectory per row for the others. `pinv` and the
/// amortized routes are not samplers: their runners draw them.
pub fn build(
    method: Method,
    k: usize,
    settings: &MethodSettings,
    task: &dyn Task,
    schedule: &NoiseSchedule,
    groups: usize,
    seed: u64,
) -> Result<Built> {
    let offers = task.offers();
    check(method, offers)?;
    let clip = |c: bool| c && offers.images;
    let sigma = offers.gaussian_sigma;
    let shape = task.shape();
    let spectral = || -> Result<(Box<dyn Spectral>, f64)> {
        match (task.operator()?.spectral(), sigma) {
            (Some(s), Some(sigma)) => Ok((s, sigma)),
            _ => bail!(
                "{} needs gaussian noise and an operator with a closed-form SVD",
                method.name()
            ),
        }
    };
    Ok(Built::Plain(match method {
        Method::Dps => {
            let s = settings.dps;
            Box::new(Dps {
                likelihood: task.likelihood(true)?,
                rule: match s.rule {
                    DpsRule::LogLikelihood => DpsStep::LogLikelihood { zeta: s.zeta },
                    DpsRule::ResidualNorm => DpsStep::ResidualNorm { zeta: s.zeta },
                },
                ddpm: Ddpm {
                    variance: s.variance,
                    clip: clip(s.clip),
                },
            })
        }
        Method::Diffpir => {
            let s = settings.diffpir;
            // Gaussian noise: the paper's least-squares data step; any other noise model:
            // the proximal step on its −log p(y | z).
            let likelihood = match sigma {
                Some(_) => None,
                None => Some(task.likelihood(false)?),
            };
            Box::new(DiffPir {
                op: task.operator()?,
                y: task.y(false)?,
                sigma_n: sigma.unwrap_or(1.0),
                lambda: s.lambda,
                zeta: s.zeta,
                grad_steps: s.iters,
                clip: clip(s.clip),
                likelihood,
            })
        }
        Method::Pigdm => {
            let s = settings.pigdm;
            Box::new(PiGdm {
                op: task.operator()?,
                y: task.y(true)?,
                sigma: sigma.unwrap_or(0.1),
                weight: s.weight,
                ddpm: Ddpm {
                    variance: s.variance,
                    clip: clip(s.clip),
                },
            })
        }
        Method::Replacement => {
            let Some(mask) = task.mask() else {
                bail!("replacement needs an inpainting operator");
            };
            Box::new(Replacement {
                inner: Ddpm {
                    variance: tweedie_core::elbo::ModelVariance::Small,
                    clip: offers.images,
                },
                mask,
                y: task.y(false)?,
            })
        }
        Method::Ddrm => {
            let (sp, sigma) = spectral()?;
            Box::new(Ddrm {
                data: SpectralData::new(sp, task.y(false)?, shape, sigma),
                settings: DdrmSettings {
                    clip: clip(settings.ddrm.clip),
                    ..*settings.ddrm
                },
            })
        }
        Method::Ddnm => {
            let (sp, sigma) = spectral()?;
            Box::new(Ddnm {
                data: SpectralData::new(sp, task.y(false)?, shape, sigma),
                settings: DdnmSettings {
                    clip: clip(settings.ddnm.clip),
                    ..*settings.ddnm
                },
            })
        }
        Method::Reddiff => {
            let likelihood = task.likelihood(false)?;
            let device = task.device(false);
            let [c, h, w] = shape;
            let rows = groups * k;
            // Started at A⁺ŷ where A has a pseudo-inverse, else at 0.
            let init = match (task.operator(), task.noise()) {
                (Ok(op), Ok(noise)) => {
                    pseudo_inverse(op.as_ref(), noise.mean_estimate(task.y(false)?))
                }
                _ => None,
            }
            .map(|x| if offers.images { x.clamp(-1.0, 1.0) } else { x })
            .unwrap_or_else(|| Tensor::zeros([rows, c, h, w], &device));
            Box::new(RedDiff::new(likelihood, init, *settings.reddiff))
        }
        Method::Daps => Box::new(Daps::new(
            task.likelihood(false)?,
            DapsSettings {
                clip: clip(settings.daps.clip),
                ..*settings.daps
            },
            task.curvature(),
            schedule.alphas_cumprod.clone(),
        )),
        Method::Tds | Method::Fk => {
            let p = settings
                .particle_settings(method, k, offers)
                .expect("a particle method");
            return Ok(Built::Smc(Box::new(Smc::new(
                method.name(),
                task.likelihood(p.config.guided)?,
                p.config,
                groups,
                k,
                seed,
            ))));
        }
        Method::Mcgdiff => {
            let (sp, sigma) = spectral()?;
            let y = task.y(false)?;
            let data = SpectralData::new(sp, y.clone(), shape, sigma);
            let jac = log_jacobian(task.operator()?.as_ref(), &data, y, shape, k);
            let s = McgdiffSettings {
                clip: clip(settings.mcgdiff.clip),
                ..settings.mcgdiff.clone()
            };
            return Ok(Built::Mcgdiff(Box::new(Mcgdiff::new(
                data, groups, k, &s, seed, jac,
            ))));
        }
        Method::Pnpdm => {
            let exact = match (task.operator().ok().and_then(|op| op.spectral()), sigma) {
                (Some(sp), Some(s)) => Some(SpectralData::new(sp, task.y(false)?, shape, s)),
                _ => None,
            };
            let likelihood = PnpLikelihood {
                likelihood: task.likelihood(false)?,
                exact,
                curvature: task.curvature(),
            };
            let s = PnpDmSettings {
                clip: clip(settings.pnpdm.clip),
                ..*settings.pnpdm
            };
            return Ok(Built::Pnpdm(Box::new((likelihood, s))));
        }
        Method::Pinv | Method::Amortized | Method::Csb => {
            bail!(
                "{} is drawn by its runner, not built as a sampler",
                method.name()
            )
        }
    }))
}

/// The networks a method may call: on the plain device, and on its autodiff twin for guidance.
#[derive(Clone, Copy)]
pub struct Networks<'a> {
    pub plain: &'a dyn Denoiser,
    pub grad: &'a dyn Denoiser,
}

/// What one particle system did.
#[derive(Debug, Clone, Copy)]
pub struct SystemStats {
    pub ess_mean: f64,
    pub resamplings: usize,
    pub dropped: usize,
    pub log_z: f64,
}

/// One batch's draws.
pub struct Drawn {
    /// One row per trajectory or system (a particle picked from each system's final weights),
    /// clamped to [−1, 1] for images.
    pub values: Vec<f32>,
    /// Network calls per trajectory (a system's: per particle).
    pub nfe: usize,
    /// Particle methods: each system's statistics, and the mean ESS over the run.
    pub systems: Option<Vec<SystemStats>>,
    pub ess_mean: Option<f64>,
}

/// Draws a built method over `steps` respaced steps: from N(0, I) (PnP-DM: from 0, which its
/// coupling ρ₀ makes immaterial) on the device its sampler needs. `on_step` runs after each step.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    built: &mut Built,
    task: &dyn Task,
    nets: Networks,
    schedule: &NoiseSchedule,
    steps: usize,
    rows: usize,
    rng: &mut Rng,
    on_step: &mut dyn FnMut(),
) -> Result<Drawn> {
    let [c, h, w] = task.shape();
    let per = c * h * w;
    let images = task.offers().images;
    let finish =
        |x: Tensor<4>| tweedie_core::host_values(if images { x.clamp(-1.0, 1.0) } else { x });
    let sampler: &mut dyn Sampler = match built {
        Built::Plain(s) => s.as_mut(),
        Built::Smc(s) => s.as_mut(),
        Built::Mcgdiff(m) => m.as_mut(),
        Built::Pnpdm(p) => {
            let (likelihood, settings) = p.as_ref();
            let x = Tensor::zeros([rows, c, h, w], &task.device(false));
            let (x0, nfe) = crate::pnpdm::run(
                nets.plain,
                schedule,
                likelihood,
                settings,
                x,
                rng,
                &mut *on_step,
            );
            return Ok(Drawn {
                values: finish(x0),
                nfe,
                systems: None,
                ess_mean: None,
            });
        }
    };
    let grad = sampler.needs_grad();
    let model = if grad { nets.grad } else { nets.plain };
    let timesteps = schedule.timesteps(steps, Spacing::Trailing)?;
    let x_t = rng.normal_tensor([rows, c, h, w], &task.device(grad));
    let (x0, nfe) = sampler::run(model, sampler, schedule, &timesteps, x_t, rng, |_, _| {
        on_step()
    });
    let all = finish(x0);
    let pick = |picks: Vec<usize>| -> Vec<f32> {
        picks
            .iter()
            .flat_map(|&i| all[i * per..(i + 1) * per].to_vec())
            .collect()
    };
    Ok(match built {
        Built::Plain(_) | Built::Pnpdm(_) => Drawn {
            values: all.clone(),
            nfe,
            systems: None,
            ess_mean: None,
        },
        Built::Smc(smc) => {
            let picks = smc.pick()?;
            let systems = (0..picks.len())
                .map(|g| SystemStats {
                    ess_mean: smc.ess_mean_of(g),
                    resamplings: smc.resamplings()[g],
                    dropped: smc.dropped()[g],
                    log_z: smc.log_z()[g],
                })
                .collect();
            Drawn {
                values: pick(picks),
                nfe,
                systems: Some(systems),
                ess_mean: Some(smc.ess_mean()),
            }
        }
        Built::Mcgdiff(m) => {
            let picks = m.pick();
            let log_z = m.log_z();
            let systems: Vec<SystemStats> = (0..picks.len())
                .map(|g| SystemStats {
                    ess_mean: m.ess_mean_of(g),
                    resamplings: timesteps.len(),
                    dropped: 0,
                    log_z: log_z[g],
                })
                .collect();
            let n = systems.len().max(1) as f64;
            let ess = systems.iter().map(|s| s.ess_mean).sum::<f64>() / n;
            Drawn {
                values: pick(picks),
                nfe,
                systems: Some(systems),
                ess_mean: Some(ess),
            }
        }
    })
}

/// log p(y) − log p(ȳ) per system (its `k` rows share one y): y's part outside A's range,
/// N(y_⊥; 0, σ² I) over m − r coordinates, and the Jacobian Πᵢ 1/sᵢ of ȳ = Σ⁺Uᵀy.
fn log_jacobian(
    op: &dyn ForwardOperator,
    data: &SpectralData,
    y: Tensor<4>,
    shape: [usize; 3],
    k: usize,
) -> Vec<f64> {
    let (on, safe) = data.observed_and_safe_s();
    let [c, h, w] = shape;
    let (on, safe) = (on.expand([1, c, h, w]), safe.expand([1, c, h, w]));
    let rows = y.dims()[0];
    let m: usize = y.dims().iter().skip(1).product();
    // The rank and log Πᵢ sᵢ over the observed coordinates, summed in f64.
    let (on_h, s_h) = (
        tweedie_core::host_values(on.clone()),
        tweedie_core::host_values(safe),
    );
    let observed = || on_h.iter().zip(&s_h).filter(|(o, _)| **o > 0.0);
    let r = observed().count() as f64;
    let log_s = observed().map(|(_, s)| f64::from(*s).ln()).sum::<f64>();
    let in_range = op.apply(data.spectral.spectral_to_image(data.y_bar.clone() * on));
    let perp = tweedie_core::host_values(
        (y - in_range)
            .square()
            .reshape([rows as i32, -1])
            .sum_dim(1),
    );
    let s2 = data.sigma * data.sigma;
    (0..rows / k)
        .map(|g| {
            -0.5 * (m as f64 - r) * (2.0 * std::f64::consts::PI * s2).ln()
                - perp[g * k] as f64 / (2.0 * s2)
                - log_s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(operator: Option<OperatorOffers>, sigma: Option<f64>) -> Offers {
        Offers {
            key: "run.methods",
            task: "class labels",
            operator,
            noise: if sigma.is_some() {
                "gaussian"
            } else {
                "poisson"
            }
            .into(),
            gaussian_sigma: sigma,
            default_max_shift: f64::INFINITY,
            images: true,
            trained: false,
        }
    }

    fn op(name: &str, linear: bool, spectral: bool, mask: bool) -> Option<OperatorOffers> {
        Some(OperatorOffers {
            name: name.into(),
            linear,
            spectral,
            mask,
            gram_known: linear,
        })
    }

    /// The methods `offers` admits, and every refusal is one line naming the method.
    fn admitted(offers: &Offers) -> Vec<&'static str> {
        Method::ALL
            .into_iter()
            .filter(|&m| match check(m, offers) {
                Ok(()) => true,
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains(m.name()) && !msg.contains('\n'), "{msg}");
                    false
                }
            })
            .map(Method::name)
            .collect()
    }

    #[test]
    fn each_task_admits_exactly_the_methods_whose_needs_it_meets() {
        // A label likelihood: the methods that need nothing but a density.
        assert_eq!(
            admitted(&offers(None, None)),
            ["dps", "tds", "fk", "reddiff", "daps", "pnpdm"]
        );
        // Blur under Poisson noise: no SVD, no Gaussian noise.
        assert_eq!(
            admitted(&offers(op("blur5σ1", true, false, false), None)),
            [
                "pinv", "dps", "diffpir", "tds", "fk", "reddiff", "daps", "pnpdm"
            ]
        );
        // A noiseless mask: the methods whose likelihood need not be a density.
        let mut noiseless = offers(op("inpaint", true, true, true), Some(0.0));
        noiseless.trained = true;
        assert_eq!(
            admitted(&noiseless),
            ["pinv", "replacement", "amortized", "csb", "ddrm", "ddnm"]
        );
        // A non-linear operator with Gaussian noise.
        let e = check(
            Method::Pigdm,
            &offers(op("tanh", false, false, false), Some(0.1)),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "run.methods: pigdm needs a linear operator; tanh is not"
        );
    }

    #[test]
    fn every_method_has_a_name_a_stream_and_serde_agrees() {
        let mut streams: Vec<u64> = Method::ALL.iter().map(|m| m.stream()).collect();
        streams.dedup();
        assert_eq!(streams.len(), Method::ALL.len());
        for m in Method::ALL {
            let text = format!("m = \"{}\"", m.name());
            #[derive(Deserialize)]
            struct One {
                m: Method,
            }
            let one: One = toml::from_str(&text).unwrap();
            assert_eq!(one.m, m);
        }
    }
}
