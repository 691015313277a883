//! End-to-end behaviour of the trainer on a tiny U-Net and synthetic 8×8 images (CPU).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use tweedie_core::checkpoint;
use tweedie_core::device::{BackendKind, DeviceSpec};
use tweedie_core::rng::Rng;
use tweedie_datasets::ImageSet;
use tweedie_sample::experiment::ExperimentFile;
use tweedie_train::config::TrainFile;
use tweedie_train::trainer::{self, RunOptions, lr_at};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// 64 random 1×8×8 "images".
fn data() -> ImageSet {
    let mut r = Rng::new(3);
    let pixels = (0..64 * 64).map(|_| r.below(256) as u8).collect();
    ImageSet {
        shape: [1, 8, 8],
        pixels,
        labels: vec![0; 64],
    }
}

fn plan(run_dir: &std::path::Path, steps: usize, extra: &str) -> tweedie_train::config::Plan {
    let text = format!(
        "kind = \"diffusion-training\"\nseed = 5\nrun_dir = \"{}\"\n[data]\ndataset = \"mnist\"\n[model]\npreset = \"tiny\"\nch_mult = [1, 2]\ndropout = 0.1\n\
         [diffusion]\ntimesteps = 50\n[train]\nsteps = {steps}\nbatch_size = 4\nlr = 1e-3\nwarmup_steps = 3\n\
         ema_decay = 0.9\ncheckpoint_every = 2\nkeep_last = 2\nlog_every = 1\n{extra}",
        run_dir.display()
    );
    let mut p = TrainFile::parse(&text).unwrap().resolve("t").unwrap();
    p.unet.resolution = 8; // synthetic 8×8 data
    p
}

fn opts(resume: Option<PathBuf>) -> RunOptions {
    RunOptions {
        backend: BackendKind::Flex,
        devices: Vec::new(),
        nodes: Default::default(),
        time_limit: None,
        resume,
        restart: false,
        progress: false,
        eval_data: None,
        score_fid: false,
        fid_cache: None,
    }
}

struct Collect(Vec<f32>);
impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.extend(tweedie_core::host_values(p.val()));
    }
}

fn weights<M: Module>(m: &M) -> Vec<f32> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let straight = trainer::train(&plan(&a, 8, ""), &data(), &opts(None)).unwrap();
    let first = trainer::train(&plan(&b, 4, ""), &data(), &opts(None)).unwrap();
    let second = trainer::train(&plan(&b, 8, ""), &data(), &opts(Some(b.clone()))).unwrap();
    assert_eq!(second.first_step, 4);
    let joined: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(straight.losses, joined, "per-step losses");
    assert_eq!(
        weights(&straight.model),
        weights(&second.model),
        "final weights"
    );
    // EMA weights too.
    let ema = |dir: &PathBuf| {
        let d = checkpoint::resolve(dir).unwrap();
        let meta = checkpoint::read_meta(&d).unwrap();
        weights(
            &checkpoint::load_module(meta.unet.init(&Device::flex()), &d.join("ema.bpk")).unwrap(),
        )
    };
    assert_eq!(ema(&a), ema(&b));
    // keep_last = 2: steps 6 and 8 remain.
    let mut names: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    assert_eq!(names, ["step-00000006", "step-00000008"]);
    let metrics = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        8,
        "a resumed run continues the log without duplicates"
    );
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_loss_falls_and_seeds_reproduce() {
    let (a, b) = (tmp("fall-a"), tmp("fall-b"));
    let p = plan(&a, 30, "");
    let r1 = trainer::train(&p, &data(), &opts(None)).unwrap();
    let r2 = trainer::train(&plan(&b, 30, ""), &data(), &opts(None)).unwrap();
    assert_eq!(r1.losses, r2.losses, "same seed, same losses");
    let head: f64 = r1.losses[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = r1.losses[25..].iter().sum::<f64>() / 5.0;
    assert!(tail < 0.8 * head, "loss should fall: {head} -> {tail}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint() {
    let dir = tmp("nan");
    let mut p = plan(&dir, 50, "");
    p.file.train.lr = 1e30;
    p.file.train.warmup_steps = 0;
    p.file.train.grad_clip = 0.0;
    p.file.train.checkpoint_every = 1;
    let err = trainer::train(&p, &data(), &opts(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at step") && (err.contains("NaN") || err.contains("inf")),
        "{err}"
    );
    let step: usize = err
        .split("at step ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let good = checkpoint::resolve(&dir).unwrap();
    let meta = checkpoint::read_meta(&good).unwrap();
    assert!(
        meta.step < step,
        "the newest checkpoint ({}) predates the bad step {step}",
        meta.step
    );
    checkpoint::load_unet(&good, &meta, &Device::flex()).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_rejects_another_model_and_damaged_checkpoints() {
    let dir = tmp("mismatch");
    trainer::train(&plan(&dir, 2, ""), &data(), &opts(None)).unwrap();
    let mut other = plan(&dir, 4, "");
    other.unet.ch_mult = vec![1];
    let e = trainer::train(&other, &data(), &opts(Some(dir.clone())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs"), "{e}");
    // Truncate the weights: a clear error naming the file.
    let step = checkpoint::resolve(&dir).unwrap();
    let w = step.join("model.bpk");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = trainer::train(&plan(&dir, 4, ""), &data(), &opts(Some(dir.clone())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.bpk"), "{e}");
    std::fs::write(step.join("checkpoint.json"), "{").unwrap();
    let e = checkpoint::read_meta(&step).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint.json") && e.contains("unreadable"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn warmup_is_linear_then_flat() {
    assert_eq!(lr_at(1e-3, 0, 0), 1e-3);
    assert!((lr_at(1e-3, 4, 0) - 2.5e-4).abs() < 1e-15);
    assert!((lr_at(1e-3, 4, 3) - 1e-3).abs() < 1e-15);
    assert_eq!(lr_at(1e-3, 4, 100), 1e-3);
}

/// A preconditioned run (`[model] precondition`, `loss_weighting = "precond"`) resumes bit for
/// bit, stores the training pixels' moments in its checkpoint, and a reloaded checkpoint predicts
/// the same ε as the model that wrote it.
#[test]
fn preconditioned_runs_resume_exactly_and_reload_their_preconditioning() {
    let p = |dir: &std::path::Path, steps| {
        let text = format!(
            "kind = \"diffusion-training\"\nseed = 5\nrun_dir = \"{}\"\n[data]\ndataset = \"mnist\"\n[model]\npreset = \"tiny\"\n\
             precondition = true\n[diffusion]\ntimesteps = 50\n[train]\nsteps = {steps}\n\
             batch_size = 4\nlr = 1e-3\nloss_weighting = \"precond\"\ncheckpoint_every = 2\n\
             log_every = 1\nema_decay = 0\n",
            dir.display()
        );
        let mut p = TrainFile::parse(&text).unwrap().resolve("t").unwrap();
        p.unet.resolution = 8;
        p
    };
    let (a, b) = (tmp("pre-straight"), tmp("pre-resumed"));
    let straight = trainer::train(&p(&a, 6), &data(), &opts(None)).unwrap();
    trainer::train(&p(&b, 3), &data(), &opts(None)).unwrap();
    let second = trainer::train(&p(&b, 6), &data(), &opts(Some(b.clone()))).unwrap();
    assert_eq!(straight.losses[3..], second.losses[..]);
    assert_eq!(weights(&straight.model), weights(&second.model));

    let d = checkpoint::resolve(&a).unwrap();
    let meta = checkpoint::read_meta(&d).unwrap();
    let pre = meta
        .unet
        .precondition
        .clone()
        .expect("stored in the checkpoint");
    let px: Vec<f64> = data()
        .pixels
        .iter()
        .map(|&v| v as f64 / 127.5 - 1.0)
        .collect();
    let mean = px.iter().sum::<f64>() / px.len() as f64;
    let std = (px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt();
    assert!((pre.mean - mean).abs() < 1e-9 && (pre.std - std).abs() < 1e-9);

    use tweedie_core::denoiser::Denoiser;
    let dev = Device::flex();
    let (loaded, _) = checkpoint::load_for_inference(&d, &meta, &dev, true).unwrap();
    let x = Rng::new(9).normal_tensor([2, 1, 8, 8], &dev);
    let t = [1, 45];
    let want = tweedie_core::host_values(straight.model.valid().eps(x.clone(), &t));
    let got = tweedie_core::host_values(loaded.eps(x, &t));
    assert_eq!(got, want);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn sharded_training_follows_the_whole_batch_and_reproduces_with_dropout() {
    // No dropout: 2 shards take the same steps as 1, up to floating-point summation order.
    let (a, b) = (tmp("shard-1"), tmp("shard-2"));
    let no_dropout = |dir: &PathBuf, extra: &str| {
        let mut p = plan(dir, 4, extra);
        p.unet.dropout = 0.0;
        p
    };
    let one = trainer::train(&no_dropout(&a, ""), &data(), &opts(None)).unwrap();
    let two = trainer::train(&no_dropout(&b, "shards = 2"), &data(), &opts(None)).unwrap();
    close_losses(&one.losses, &two.losses);
    let err = max_abs_diff(&weights(&one.model), &weights(&two.model));
    assert!(err < 1e-3, "weights differ by {err}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
    // Dropout 0.1 (the plan's): each shard draws its masks from its own stream, so the run is
    // still a function of the seed, and a resumed run is bit-identical.
    let (c, d, e) = (tmp("shard-c"), tmp("shard-d"), tmp("shard-e"));
    let straight = trainer::train(&plan(&c, 4, "shards = 2"), &data(), &opts(None)).unwrap();
    let again = trainer::train(&plan(&d, 4, "shards = 2"), &data(), &opts(None)).unwrap();
    assert_eq!(straight.losses, again.losses);
    assert_eq!(weights(&straight.model), weights(&again.model));
    let first = trainer::train(&plan(&e, 2, "shards = 2"), &data(), &opts(None)).unwrap();
    let second =
        trainer::train(&plan(&e, 4, "shards = 2"), &data(), &opts(Some(e.clone()))).unwrap();
    let joined: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(straight.losses, joined);
    assert_eq!(weights(&straight.model), weights(&second.model));
    // The masks do depend on the shard stream: a different seed, different losses.
    assert_ne!(straight.losses, one.losses);
    for dir in [c, d, e] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn close_losses(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "losses {x} vs {y}");
    }
}

#[test]
fn training_across_two_cpu_devices_follows_one_device_and_resumes_exactly() {
    // Two burn devices in one process: flex and ndarray, each with half of every batch, the
    // gradients summed on flex and clipped (grad_clip = 1) before Adam.
    let two_devices = |resume: Option<PathBuf>| RunOptions {
        devices: DeviceSpec::parse_list("flex,ndarray").unwrap(),
        nodes: Default::default(),
        ..opts(resume)
    };
    let no_dropout = |dir: &PathBuf| {
        let mut p = plan(dir, 4, "grad_clip = 1.0");
        p.unet.dropout = 0.0;
        p
    };
    // No dropout: the same steps as one device, up to floating-point summation order.
    let (a, b) = (tmp("dev-1"), tmp("dev-2"));
    let one = trainer::train(&no_dropout(&a), &data(), &opts(None)).unwrap();
    let two = trainer::train(&no_dropout(&b), &data(), &two_devices(None)).unwrap();
    close_losses(&one.losses, &two.losses);
    let err = max_abs_diff(&weights(&one.model), &weights(&two.model));
    assert!(err < 1e-3, "weights differ by {err}");
    // The trained model is back on the first device, whole.
    assert_eq!(two.model.devices().len(), 1);
    // Dropout: shard j draws the masks of stream (seed, step, j), as the CPU shards do, so two
    // devices take the steps of two shards on one.
    let (c, d, e) = (tmp("dev-c"), tmp("dev-d"), tmp("dev-e"));
    let shards = trainer::train(&plan(&c, 4, "shards = 2"), &data(), &opts(None)).unwrap();
    let devs = trainer::train(&plan(&d, 4, ""), &data(), &two_devices(None)).unwrap();
    close_losses(&shards.losses, &devs.losses);
    let err = max_abs_diff(&weights(&shards.model), &weights(&devs.model));
    assert!(err < 1e-3, "weights differ by {err}");
    // Resumed across devices: bit-identical (in any process: nothing depends on burn's random ParamIds).
    let first = trainer::train(&plan(&e, 2, ""), &data(), &two_devices(None)).unwrap();
    let second = trainer::train(&plan(&e, 4, ""), &data(), &two_devices(Some(e.clone()))).unwrap();
    let joined: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(devs.losses, joined);
    assert_eq!(weights(&devs.model), weights(&second.model));
    // More devices than images is refused in one line.
    let f = tmp("dev-f");
    let mut small = plan(&f, 1, "");
    small.file.train.batch_size = 1;
    let err = trainer::train(&small, &data(), &two_devices(None))
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("every device needs at least one image"),
        "{err:#}"
    );
    for dir in [a, b, c, d, e, f] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_timed_run_stops_with_a_checkpoint_and_resumes_exactly() {
    let (a, b) = (tmp("timed-straight"), tmp("timed"));
    let straight = trainer::train(&plan(&a, 4, ""), &data(), &opts(None)).unwrap();
    // A limit every step exceeds: the first step is the last, saved as a run's last step is.
    let timed = RunOptions {
        time_limit: Some(1e-9),
        ..opts(None)
    };
    let first = trainer::train(&plan(&b, 4, ""), &data(), &timed).unwrap();
    assert_eq!((first.losses.len(), first.last_step), (1, 1));
    assert_eq!(checkpoint::list_steps(&b).unwrap(), vec![1]);
    let rest = trainer::train(&plan(&b, 4, ""), &data(), &opts(Some(b.clone()))).unwrap();
    let joined: Vec<f64> = first.losses.iter().chain(&rest.losses).copied().collect();
    assert_eq!(straight.losses, joined);
    assert_eq!(weights(&straight.model), weights(&rest.model));
    for dir in [a, b] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn mixed_precision_is_refused_on_the_cpu_and_a_bad_scale_in_the_file() {
    let a = tmp("mixed-cpu");
    let err = trainer::train(
        &plan(&a, 1, "precision = \"mixed-f16\""),
        &data(),
        &opts(None),
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains("is for the GPU backend"),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&a);
    let text = "kind = \"diffusion-training\"\n[data]\ndataset = \"mnist\"\n[model]\npreset = \"tiny\"\n\
                [train]\nloss_scale = 0\n";
    let err = TrainFile::parse(text)
        .and_then(|f| f.resolve("t"))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("train.loss_scale"), "{err:#}");
}

/// Every file under `dir` (but the lock) with its bytes, in path order.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != ".lock" {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A directory that holds a run is never overwritten: a fresh run is refused naming `--resume`
/// and `--restart` and touches nothing; a resume from an older step of the same directory is
/// refused (it would write a second history over the later checkpoints); a second trainer on a
/// claimed directory is refused naming the holder's pid; `restart` moves the old run aside whole.
#[test]
fn a_used_run_directory_is_never_overwritten() {
    use tweedie_core::run_dir::{Claim, RunDir};
    let dir = tmp("owned");
    let old = dir.with_file_name(format!(
        "{}.old-1",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&old);
    trainer::train(&plan(&dir, 8, ""), &data(), &opts(None)).unwrap();
    let before = snapshot(&dir);
    assert!(before.iter().any(|(p, _)| p == "metrics.jsonl"));

    let e = format!(
        "{:#}",
        trainer::train(&plan(&dir, 5, ""), &data(), &opts(None)).unwrap_err()
    );
    assert!(
        e.contains("already holds a run") && e.contains("--resume") && e.contains("--restart"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert_eq!(snapshot(&dir), before, "a refused run changes nothing");

    let step6 = dir.join("step-00000006");
    let e = format!(
        "{:#}",
        trainer::train(&plan(&dir, 10, ""), &data(), &opts(Some(step6))).unwrap_err()
    );
    assert!(
        e.contains("after step 6") && e.contains("step-00000008"),
        "{e}"
    );
    assert_eq!(snapshot(&dir), before);

    let held = RunDir::claim(&dir, Claim::Resume).unwrap();
    let e = format!(
        "{:#}",
        trainer::train(&plan(&dir, 10, ""), &data(), &opts(Some(dir.clone()))).unwrap_err()
    );
    assert!(
        e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    drop(held);
    assert_eq!(snapshot(&dir), before);

    let mut restart = opts(None);
    restart.restart = true;
    trainer::train(&plan(&dir, 3, ""), &data(), &restart).unwrap();
    assert_eq!(snapshot(&old), before, "the old run moved aside whole");
    let latest = checkpoint::resolve(&dir).unwrap();
    assert_eq!(checkpoint::read_meta(&latest).unwrap().step, 3);
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    for d in [dir, old] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `[train] fid_every` on RGB data: Inception FID and KID (the committed narrow fixture network)
/// logged at every score and at the end, `fid.png` drawn, the reference statistics cached once,
/// and a resumed run's scores continuing the log; on gray data a missing classifier stops the run
/// before it claims its directory.
#[test]
fn fid_is_scored_logged_plotted_and_resumed() {
    let dir = tmp("fid");
    let cache = dir.join("cache");
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/inception")
        .join(tweedie_core::inception::WEIGHTS_FILE);
    let mut r = Rng::new(4);
    let rgb = ImageSet {
        shape: [3, 8, 8],
        pixels: (0..12 * 3 * 64).map(|_| r.below(256) as u8).collect(),
        labels: vec![0; 12],
    };
    let run = dir.join("run");
    let extra = format!(
        "sample_every = 0\nfid_every = 2\nfid_samples = 3\nsample_steps = 2\nfid_weights = \"{}\"\n",
        weights.display()
    );
    let mut p = plan(&run, 4, &extra);
    p.unet.in_channels = 3;
    let o = RunOptions {
        score_fid: true,
        fid_cache: Some(cache.clone()),
        ..opts(None)
    };
    trainer::train(&p, &rgb, &o).unwrap();
    let scores = |run: &std::path::Path| -> Vec<(u64, serde_json::Value)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("fid").is_some())
            .map(|v| (v["step"].as_u64().unwrap(), v["fid"].clone()))
            .collect()
    };
    let s = scores(&run);
    assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 4]);
    for (_, f) in &s {
        assert_eq!(f["network"], "inception");
        assert!(f["fid"].as_f64().unwrap() > 0.0 && f["kid"].as_f64().unwrap().is_finite());
        assert_eq!(
            (f["samples"].as_u64(), f["reference_images"].as_u64()),
            (Some(3), Some(12))
        );
    }
    assert!(run.join("fid.png").is_file());
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    let more = plan(&run, 6, &extra);
    let mut more = more;
    more.unet.in_channels = 3;
    let o = RunOptions {
        resume: Some(run.clone()),
        ..o
    };
    trainer::train(&more, &rgb, &o).unwrap();
    let s2 = scores(&run);
    assert_eq!(s2.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 4, 6]);
    assert_eq!(s2[..2], s[..]);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    let gray_run = dir.join("gray");
    let p = plan(
        &gray_run,
        2,
        &format!(
            "sample_every = 0\nfid_every = 1\nfid_classifier = \"{}\"\n",
            dir.join("no-classifier").display()
        ),
    );
    let o = RunOptions {
        score_fid: true,
        ..opts(None)
    };
    let e = format!("{:#}", trainer::train(&p, &data(), &o).err().unwrap());
    assert!(
        e.contains("[train] fid_classifier") && !e.contains('\n'),
        "{e}"
    );
    assert!(!gray_run.exists());
    std::fs::remove_dir_all(&dir).ok();
}

// Training across node servers (burn's remote backend) on loopback: the same steps as one device,
// a node that is not there at the start, and a node killed mid-run.

/// Dropout off (the same steps as one device up to summation order), clipping on.
fn quiet_plan(run_dir: &std::path::Path, steps: usize) -> tweedie_train::config::Plan {
    let mut p = plan(run_dir, steps, "grad_clip = 1.0\nsample_every = 0");
    p.unet.dropout = 0.0;
    p
}

/// [`opts`] over `devices` (a `--devices` list; empty: one flex device).
fn on(devices: &str, resume: Option<PathBuf>) -> RunOptions {
    RunOptions {
        devices: if devices.is_empty() {
            Vec::new()
        } else {
            DeviceSpec::parse_list(devices).unwrap()
        },
        ..opts(resume)
    }
}

/// A node server on a free loopback port, in this process; its address.
fn node_in_process() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || tweedie_train::node::serve(listener, BackendKind::Flex));
    format!("remote:{addr}")
}

#[test]
fn training_across_two_loopback_nodes_follows_one_device() {
    let (a, b) = (tmp("node-one"), tmp("node-three"));
    let devices = format!("flex,{},{}", node_in_process(), node_in_process());
    let one = trainer::train(&quiet_plan(&a, 3), &data(), &on("", None)).unwrap();
    let three = trainer::train(&quiet_plan(&b, 3), &data(), &on(&devices, None)).unwrap();
    assert_eq!(one.losses.len(), 3);
    for (x, y) in one.losses.iter().zip(&three.losses) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "losses {x} vs {y}");
    }
    let (wa, wb) = (weights(&one.model), weights(&three.model));
    let err = wa
        .iter()
        .zip(&wb)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-3, "weights differ by {err}");
    // A node that is not there: one line naming it, within the timeout.
    let c = tmp("node-absent");
    let mut o = on("flex,remote:127.0.0.1:1", None);
    o.nodes.connect = Duration::from_secs(2);
    let clock = Instant::now();
    let e = format!(
        "{:#}",
        trainer::train(&quiet_plan(&c, 3), &data(), &o)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("node remote:127.0.0.1:1") && !e.contains('\n'),
        "{e}"
    );
    assert!(clock.elapsed() < Duration::from_secs(10));
    assert!(!c.exists(), "nothing is written before the devices answer");
    // The first device holds the model: it must be local.
    let e = format!(
        "{:#}",
        trainer::train(
            &quiet_plan(&c, 3),
            &data(),
            &on("remote:127.0.0.1:1,flex", None)
        )
        .err()
        .unwrap()
    );
    assert!(e.contains("must be local"), "{e}");
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A `train node` subprocess, continued and killed when dropped, so that a failing assertion
/// leaves no stopped node behind.
struct NodeProcess(std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `train node` subprocess on a free loopback port, and its `remote:` device.
fn node_subprocess() -> (NodeProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["node", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "node: serving flex on 127.0.0.1:PORT (…"
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (NodeProcess(child), format!("remote:{addr}"))
}

/// Waits until the run in `dir` has written `n` checkpoints.
fn await_checkpoints(dir: &std::path::Path, n: usize) {
    let clock = Instant::now();
    while checkpoint::list_steps(dir).map_or(0, |s| s.len()) < n {
        assert!(clock.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_killed_mid_run_stops_it_with_its_checkpoint_intact_and_the_run_resumes_without_it() {
    let (child, node) = node_subprocess();
    let dir = tmp("node-killed");
    let run = {
        let (dir, devices) = (dir.clone(), format!("flex,{node}"));
        std::thread::spawn(move || {
            trainer::train(&quiet_plan(&dir, 10_000), &data(), &on(&devices, None)).map(|_| ())
        })
    };
    // Kill the node once two checkpoints are written.
    await_checkpoints(&dir, 2);
    drop(child);
    let e = format!("{:#}", run.join().unwrap().expect_err("the run stops"));
    eprintln!("{e}");
    assert!(
        e.contains(&format!("node {node}")) && e.contains("is intact") && !e.contains('\n'),
        "{e}"
    );
    // The newest checkpoint reads back, and the run goes on from it on the local device alone.
    let steps = checkpoint::list_steps(&dir).unwrap();
    let last = *steps.last().unwrap();
    let resumed = trainer::train(
        &quiet_plan(&dir, last + 2),
        &data(),
        &on("", Some(dir.clone())),
    );
    assert_eq!(resumed.unwrap().losses.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends `signal` (`-STOP`, `-CONT`) to a node subprocess.
fn signal(node: &NodeProcess, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_node_that_hangs_is_given_up_on_after_the_step_timeout_and_the_run_resumes_once_it_answers() {
    let (child, node) = node_subprocess();
    let dir = tmp("node-hangs");
    let devices = format!("flex,{node}");
    let step = Duration::from_secs(15);
    let run = {
        let (dir, devices) = (dir.clone(), devices.clone());
        std::thread::spawn(move || {
            let mut o = on(&devices, None);
            o.nodes.step = step;
            trainer::train(&quiet_plan(&dir, 10_000), &data(), &o).map(|_| ())
        })
    };
    // Stop the node (its connection stays open, nothing answers) after the first checkpoint.
    await_checkpoints(&dir, 1);
    signal(&child, "-STOP");
    let clock = Instant::now();
    let e = format!("{:#}", run.join().unwrap().expect_err("the run stops"));
    let waited = clock.elapsed();
    eprintln!("{e}");
    assert!(
        e.contains(&format!("node {node}"))
            && e.contains("no answer within 15 s")
            && e.contains("is intact")
            && !e.contains('\n'),
        "{e}"
    );
    assert!(waited < step + Duration::from_secs(20), "{waited:?}");
    // Once the node answers again, the run goes on across it from its newest checkpoint.
    signal(&child, "-CONT");
    let last = *checkpoint::list_steps(&dir).unwrap().last().unwrap();
    let resumed = trainer::train(
        &quiet_plan(&dir, last + 2),
        &data(),
        &on(&devices, Some(dir.clone())),
    );
    assert_eq!(resumed.unwrap().losses.len(), 2);
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
