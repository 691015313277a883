//! `sample --config FILE`: a reconstruction experiment (see `tweedie_sample::recon`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use tweedie_core::checkpoint;
use tweedie_core::rng::Rng;
use tweedie_datasets::{DatasetKind, Split};
use tweedie_sample::output::{grid_png, npy_bytes, to_u8_nhwc, write_file};
use tweedie_sample::recon::config::METHODS;
use tweedie_sample::recon::{
    MethodReport, MethodRun, Models, Problem, ReconFile, method_steps, panel_png, reconstruct,
    score,
};

use crate::{Args, progress_bar};

pub fn run_file(path: &Path, a: &Args) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let table = toml::from_str::<toml::Table>(&text).unwrap_or_default();
    if table.contains_key("gmm") {
        return run_gmm(path, &text, a);
    }
    if table.contains_key("class") {
        return run_class(path, &text, a);
    }
    let mut file = ReconFile::parse(&text)
        .with_context(|| format!("{}: invalid experiment file", path.display()))?;
    file.validate()
        .with_context(|| format!("{}: invalid experiment file", path.display()))?;
    if let Some(c) = &a.checkpoint {
        file.checkpoint = c.clone();
    }
    if let Some(n) = a.n_images {
        if n == 0 {
            bail!("--n-images must be positive");
        }
        file.data.count = n;
        if let Some(ix) = &mut file.data.indices {
            ix.truncate(n);
        }
    }
    let seed = a.seed.unwrap_or(file.seed);
    let (_, out) = stem_and_out(path, a, &file.out);

    // The prior.
    let dir = checkpoint::resolve(&file.checkpoint)?;
    let meta = checkpoint::read_meta(&dir)?;
    let schedule = meta.schedule.build()?;
    let device = a.backend.device()?;
    let grad_device = device.clone().autodiff();
    let raw = file.run.raw_weights || a.raw_weights;
    let (plain, weights) = checkpoint::load_for_inference(&dir, &meta, &device, raw)?;
    // Guidance differentiates through the network, never through its weights; `valid` also
    // switches dropout off on the autodiff device.
    let grad_model = plain.valid().to_device(&grad_device).no_grad();

    // The images and their observation.
    let kind: DatasetKind = file
        .data
        .dataset
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{}: data.dataset: {e}", path.display()))?;
    let split: Split = file
        .data
        .split
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{}: data.split: {e}", path.display()))?;
    let data_dir = tweedie_datasets::resolve_dir(kind, file.data.dir.as_deref())?;
    let set = tweedie_datasets::load(kind, split, &data_dir)?;
    let want = [
        meta.unet.in_channels,
        meta.unet.resolution,
        meta.unet.resolution,
    ];
    if set.shape != want {
        bail!(
            "{}: the checkpoint's model takes {:?} images, {} has {:?}",
            dir.display(),
            want,
            kind.name(),
            set.shape
        );
    }
    let indices: Vec<usize> = match &file.data.indices {
        Some(ix) => ix.clone(),
        None => (file.data.start..file.data.start + file.data.count).collect(),
    };
    if let Some(bad) = indices.iter().find(|i| **i >= set.len()) {
        bail!(
            "{}: image index {bad} is out of range ({} has {} images)",
            path.display(),
            kind.name(),
            set.len()
        );
    }
    let truth: Vec<f32> = indices
        .iter()
        .flat_map(|i| set.image(*i).iter().map(|b| *b as f32 / 127.5 - 1.0))
        .collect();
    let problem = Problem::observe(
        &file,
        set.shape,
        indices,
        truth,
        &mut Rng::derive(seed, 1),
        &device,
    )?;

    // The methods, each with its own random stream (adding one does not change another's draws).
    let models = Models {
        plain: &plain,
        grad: &grad_model,
        device: device.clone(),
        grad_device,
    };
    let chunks = problem_chunks(&file, problem.indices.len());
    let total: usize = file
        .run
        .methods
        .iter()
        .map(|m| method_steps(&file, m) * chunks)
        .sum();
    let bar = progress_bar(
        total,
        a.quiet,
        "{spinner} {msg:12} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta}",
    );
    let mut runs: Vec<MethodRun> = Vec::new();
    for m in &file.run.methods {
        bar.set_message(m.clone());
        let stream = 100 + METHODS.iter().position(|x| x == m).unwrap_or(0) as u64;
        let mut rng = Rng::derive(seed, stream);
        let run = reconstruct(&file, m, &problem, &models, &schedule, &mut rng, || {
            bar.inc(1)
        })
        .with_context(|| format!("method {m}"))?;
        runs.push(run);
    }
    bar.finish_and_clear();

    // Scores, panels and samples.
    std::fs::create_dir_all(out.join("panels"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut reports: BTreeMap<String, MethodReport> = BTreeMap::new();
    let [c, h, w] = problem.shape;
    for run in &runs {
        reports.insert(
            run.name.clone(),
            score(run, &problem, method_steps(&file, &run.name)),
        );
        let n = run.values.len() / (c * h * w);
        let x = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(run.values.clone(), [n, c, h, w]),
            &device,
        );
        let (bytes, shape) = to_u8_nhwc(x);
        let mdir = out.join(&run.name);
        std::fs::create_dir_all(&mdir).with_context(|| format!("creating {}", mdir.display()))?;
        write_file(&mdir.join("samples.npy"), &npy_bytes(&bytes, &shape))?;
        write_file(
            &mdir.join("grid.png"),
            &grid_png(&bytes, shape, run.samples.max(1) * 4)?,
        )?;
    }
    let pinv = runs.iter().find(|r| r.name == "pinv");
    for (i, index) in problem.indices.iter().enumerate() {
        let png = panel_png(&file, &problem, i, &runs, pinv, file.run.show_samples)?;
        write_file(&out.join("panels").join(format!("{index:05}.png")), &png)?;
    }
    let rows: Vec<&String> = file.run.methods.iter().filter(|m| *m != "pinv").collect();
    let json = serde_json::json!({
        "experiment": path.display().to_string(),
        "checkpoint": dir.display().to_string(),
        "weights": weights.name(),
        "step": meta.step,
        "dataset": kind.name(),
        "split": file.data.split,
        "images": problem.indices,
        "operator": file.operator(h, w)?.name(),
        "noise": file.noise_model()?.name(),
        "seed": seed,
        "backend": a.backend.name(),
        "panel_rows": rows,
        "panel_columns": ["truth", "observation", "pinv", "samples…", "posterior mean", "posterior std"],
        "methods": reports,
    });
    write_file(
        &out.join("metrics.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;

    println!(
        "{} on {} {} images, {} ({} weights, step {}):",
        file.operator(h, w)?.name(),
        problem.indices.len(),
        kind.name(),
        file.noise_model()?.name(),
        weights.name(),
        meta.step
    );
    println!(
        "{:<12} {:>10} {:>9} {:>10} {:>9} {:>6} {:>6} {:>9}",
        "method", "PSNR", "SSIM", "PSNR(mean)", "SSIM(mean)", "NFE", "VJP", "seconds"
    );
    for m in &file.run.methods {
        let r = &reports[m];
        println!(
            "{:<12} {:>10.2} {:>9.4} {:>10.2} {:>9.4} {:>6} {:>6} {:>9.1}",
            m,
            r.psnr_mean,
            r.ssim_mean,
            r.psnr_posterior_mean,
            r.ssim_posterior_mean,
            r.nfe,
            r.vjps,
            r.seconds
        );
    }
    println!(
        "wrote {} and {}",
        out.join("metrics.json").display(),
        out.join("panels").display()
    );
    Ok(())
}

/// The experiment file's stem, and the output directory: `--out`, else the file's `out`, else
/// `out/<stem>`.
fn stem_and_out(path: &Path, a: &Args, file_out: &Option<PathBuf>) -> (String, PathBuf) {
    let stem = path
        .file_stem()
        .map_or("experiment".into(), |s| s.to_string_lossy().to_string());
    let out = a
        .out
        .clone()
        .or(file_out.clone())
        .unwrap_or_else(|| PathBuf::from("out").join(&stem));
    (stem, out)
}

/// How many batches the images are split into.
fn problem_chunks(file: &ReconFile, images: usize) -> usize {
    let per_batch = (file.run.batch_size / file.run.samples).max(1);
    images.div_ceil(per_batch)
}

/// `sample --config` on a Gaussian-mixture benchmark file (one with a `[gmm]` table).
pub fn run_gmm(path: &Path, text: &str, a: &Args) -> Result<()> {
    use tweedie_sample::gmm_bench::{GmmFile, score};
    let mut file = GmmFile::parse(text)
        .with_context(|| format!("{}: invalid experiment file", path.display()))?;
    if let Some(s) = a.seed {
        file.run.seed = s;
    }
    let problem = file
        .build()
        .with_context(|| format!("{}: invalid experiment file", path.display()))?;
    let (stem, out) = stem_and_out(path, a, &file.out);
    let d = problem.prior.dim();
    let mut rows = Vec::new();
    let mut scatter: Vec<(String, Vec<f64>)> = Vec::new();
    let n_runs: usize = file
        .run
        .methods
        .iter()
        .map(|m| {
            if matches!(m.as_str(), "tds" | "fk") {
                file.run.particles.len()
            } else {
                1
            }
        })
        .sum();
    let bar = progress_bar(
        n_runs,
        a.quiet,
        "{spinner} {msg:16} [{bar:30}] {pos}/{len} runs ETA {eta}",
    );
    for m in &file.run.methods {
        let ks: Vec<usize> = if matches!(m.as_str(), "tds" | "fk") {
            file.run.particles.clone()
        } else {
            vec![1]
        };
        for k in ks {
            let stream = 1000
                * (1 + tweedie_sample::gmm_bench::METHODS
                    .iter()
                    .position(|x| x == m)
                    .unwrap_or(0) as u64)
                + k as u64;
            bar.set_message(format!("{m} K={k}"));
            let draws = problem.draw(
                &file,
                m,
                k,
                file.run.n_samples,
                Rng::derive(file.run.seed, stream).next_u64(),
            )?;
            let row = score(&problem, &file, m, k, &draws);
            let line = serde_json::to_string(&row)?;
            bar.suspend(|| eprintln!("{line}"));
            bar.inc(1);
            rows.push(row);
            let kmax = file.run.particles.iter().copied().max().unwrap_or(1);
            if d == 2 && (k == kmax || !matches!(m.as_str(), "tds" | "fk")) {
                let label = if matches!(m.as_str(), "tds" | "fk") {
                    format!("{m} (K = {k})")
                } else {
                    m.clone()
                };
                scatter.push((label, draws.samples.clone()));
            }
        }
    }
    bar.finish_and_clear();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let title = format!("{stem}: d = {d}, d_y = {}", problem.obs.dy());
    write_file(
        &out.join("error_vs_k.png"),
        &tweedie_sample::plot::error_vs_k_png(&rows, &title)?,
    )?;
    if d == 2 {
        let exact = problem
            .posterior
            .sample(file.run.n_samples, &mut Rng::derive(file.run.seed, 11));
        scatter.insert(0, ("exact posterior".into(), exact));
        write_file(
            &out.join("scatter.png"),
            &tweedie_sample::plot::scatter_png(&problem.posterior, &scatter)?,
        )?;
    }
    let json = serde_json::json!({"log_evidence": problem.posterior.log_evidence, "results": rows});
    write_file(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    eprintln!("wrote {} and its plots", out.join("results.json").display());
    println!("{json}");
    Ok(())
}

/// `sample --config` on a class-conditional file (one with a `[class]` table).
pub fn run_class(path: &Path, text: &str, a: &Args) -> Result<()> {
    use tweedie_sample::class_cond::{ClassFile, ClassModels, ClassRow, draw, predict};
    let mut file = ClassFile::parse(text)
        .with_context(|| format!("{}: invalid experiment file", path.display()))?;
    if let Some(c) = &a.checkpoint {
        file.checkpoint = c.clone();
    }
    let seed = a.seed.unwrap_or(file.seed);
    let (_, out) = stem_and_out(path, a, &file.out);
    let dir = checkpoint::resolve(&file.checkpoint)?;
    let meta = checkpoint::read_meta(&dir)?;
    let schedule = meta.schedule.build()?;
    let device = a.backend.device()?;
    let grad_device = device.clone().autodiff();
    let (unet, _) = checkpoint::load_for_inference(&dir, &meta, &device, a.raw_weights)?;
    let unet_grad = unet.valid().to_device(&grad_device).no_grad();
    let (classifier, cmeta) =
        tweedie_sample::class_likelihood::load_classifier(&file.classifier, &device)?;
    let classifier_grad = classifier.valid().to_device(&grad_device).no_grad();
    let shape = [
        meta.unet.in_channels,
        meta.unet.resolution,
        meta.unet.resolution,
    ];
    if [
        cmeta.config.in_channels,
        cmeta.config.resolution,
        cmeta.config.resolution,
    ] != shape
    {
        bail!(
            "{}: the classifier takes {:?} images, the diffusion model makes {:?}",
            file.classifier.display(),
            [
                cmeta.config.in_channels,
                cmeta.config.resolution,
                cmeta.config.resolution
            ],
            shape
        );
    }
    let models = ClassModels {
        unet: &unet,
        unet_grad: &unet_grad,
        classifier: &classifier,
        classifier_grad: &classifier_grad,
        device: device.clone(),
        grad_device,
    };
    let targets = file.targets();
    let mut runs: Vec<(String, usize)> = Vec::new();
    for m in &file.class.methods {
        if m == "dps" {
            runs.push((m.clone(), 1));
        } else {
            runs.extend(file.class.particles.iter().map(|k| (m.clone(), *k)));
        }
    }
    let bar = progress_bar(
        runs.len(),
        a.quiet,
        "{spinner} {msg:12} [{bar:30}] {pos}/{len} runs ETA {eta}",
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    for (i, (m, k)) in runs.iter().enumerate() {
        bar.set_message(format!("{m} K={k}"));
        let r = draw(
            &file,
            m,
            *k,
            &models,
            &schedule,
            shape,
            Rng::derive(seed, i as u64).next_u64(),
        )?;
        let pred = predict(&classifier, &r.values, shape, &device);
        let right = pred.iter().zip(&targets).filter(|(p, t)| p == t).count();
        let row = ClassRow {
            method: m.clone(),
            particles: *k,
            accuracy: right as f64 / targets.len() as f64,
            ess_mean: r.ess_mean,
            nfe: r.nfe,
            seconds: r.seconds,
        };
        let line = serde_json::to_string(&row)?;
        bar.suspend(|| eprintln!("{line}"));
        bar.inc(1);
        let x = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(
                r.values.clone(),
                [targets.len(), shape[0], shape[1], shape[2]],
            ),
            &device,
        );
        let (bytes, s) = to_u8_nhwc(x);
        let name = format!("{m}-k{k}");
        write_file(&out.join(format!("{name}.npy")), &npy_bytes(&bytes, &s))?;
        write_file(
            &out.join(format!("{name}.png")),
            &grid_png(&bytes, s, file.class.per_class)?,
        )?;
        rows.push(row);
    }
    bar.finish_and_clear();
    let json = serde_json::json!({
        "checkpoint": dir.display().to_string(),
        "classifier": file.classifier.display().to_string(),
        "classifier_test_accuracy": cmeta.test_accuracy,
        "targets": targets,
        "steps": file.class.steps,
        "results": rows,
    });
    write_file(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    println!(
        "{:<6} {:>4} {:>9} {:>8} {:>6} {:>9}",
        "method", "K", "accuracy", "ESS", "NFE", "seconds"
    );
    for r in &rows {
        println!(
            "{:<6} {:>4} {:>9.3} {:>8} {:>6} {:>9.1}",
            r.method,
            r.particles,
            r.accuracy,
            r.ess_mean.map_or("-".into(), |e| format!("{e:.2}")),
            r.nfe,
            r.seconds
        );
    }
    println!(
        "wrote {} (grids: one row per requested class)",
        out.join("results.json").display()
    );
    Ok(())
}

/// `sample fid`: classifier-FID of a sample set against a dataset split.
/// The classifier and the reference images `r` names, with a label such as "mnist test".
pub fn load_reference(
    r: &crate::ReferenceArgs,
    device: &burn::prelude::Device,
) -> Result<(
    tweedie_core::classifier::Classifier,
    tweedie_core::classifier::ClassifierMeta,
    tweedie_datasets::ImageSet,
    String,
)> {
    let (classifier, meta) =
        tweedie_sample::class_likelihood::load_classifier(&r.classifier, device)?;
    let kind: DatasetKind = r
        .dataset
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--dataset: {e}"))?;
    let split: Split = r
        .split
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--split: {e}"))?;
    let dir = tweedie_datasets::resolve_dir(kind, r.data_dir.as_deref())?;
    let mut set = tweedie_datasets::load(kind, split, &dir)?;
    if r.n_reference > 0 {
        set.truncate(r.n_reference);
    }
    Ok((
        classifier,
        meta,
        set,
        format!("{} {}", kind.name(), r.split),
    ))
}

pub fn run_fid(f: &crate::FidArgs, backend: tweedie_core::device::BackendKind) -> Result<()> {
    let bytes = std::fs::read(&f.samples)
        .with_context(|| format!("{}: cannot read", f.samples.display()))?;
    let (data, shape) = tweedie_sample::output::parse_npy_u8(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", f.samples.display()))?;
    if shape[0] < 2 {
        bail!(
            "{}: need at least 2 samples, found {}",
            f.samples.display(),
            shape[0]
        );
    }
    let device = backend.device()?;
    let (classifier, meta, set, label) = load_reference(&f.reference, &device)?;
    let cfg = meta.config;
    if [shape[1], shape[2], shape[3]] != [cfg.resolution, cfg.resolution, cfg.in_channels] {
        bail!(
            "{}: images are {}×{}×{}, the classifier takes {}×{}×{}",
            f.samples.display(),
            shape[1],
            shape[2],
            shape[3],
            cfg.resolution,
            cfg.resolution,
            cfg.in_channels
        );
    }
    let reference =
        tweedie_sample::fid::FidReference::new(&classifier, &set, cfg.features, &device);
    let fid = reference.fid(&data, shape, &device);
    println!(
        "{}",
        serde_json::json!({
            "samples": f.samples.display().to_string(),
            "n_samples": shape[0],
            "reference": label,
            "n_reference": set.len(),
            "classifier_fid": fid,
        })
    );
    Ok(())
}
