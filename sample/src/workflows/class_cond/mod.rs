//! Class-conditional generation from an unconditional model (the TDS paper's MNIST experiment,
//! Wu et al. 2023 §5.2): the likelihood is a classifier's log p(c | x̂_0); TDS and FK steering
//! draw digits of a requested class with K particles, DPS-style classifier guidance with one.
//! `sample --config experiments/mnist-class.toml` (a file with a `[class]` table).

mod run;

pub use run::{ClassOptions, ClassReport, run};

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tweedie_core::classifier::Classifier;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{NoiseSchedule, Spacing};

use crate::check::{self, Range};
use crate::class_likelihood::ClassLabel;
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::sampler::{self, Ddpm, Dps, DpsStep, Sampler};
use crate::smc::{Potential, ResampleWhen, Smc, SmcConfig};

/// The experiment file (`kind = "class-conditional"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFile {
    pub kind: ExperimentKind,
    /// The unconditional diffusion model (run or step directory).
    pub checkpoint: std::path::PathBuf,
    /// The classifier's run directory (`train --config experiments/mnist-classifier.toml`): the
    /// likelihood that guides.
    pub classifier: std::path::PathBuf,
    /// An independent classifier that judges the digits (another architecture, seed and data
    /// order: `train --config experiments/mnist-judge.toml`). Guided digits partly fool the
    /// classifier whose gradient made them, so its accuracy flatters; the judge's is the
    /// headline. Without one, only the guide's accuracy is reported.
    #[serde(default)]
    pub judge: Option<std::path::PathBuf>,
    #[serde(default)]
    pub seed: u64,
    pub out: Option<std::path::PathBuf>,
    pub class: ClassSection,
    #[serde(default)]
    pub fk: FkClassSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSection {
    /// Requested classes; each gets `per_class` digits.
    pub classes: Vec<usize>,
    pub per_class: usize,
    /// Reverse steps (respaced DDPM).
    pub steps: usize,
    pub methods: Vec<ClassMethod>,
    /// Particle counts of tds and fk.
    pub particles: Vec<usize>,
    /// DPS-style guidance scale on ∇ log p(c | x̂_0) (1: Bayes' rule).
    #[serde(default = "one")]
    pub dps_scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FkClassSection {
    pub potential: Potential,
    pub lambda: f64,
    pub guided: bool,
    pub interval: usize,
}

impl Default for FkClassSection {
    fn default() -> Self {
        Self {
            potential: Potential::Difference,
            lambda: 1.0,
            guided: false,
            interval: 1,
        }
    }
}

/// A method of class-conditional generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassMethod {
    /// DPS-style classifier guidance on ∇ log p(c | x̂_0), one particle.
    Dps,
    /// Twisted diffusion sampler (Wu et al. 2023), K particles.
    Tds,
    /// FK steering (Singhal et al. 2025), K particles.
    Fk,
}

impl ClassMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dps => "dps",
            Self::Tds => "tds",
            Self::Fk => "fk",
        }
    }
}

impl ExperimentFile for ClassFile {
    const KIND: ExperimentKind = ExperimentKind::ClassConditional;
    fn kind(&self) -> ExperimentKind {
        self.kind
    }
}

impl ClassFile {
    /// Parses and validates TOML text as a class-conditional file (one-line errors).
    pub fn parse(text: &str) -> Result<Self> {
        let f = <Self as ExperimentFile>::parse(text)?;
        if f.class.methods.is_empty() {
            bail!("class.methods is empty");
        }
        if f.class.classes.is_empty() || f.class.per_class == 0 || f.class.steps == 0 {
            bail!("class.classes, class.per_class and class.steps must be non-empty / positive");
        }
        if f.class.particles.is_empty() || f.class.particles.contains(&0) {
            bail!("class.particles must list positive particle counts");
        }
        check::float("class.dps_scale", f.class.dps_scale, Range::NonNegative)?;
        if f.judge.as_ref().is_some_and(|j| *j == f.classifier) {
            bail!("judge is the guiding classifier: it must be an independent one");
        }
        check::float("fk.lambda", f.fk.lambda, Range::Positive)?;
        if f.fk.interval == 0 {
            bail!("fk.interval must be at least 1 (resample every that many steps)");
        }
        Ok(f)
    }

    /// The requested class of each digit.
    pub fn targets(&self) -> Vec<usize> {
        self.class
            .classes
            .iter()
            .flat_map(|c| std::iter::repeat_n(*c, self.class.per_class))
            .collect()
    }
}

/// The networks: on the inner device and on its autodiff twin.
pub struct ClassModels<'a> {
    pub unet: &'a dyn Denoiser,
    pub unet_grad: &'a dyn Denoiser,
    pub classifier: &'a Classifier,
    pub classifier_grad: &'a Classifier,
    pub device: Device,
    pub grad_device: Device,
}

/// One method's digits (`[n, C, H, W]` values in [−1, 1]) and costs.
pub struct ClassRun {
    pub values: Vec<f32>,
    pub nfe: usize,
    pub ess_mean: Option<f64>,
    pub seconds: f64,
}

/// Draws one digit per target class with `method` (K particles for tds/fk).
pub fn draw(
    file: &ClassFile,
    method: ClassMethod,
    k: usize,
    models: &ClassModels,
    schedule: &NoiseSchedule,
    shape: [usize; 3],
    seed: u64,
) -> Result<ClassRun> {
    let clock = Instant::now();
    let targets = file.targets();
    let n = targets.len();
    let timesteps = schedule.timesteps(file.class.steps, Spacing::Trailing)?;
    let mut rng = Rng::new(seed);
    let [c, h, w] = shape;
    let ddpm = Ddpm {
        variance: tweedie_core::elbo::ModelVariance::Small,
        clip: true,
    };
    let per_row = |k: usize| -> Vec<usize> {
        targets
            .iter()
            .flat_map(|t| std::iter::repeat_n(*t, k))
            .collect()
    };
    let mut smc: Option<Smc> = None;
    let mut plain: Box<dyn Sampler> = Box::new(ddpm);
    match method {
        ClassMethod::Dps => {
            plain = Box::new(Dps {
                likelihood: Box::new(ClassLabel {
                    model: models.classifier_grad.clone(),
                    classes: per_row(1),
                }),
                rule: DpsStep::LogLikelihood {
                    zeta: file.class.dps_scale,
                },
                ddpm,
            })
        }
        ClassMethod::Tds | ClassMethod::Fk => {
            let config = if method == ClassMethod::Tds {
                SmcConfig {
                    clip: true,
                    ..SmcConfig::tds()
                }
            } else {
                SmcConfig {
                    potential: file.fk.potential,
                    lambda: file.fk.lambda,
                    guided: file.fk.guided,
                    when: ResampleWhen::Every(file.fk.interval),
                    clip: true,
                    ..SmcConfig::tds()
                }
            };
            let classifier = if config.guided {
                models.classifier_grad
            } else {
                models.classifier
            };
            smc = Some(Smc::new(
                method.name(),
                Box::new(ClassLabel {
                    model: classifier.clone(),
                    classes: per_row(k),
                }),
                config,
                n,
                k,
                seed ^ 0x5eed,
            ));
        }
    }
    let rows = if smc.is_some() { n * k } else { n };
    let sampler: &mut dyn Sampler = match smc.as_mut() {
        Some(s) => s,
        None => plain.as_mut(),
    };
    let (device, unet) = if sampler.needs_grad() {
        (&models.grad_device, models.unet_grad)
    } else {
        (&models.device, models.unet)
    };
    let x_t = rng.normal_tensor([rows, c, h, w], device);
    let (x0, nfe) = sampler::run(
        unet,
        sampler,
        schedule,
        &timesteps,
        x_t,
        &mut rng,
        |_, _| {},
    );
    let all = tweedie_core::host_values(x0.clamp(-1.0, 1.0));
    let per = c * h * w;
    let (values, ess_mean) = match smc.as_mut() {
        Some(s) => {
            let picks = s.pick()?;
            let v = picks
                .iter()
                .flat_map(|&i| all[i * per..(i + 1) * per].to_vec())
                .collect();
            (v, Some(s.ess_mean()))
        }
        None => (all, None),
    };
    Ok(ClassRun {
        values,
        nfe,
        ess_mean,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The classifier's predicted class of each image.
pub fn predict(
    classifier: &Classifier,
    values: &[f32],
    shape: [usize; 3],
    device: &Device,
) -> Vec<usize> {
    let [c, h, w] = shape;
    let n = values.len() / (c * h * w);
    let x = Tensor::<4>::from_data(TensorData::new(values.to_vec(), [n, c, h, w]), device);
    let p = classifier.forward(x).argmax(1).reshape([n]);
    p.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// One line of the class-conditional table.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub method: String,
    pub particles: usize,
    /// Fraction of the digits the guiding classifier assigns to the requested class.
    pub accuracy: f64,
    /// The same by the independent judge (the headline), when the file names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_accuracy: Option<f64>,
    pub ess_mean: Option<f64>,
    pub nfe: usize,
    pub seconds: f64,
}
