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
use tweedie_core::schedule::NoiseSchedule;

use crate::catalog::{self, Method, MethodSettings, Networks, Offers, Task};
use crate::class_likelihood::ClassLabel;
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::likelihood::Likelihood;
use crate::noise::NoiseModel;
use crate::operator::{ForwardOperator, Mask};
use crate::pnpdm::PnpDmSettings;
use crate::sampler::{DapsSettings, DdnmSettings, DdrmSettings, RedDiffSettings};
use crate::settings::{
    DiffPirSection, DpsSection, FkSection, PiGdmSection, ReplacementSection, TdsSection,
};
use crate::smc::McgdiffSettings;

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
    /// The methods' sections, the same as a reconstruction file's (`[dps]` needs
    /// `rule = "log-likelihood"`: a label has no residual).
    #[serde(default)]
    pub dps: DpsSection,
    #[serde(default)]
    pub tds: TdsSection,
    #[serde(default)]
    pub fk: FkSection,
    #[serde(default)]
    pub reddiff: RedDiffSettings,
    #[serde(default)]
    pub daps: DapsSettings,
    #[serde(default)]
    pub pnpdm: PnpDmSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSection {
    /// Requested classes; each gets `per_class` digits.
    pub classes: Vec<usize>,
    pub per_class: usize,
    /// Any method whose likelihood may be a classifier's: dps, tds, fk, reddiff, daps, pnpdm
    /// (each with its own section: steps, K, step sizes).
    pub methods: Vec<Method>,
}

/// The sections a class file has no use for (their methods need an observation y = A(x) + noise).
struct Unused {
    diffpir: DiffPirSection,
    pigdm: PiGdmSection,
    replacement: ReplacementSection,
    ddrm: DdrmSettings,
    ddnm: DdnmSettings,
    mcgdiff: McgdiffSettings,
}

static UNUSED: std::sync::LazyLock<Unused> = std::sync::LazyLock::new(|| Unused {
    diffpir: DiffPirSection::default(),
    pigdm: PiGdmSection::default(),
    replacement: ReplacementSection::default(),
    ddrm: DdrmSettings::default(),
    ddnm: DdnmSettings::default(),
    mcgdiff: McgdiffSettings::default(),
});

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
        if f.class.classes.is_empty() || f.class.per_class == 0 {
            bail!("class.classes and class.per_class must be non-empty / positive");
        }
        f.settings().validate(&f.class.methods, &f.offers())?;
        if f.judge.as_ref().is_some_and(|j| *j == f.classifier) {
            bail!("judge is the guiding classifier: it must be an independent one");
        }
        Ok(f)
    }

    /// Every method's settings section.
    pub fn settings(&self) -> MethodSettings<'_> {
        let u = &*UNUSED;
        MethodSettings {
            dps: &self.dps,
            diffpir: &u.diffpir,
            pigdm: &u.pigdm,
            replacement: &u.replacement,
            tds: &self.tds,
            fk: &self.fk,
            ddrm: &u.ddrm,
            ddnm: &u.ddnm,
            reddiff: &self.reddiff,
            daps: &self.daps,
            pnpdm: &self.pnpdm,
            mcgdiff: &u.mcgdiff,
        }
    }

    /// A classifier's label likelihood offers no operator and no noise model.
    pub fn offers(&self) -> Offers {
        Offers {
            key: "class.methods",
            task: "class labels",
            operator: None,
            noise: "a classifier's label".into(),
            gaussian_sigma: None,
            default_max_shift: f64::INFINITY,
            images: true,
            trained: false,
        }
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

/// Draws one digit per target class with `method` (K particles for the particle methods).
pub fn draw(
    file: &ClassFile,
    method: Method,
    k: usize,
    models: &ClassModels,
    schedule: &NoiseSchedule,
    shape: [usize; 3],
    seed: u64,
) -> Result<ClassRun> {
    let clock = Instant::now();
    let n = file.targets().len();
    let k = if method.is_particle() { k } else { 1 };
    let offers = file.offers();
    let task = ClassTask {
        models,
        offers: &offers,
        shape,
        classes: file
            .targets()
            .iter()
            .flat_map(|t| std::iter::repeat_n(*t, k))
            .collect(),
    };
    let settings = file.settings();
    let mut built = catalog::build(method, k, &settings, &task, schedule, n, seed ^ 0x5eed)?;
    let nets = Networks {
        plain: models.unet,
        grad: models.unet_grad,
    };
    let drawn = catalog::draw(
        &mut built,
        &task,
        nets,
        schedule,
        settings.steps(method),
        n * k,
        &mut Rng::new(seed),
        &mut || {},
    )?;
    Ok(ClassRun {
        values: drawn.values,
        nfe: drawn.nfe,
        ess_mean: drawn.ess_mean,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The rows of a class-conditional draw: the requested class of each.
struct ClassTask<'a> {
    models: &'a ClassModels<'a>,
    offers: &'a Offers,
    shape: [usize; 3],
    classes: Vec<usize>,
}

impl Task for ClassTask<'_> {
    fn offers(&self) -> &Offers {
        self.offers
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn device(&self, grad: bool) -> Device {
        if grad {
            self.models.grad_device.clone()
        } else {
            self.models.device.clone()
        }
    }
    fn likelihood(&self, grad: bool) -> Result<Box<dyn Likelihood>> {
        let model = if grad {
            self.models.classifier_grad
        } else {
            self.models.classifier
        };
        Ok(Box::new(ClassLabel {
            model: model.clone(),
            classes: self.classes.clone(),
        }))
    }
    fn operator(&self) -> Result<Box<dyn ForwardOperator>> {
        bail!("class labels have no forward operator")
    }
    fn noise(&self) -> Result<Box<dyn NoiseModel>> {
        bail!("class labels have no noise model")
    }
    fn y(&self, _grad: bool) -> Result<Tensor<4>> {
        bail!("class labels have no observation y")
    }
    fn mask(&self) -> Option<Mask> {
        None
    }
    fn curvature(&self) -> f64 {
        0.0
    }
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
    /// Reverse steps, and network calls per digit (per particle for the particle methods).
    pub steps: usize,
    pub nfe: usize,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESET: &str = include_str!("../../../../experiments/mnist-class.toml");

    #[test]
    fn a_label_likelihood_refuses_the_methods_that_need_an_observation_by_name() {
        let f = ClassFile::parse(PRESET).unwrap();
        assert_eq!(f.settings().steps(Method::Tds), 50);
        let cases = [
            (
                PRESET.replace(r#"methods = ["dps", "tds", "fk"]"#, r#"methods = ["ddrm"]"#),
                "class.methods: ddrm needs an observation y = A(x) + noise; class labels have none",
            ),
            (
                PRESET.replace(
                    r#"methods = ["dps", "tds", "fk"]"#,
                    r#"methods = ["amortized"]"#,
                ),
                "class.methods: amortized is not available for class labels",
            ),
            (
                PRESET.replace("rule = \"log-likelihood\"", "rule = \"residual-norm\""),
                "dps.rule = \"residual-norm\" needs an observation y = A(x) + noise",
            ),
            (
                PRESET.replace(
                    r#"methods = ["dps", "tds", "fk"]"#,
                    r#"methods = ["dps", "dps"]"#,
                ),
                "class.methods: `dps` is listed twice",
            ),
            (
                PRESET.replace("[tds]\nparticles = [1, 2, 4, 8]", "[tds]\nparticles = [0]"),
                "tds.particles must be at least 1",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", ClassFile::parse(&text).unwrap_err());
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }
}
