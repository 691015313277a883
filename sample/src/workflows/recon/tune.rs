//! `sample tune --config FILE`: the step-size parameters of each method of a reconstruction file
//! (DPS's ζ, DiffPIR's λ and ζ, ΠGDM's weight), chosen by the mean PSNR of the posterior samples
//! on a few images of the **train** split, never the test images the file reports on.
//!
//! The search is a coordinate search on a log grid: each parameter in turn over ×{1/8, …, 8}
//! of its current value (ζ of DiffPIR, a share in [0, 1], over {0, 0.1, 0.3, 0.6, 1}), then a
//! finer pass ×{1/√2, 1, √2} around the best. Every candidate sees the same images, observation
//! and random streams, so differences are the parameters'. The particle methods are left out:
//! with λ = 1 they target the posterior itself and have no step size to tune.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tweedie_core::device::BackendKind;
use tweedie_core::rng::Rng;

use super::run::load_problem;
use super::{Method, Models, ReconFile, reconstruct, score};
use crate::prior::Prior;

/// How to tune.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The file's path (errors, and the note in the tuned copy).
    pub path: std::path::PathBuf,
    /// Training images to tune on (drawn from the train split by `seed`).
    pub images: usize,
    /// Posterior samples per image during the search.
    pub samples: usize,
    pub seed: u64,
    pub backend: BackendKind,
    pub quiet: bool,
}

/// One candidate's score.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneRow {
    pub method: String,
    /// e.g. `zeta = 0.5`.
    pub setting: String,
    pub psnr: f64,
    pub ssim: f64,
}

/// What a search found.
pub struct TuneReport {
    pub rows: Vec<TuneRow>,
    /// The chosen values: (section, key, value).
    pub chosen: Vec<(String, String, f64)>,
    /// Train-split indices searched on.
    pub images: Vec<usize>,
    /// A⁺y's PSNR on the same images (None where A has no pseudo-inverse).
    pub pinv_psnr: Option<f64>,
}

/// A tunable parameter: its section and key, how to read and set it, and its coarse grid.
struct Param {
    method: Method,
    key: &'static str,
    get: fn(&ReconFile) -> f64,
    set: fn(&mut ReconFile, f64),
    /// Coarse candidates from the current value.
    coarse: fn(f64) -> Vec<f64>,
    /// Whether to refine ×{1/√2, √2} around the best.
    refine: bool,
}

fn log_grid(v: f64) -> Vec<f64> {
    [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
        .iter()
        .map(|f| f * v)
        .collect()
}

/// Six decades from 1/100 of the current value: step sizes whose scale depends on the
/// likelihood's (DAPS's Langevin step: the paper's 1e-4 is for a sharpened likelihood).
fn decade_grid(v: f64) -> Vec<f64> {
    [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
        .iter()
        .map(|f| f * v)
        .collect()
}

fn share_grid(_: f64) -> Vec<f64> {
    vec![0.0, 0.1, 0.3, 0.6, 1.0]
}

fn params() -> Vec<Param> {
    vec![
        Param {
            method: Method::Dps,
            key: "zeta",
            get: |f| f.dps.zeta,
            set: |f, v| f.dps.zeta = v,
            coarse: log_grid,
            refine: true,
        },
        Param {
            method: Method::Diffpir,
            key: "lambda",
            get: |f| f.diffpir.lambda,
            set: |f, v| f.diffpir.lambda = v,
            coarse: log_grid,
            refine: true,
        },
        Param {
            method: Method::Diffpir,
            key: "zeta",
            get: |f| f.diffpir.zeta,
            set: |f, v| f.diffpir.zeta = v,
            coarse: share_grid,
            refine: false,
        },
        Param {
            method: Method::Pigdm,
            key: "weight",
            get: |f| f.pigdm.weight,
            set: |f, v| f.pigdm.weight = v,
            coarse: log_grid,
            refine: true,
        },
        Param {
            method: Method::Reddiff,
            key: "lambda",
            get: |f| f.reddiff.lambda,
            set: |f, v| f.reddiff.lambda = v,
            coarse: log_grid,
            refine: true,
        },
        Param {
            method: Method::Daps,
            key: "lr",
            get: |f| f.daps.lr,
            set: |f, v| f.daps.lr = v,
            coarse: decade_grid,
            refine: true,
        },
    ]
}

/// Searches the parameters of every method of `file` that has some.
pub fn tune(file: &ReconFile, opts: &TuneOptions) -> Result<TuneReport> {
    file.validate()?;
    if opts.images == 0 || opts.samples == 0 {
        bail!("--images and --samples must be positive");
    }
    let device = opts.backend.device()?;
    let grad_device = device.clone().autodiff();
    let prior = Prior::load(&file.checkpoint, &device, file.run.raw_weights)?;
    let grad_model = prior.grad_model(&grad_device);
    // The same problem on train images for every candidate.
    let mut base = file.clone();
    base.data.split = tweedie_datasets::Split::Train;
    let kind = base.data.dataset.kind(None);
    let dir = tweedie_datasets::resolve_dir(kind, base.data.dir.as_deref())?;
    let n_train = tweedie_datasets::load(kind, base.data.split, &dir)?.len();
    let mut rng = Rng::derive(opts.seed, 0x7E4E);
    let mut images: Vec<usize> = rng.permutation(n_train);
    images.truncate(opts.images.min(n_train));
    base.data.indices = Some(images.clone());
    base.run.samples = opts.samples;
    base.seed = opts.seed;
    let (problem, _) = load_problem(&base, &prior, &opts.path, &device)?;
    let models = Models {
        plain: &prior.model,
        grad: &grad_model,
        device: device.clone(),
        grad_device,
        quiet: opts.quiet,
    };
    let tunable: Vec<Param> = params()
        .into_iter()
        .filter(|p| base.run.methods.contains(&p.method))
        .collect();
    let bar = crate::progress::bar(
        tunable.len() * 9,
        opts.quiet,
        "{spinner} {msg:24} [{bar:30}] {pos}/{len} runs ETA {eta}",
    );
    // The floor every method should clear: A⁺y on the same images.
    let pinv_psnr = {
        let mut rng = Rng::derive(opts.seed, Method::Pinv.stream());
        reconstruct(
            &base,
            Method::Pinv,
            &problem,
            &models,
            &prior.schedule,
            &mut rng,
            || {},
        )
        .ok()
        .map(|run| score(&run, &problem, 0).psnr_mean)
    };
    let mut rows = Vec::new();
    let mut chosen = Vec::new();
    let mut current = base;
    for p in &tunable {
        let try_value = |v: f64, rows: &mut Vec<TuneRow>| -> Result<f64> {
            let mut f = current.clone();
            (p.set)(&mut f, v);
            f.run.methods = vec![p.method];
            bar.set_message(format!("{} {} = {v:.4}", p.method.name(), p.key));
            let mut rng = Rng::derive(opts.seed, p.method.stream());
            let run = reconstruct(
                &f,
                p.method,
                &problem,
                &models,
                &prior.schedule,
                &mut rng,
                || {},
            )
            .with_context(|| format!("{} with {} = {v}", p.method.name(), p.key))?;
            let r = score(&run, &problem, f.steps(p.method));
            bar.inc(1);
            rows.push(TuneRow {
                method: p.method.name().into(),
                setting: format!("{} = {v:.4}", p.key),
                psnr: r.psnr_mean,
                ssim: r.ssim_mean,
            });
            Ok(r.psnr_mean)
        };
        let start = (p.get)(&current);
        let mut best = (f64::NEG_INFINITY, start);
        for v in (p.coarse)(start) {
            let s = try_value(v, &mut rows)?;
            if s > best.0 {
                best = (s, v);
            }
        }
        if p.refine {
            for v in [
                best.1 / std::f64::consts::SQRT_2,
                best.1 * std::f64::consts::SQRT_2,
            ] {
                let s = try_value(v, &mut rows)?;
                if s > best.0 {
                    best = (s, v);
                }
            }
        }
        (p.set)(&mut current, best.1);
        chosen.push((p.method.name().to_string(), p.key.to_string(), best.1));
    }
    bar.finish_and_clear();
    Ok(TuneReport {
        rows,
        chosen,
        images,
        pinv_psnr,
    })
}

impl TuneReport {
    /// One line for each tuned method of which no setting beat A⁺y on the tuning images.
    pub fn below_pinv(&self) -> Vec<String> {
        let Some(floor) = self.pinv_psnr else {
            return Vec::new();
        };
        let mut methods: Vec<&str> = self.rows.iter().map(|r| r.method.as_str()).collect();
        methods.dedup();
        methods
            .into_iter()
            .filter_map(|m| {
                let best = self
                    .rows
                    .iter()
                    .filter(|r| r.method == m)
                    .max_by(|a, b| a.psnr.total_cmp(&b.psnr))?;
                (best.psnr <= floor).then(|| {
                    format!(
                        "{m}: no setting tried beats A⁺y on the {} tuning images (best {:.2} dB \
                         at {}, A⁺y {floor:.2} dB)",
                        self.images.len(),
                        best.psnr,
                        best.setting
                    )
                })
            })
            .collect()
    }

    /// The search as a Markdown table, the chosen settings marked.
    pub fn table(&self) -> String {
        let mut t =
            String::from("| method | setting | PSNR | SSIM | chosen |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let mark = self
                .chosen
                .iter()
                .any(|(m, k, v)| *m == r.method && r.setting == format!("{k} = {v:.4}"));
            t.push_str(&format!(
                "| {} | {} | {:.2} | {:.4} | {} |\n",
                r.method,
                r.setting,
                r.psnr,
                r.ssim,
                if mark { "✓" } else { "" }
            ));
        }
        t
    }

    /// `original` (the file's text) with the chosen values written in, comments and layout
    /// kept, each changed key noted.
    pub fn tuned_text(&self, original: &str, source: &Path) -> Result<String> {
        let mut doc: toml_edit::DocumentMut = original
            .parse()
            .with_context(|| format!("{}: not TOML", source.display()))?;
        for (section, key, value) in &self.chosen {
            let rounded = (value * 1e4).round() / 1e4;
            if !doc.contains_table(section) {
                doc[section.as_str()] = toml_edit::table();
            }
            doc[section.as_str()][key.as_str()] = toml_edit::value(rounded);
            if let Some(mut k) = doc[section.as_str()]
                .as_table_mut()
                .and_then(|t| t.key_mut(key))
            {
                k.leaf_decor_mut().set_prefix(format!(
                    "# tuned by `sample tune` on {} train images\n",
                    self.images.len()
                ));
            }
        }
        Ok(doc.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, setting: &str, psnr: f64) -> TuneRow {
        TuneRow {
            method: method.into(),
            setting: setting.into(),
            psnr,
            ssim: 0.5,
        }
    }

    #[test]
    fn a_method_that_never_beats_the_pseudo_inverse_is_named_in_one_line() {
        let report = TuneReport {
            rows: vec![
                row("dps", "zeta = 0.2500", 9.5),
                row("dps", "zeta = 0.5000", 10.0),
                row("diffpir", "lambda = 1.0000", 23.1),
            ],
            chosen: Vec::new(),
            images: vec![1, 2, 3, 4],
            pinv_psnr: Some(11.4),
        };
        let lines = report.below_pinv();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("dps: no setting tried beats A⁺y on the 4 tuning images")
                && lines[0].contains("best 10.00 dB at zeta = 0.5000, A⁺y 11.40 dB"),
            "{}",
            lines[0]
        );
        let no_floor = TuneReport {
            pinv_psnr: None,
            ..report
        };
        assert!(no_floor.below_pinv().is_empty());
    }
}
