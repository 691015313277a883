//! The experiment file of a reconstruction run (TOML), e.g. `experiments/mnist-sr4.toml`: plain
//! serde structs that reject unknown keys, turned into operators, noise models and method settings
//! by [`ReconFile::operator`], [`ReconFile::noise_model`] and [`ReconFile::validate`].

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;
use tweedie_datasets::{DatasetName, Split};

pub use crate::catalog::{Method, MethodSettings, Offers, OperatorOffers};
use crate::experiment::{ExperimentFile, ExperimentKind};
use crate::noise::NoiseModel;
use crate::operator::{ForwardOperator, Mask};
use crate::pnpdm::PnpDmSettings;
use crate::sampler::{DapsSettings, DdnmSettings, DdrmSettings, RedDiffSettings};
pub use crate::settings::{
    DiffPirSection, DpsRule, DpsSection, FkSection, ParticleSettings, PiGdmSection, Proposal,
    ReplacementSection, ResampleRule, TdsSection,
};
use crate::smc::McgdiffSettings;
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
    pub methods: Vec<Method>,
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

/// One run of a file: a method, and for TDS and FK one of its particle counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub method: Method,
    /// K (TDS and FK; None: the first of the file's list).
    pub particles: Option<usize>,
}

impl From<Method> for MethodSpec {
    fn from(method: Method) -> Self {
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

    /// Every method's settings section.
    pub fn settings(&self) -> MethodSettings<'_> {
        MethodSettings {
            dps: &self.dps,
            diffpir: &self.diffpir,
            pigdm: &self.pigdm,
            replacement: &self.replacement,
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

    /// What the file's observation offers its methods, its operator probed on `h × w` images (a
    /// size it cannot take, e.g. a factor that does not divide it, leaves only the checks that
    /// need no operator).
    pub fn offers(&self, h: usize, w: usize) -> Result<Offers> {
        let noise = self.noise_model()?;
        let operator = match self.operator(h, w) {
            Ok(op) => OperatorOffers::of(op.as_ref(), self.mask(1, 1).is_some()),
            Err(_) => OperatorOffers {
                name: "the operator".to_string(),
                linear: true,
                spectral: true,
                mask: self.mask(1, 1).is_some(),
                gram_known: false,
            },
        };
        Ok(Offers {
            key: "run.methods",
            task: "this observation",
            operator: Some(operator),
            noise: noise.name().to_string(),
            gaussian_sigma: self.gaussian_sigma(),
            default_max_shift: match self.noise {
                NoiseSpec::Poisson { .. } => crate::smc::POISSON_MAX_SHIFT,
                _ => f64::INFINITY,
            },
            images: true,
            trained: true,
        })
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
    pub fn steps(&self, method: Method) -> usize {
        match method {
            Method::Amortized => self.amortized.steps,
            Method::Csb => self.csb.steps,
            m => self.settings().steps(m),
        }
    }

    /// The runs of the file, in its order: one per method, and one per K of the particle
    /// methods.
    pub fn specs(&self) -> Vec<MethodSpec> {
        let settings = self.settings();
        let mut out = Vec::new();
        for &method in &self.run.methods {
            match settings.particles(method) {
                Some(ks) => out.extend(ks.iter().map(|&k| MethodSpec {
                    method,
                    particles: Some(k),
                })),
                None => out.push(method.into()),
            }
        }
        out
    }

    /// K of a particle run (its own, else the first of the section's list; 1 for the others).
    pub fn particles_of(&self, spec: MethodSpec) -> usize {
        let listed = self
            .settings()
            .particles(spec.method)
            .and_then(|l| l.first().copied());
        spec.particles.or(listed).unwrap_or(1)
    }

    /// The particle settings of a `tds` or `fk` run (None for the other methods).
    pub fn particle_settings(&self, spec: impl Into<MethodSpec>) -> Option<ParticleSettings> {
        let spec = spec.into();
        let offers = self.offers(64, 64).ok()?;
        self.settings()
            .particle_settings(spec.method, self.particles_of(spec), &offers)
    }

    /// Network batches of a run: whole images with all their samples for the one-particle
    /// methods, whole systems of K particles for the particle methods.
    pub fn method_chunks(&self, spec: MethodSpec, images: usize) -> usize {
        if spec.method.is_particle() {
            let per_batch = (self.run.batch_size / self.particles_of(spec).max(1)).max(1);
            (images * self.run.samples).div_ceil(per_batch)
        } else {
            self.chunks(images)
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

    /// σ of Gaussian observation noise on the model's [−1, 1] scale.
    pub fn gaussian_sigma(&self) -> Option<f64> {
        match self.noise {
            NoiseSpec::Gaussian { sigma_y } => Some(2.0 * sigma_y),
            _ => None,
        }
    }

    /// Checks what the types cannot: methods that fit the operator and noise
    /// ([`MethodSettings::validate`]), positive counts, the amortized routes' files.
    pub fn validate(&self) -> Result<()> {
        self.noise_model()?;
        self.settings()
            .validate(&self.run.methods, &self.offers(64, 64)?)?;
        if self.run.samples == 0 || self.run.batch_size == 0 {
            bail!("run.samples and run.batch_size must be positive");
        }
        let uses = |m: Method| self.run.methods.contains(&m);
        if uses(Method::Amortized) {
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
        if uses(Method::Csb) {
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
        let offers = f.offers(28, 28).unwrap();
        assert_eq!(
            MethodSettings::twist(None, &offers),
            crate::smc::Twist::Pigdm
        );
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
