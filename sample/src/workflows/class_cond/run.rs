//! A class-conditional file, run end to end: each method at each K draws one image per requested
//! class, scored by the guiding classifier and by the file's independent judge. [`run`] returns a
//! [`ClassReport`];
//! [`ClassReport::write`] writes `<method>-k<K>.{npy,png}` and `results.json`.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use tweedie_core::device::BackendKind;
use tweedie_core::rng::Rng;

use super::{ClassFile, ClassModels, ClassRow, draw, predict};
use crate::catalog::Method;
use crate::class_likelihood::load_classifier;
use crate::output::{grid_png, npy_bytes, u8_nhwc, write_file};
use crate::prior::Prior;

/// How to run a class-conditional file (what is not in it).
#[derive(Debug, Clone)]
pub struct ClassOptions {
    pub backend: BackendKind,
    pub raw_weights: bool,
    pub quiet: bool,
}

/// What a run produced.
pub struct ClassReport {
    /// One row per (method, K), in run order.
    pub rows: Vec<ClassRow>,
    /// The images of each row, `[targets, C, H, W]` in [−1, 1].
    pub images: Vec<Vec<f32>>,
    pub shape: [usize; 3],
    pub per_class: usize,
    /// `results.json`.
    pub record: serde_json::Value,
}

/// Runs every method of `file` at every particle count.
pub fn run(file: &ClassFile, opts: &ClassOptions) -> Result<ClassReport> {
    let device = opts.backend.device()?;
    let grad_device = device.clone().autodiff();
    let prior = Prior::load(&file.checkpoint, &device, opts.raw_weights)?;
    let unet_grad = prior.grad_model(&grad_device);
    let (classifier, cmeta) = load_classifier(&file.classifier, &device)?;
    let classifier_grad = classifier.valid().to_device(&grad_device).no_grad();
    let shape = prior.image_shape();
    let fits = |path: &Path, meta: &tweedie_core::classifier::ClassifierMeta| -> Result<()> {
        let c = &meta.config;
        let cshape = [c.in_channels, c.resolution, c.resolution];
        if cshape != shape {
            bail!(
                "{}: the classifier takes {:?} images, the diffusion model makes {:?}",
                path.display(),
                cshape,
                shape
            );
        }
        Ok(())
    };
    fits(&file.classifier, &cmeta)?;
    let judge = match &file.judge {
        Some(path) => {
            let (net, meta) = load_classifier(path, &device)?;
            fits(path, &meta)?;
            Some((net, meta))
        }
        None => None,
    };
    let models = ClassModels {
        unet: &prior.model,
        unet_grad: &unet_grad,
        classifier: &classifier,
        classifier_grad: &classifier_grad,
        device: device.clone(),
        grad_device,
    };
    let targets = file.targets();
    let settings = file.settings();
    let mut runs: Vec<(Method, usize)> = Vec::new();
    for &m in &file.class.methods {
        let ks = settings.particles(m).unwrap_or(&[1]);
        runs.extend(ks.iter().map(|k| (m, *k)));
    }
    let bar = crate::progress::bar(
        runs.len(),
        opts.quiet,
        "{spinner} {msg:12} [{bar:30}] {pos}/{len} runs ETA {eta}",
    );
    let mut rows = Vec::new();
    let mut images = Vec::new();
    for (i, &(m, k)) in runs.iter().enumerate() {
        bar.set_message(format!("{} K={k}", m.name()));
        let r = draw(
            file,
            m,
            k,
            &models,
            &prior.schedule,
            shape,
            Rng::derive(file.seed, i as u64).next_u64(),
        )?;
        let accuracy = |net| {
            let pred = predict(net, &r.values, shape, &device);
            let right = pred.iter().zip(&targets).filter(|(p, t)| p == t).count();
            right as f64 / targets.len() as f64
        };
        let row = ClassRow {
            method: m.name().to_string(),
            particles: k,
            accuracy: accuracy(&classifier),
            judge_accuracy: judge.as_ref().map(|(net, _)| accuracy(net)),
            ess_mean: r.ess_mean,
            steps: settings.steps(m),
            nfe: r.nfe,
            seconds: r.seconds,
        };
        let line = serde_json::to_string(&row)?;
        bar.suspend(|| eprintln!("{line}"));
        bar.inc(1);
        rows.push(row);
        images.push(r.values);
    }
    bar.finish_and_clear();
    let record = serde_json::json!({
        "checkpoint": prior.dir.display().to_string(),
        "classifier": file.classifier.display().to_string(),
        "classifier_test_accuracy": cmeta.test_accuracy,
        "judge": file.judge.as_ref().map(|p| p.display().to_string()),
        "judge_test_accuracy": judge.as_ref().map(|(_, m)| m.test_accuracy),
        "headline": if judge.is_some() { "judge_accuracy" } else { "accuracy" },
        "targets": targets,
        "results": rows,
    });
    Ok(ClassReport {
        rows,
        images,
        shape,
        per_class: file.class.per_class,
        record,
    })
}

impl ClassReport {
    /// Writes `out/<method>-k<K>.npy` and `.png` (one grid row per requested class) for every
    /// row, and `out/results.json`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
        let [c, h, w] = self.shape;
        for (row, values) in self.rows.iter().zip(&self.images) {
            let (bytes, s) = u8_nhwc(values, [values.len() / (c * h * w), c, h, w]);
            let name = format!("{}-k{}", row.method, row.particles);
            write_file(&out.join(format!("{name}.npy")), &npy_bytes(&bytes, &s))?;
            write_file(
                &out.join(format!("{name}.png")),
                &grid_png(&bytes, s, self.per_class)?,
            )?;
        }
        write_file(
            &out.join("results.json"),
            serde_json::to_string_pretty(&self.record)?.as_bytes(),
        )
    }

    /// The results as a text table.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{:<6} {:>4} {:>9} {:>9} {:>8} {:>6} {:>9}\n",
            "method", "K", "judge", "guide", "ESS", "NFE", "seconds"
        );
        for r in &self.rows {
            t.push_str(&format!(
                "{:<6} {:>4} {:>9} {:>9.3} {:>8} {:>6} {:>9.1}\n",
                r.method,
                r.particles,
                r.judge_accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                r.accuracy,
                r.ess_mean.map_or("-".into(), |e| format!("{e:.2}")),
                r.nfe,
                r.seconds
            ));
        }
        t
    }
}
