//! Every workflow the binaries run, called as library code on tiny settings: train a diffusion
//! model and a classifier, then unconditional samples, every kind of sampling experiment (from
//! the shipped presets, shrunk), the NFE sweep and classifier-FID; each returns a report whose
//! contents are checked, and writes the files it promises.

use std::path::{Path, PathBuf};

use tweedie_core::device::BackendKind;
use tweedie_core::elbo::ModelVariance;
use tweedie_datasets::{DatasetName, Split};
use tweedie_sample::catalog::Method;
use tweedie_sample::class_cond::{self, ClassFile, ClassOptions};
use tweedie_sample::experiment::{self, Binary, ExperimentFile, ExperimentKind};
use tweedie_sample::fid::{self, ReferenceSpec};
use tweedie_sample::generate::{self, GenerateOptions};
use tweedie_sample::gmm_bench::{self, GmmFile, GmmOptions};
use tweedie_sample::nfe::{self, NfeOptions};
use tweedie_sample::recon::{self, ReconFile, ReconOptions};
use tweedie_sample::sampler::SamplerKind;
use tweedie_train::classify::ClassifierFile;
use tweedie_train::config::TrainFile;
use tweedie_train::launch::{self, ClassifierRun, DiffusionRun};

fn preset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(name)
}

fn text(name: &str) -> String {
    std::fs::read_to_string(preset(name)).unwrap()
}

#[test]
fn every_workflow_runs_as_library_code_and_reports() {
    let root = std::env::temp_dir().join(format!("tweedie-workflows-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ck = root.join("ck");
    let cls = root.join("cls");

    // Every preset declares a kind that its binary accepts.
    for e in std::fs::read_dir(preset("")).unwrap() {
        let p = e.unwrap().path();
        let (kind, _) = experiment::read(&p).unwrap();
        assert!(experiment::read_for(&p, kind.binary()).is_ok(), "{p:?}");
        let other = match kind.binary() {
            Binary::Train => Binary::Sample,
            Binary::Sample => Binary::Train,
        };
        let e = experiment::read_for(&p, other).unwrap_err().to_string();
        assert!(e.contains(kind.binary().name()), "{e}");
    }

    // A diffusion model: the tiny preset, 3 steps on 64 images.
    let mut file = TrainFile::parse(&text("mnist-tiny.toml")).unwrap();
    file.run_dir = Some(ck.clone());
    file.data.limit = 64;
    file.train.steps = 3;
    file.train.checkpoint_every = 3;
    file.train.sample_every = 0;
    let plan = file.resolve("t").unwrap();
    let run = DiffusionRun {
        backend: BackendKind::Flex,
        devices: Vec::new(),
        nodes: Default::default(),
        time_limit: None,
        resume: None,
        restart: false,
        no_eval: true,
        download: false,
        quiet: true,
    };
    let report = launch::diffusion(&plan, &run).unwrap();
    assert_eq!(report.losses.len(), 3);
    assert!(launch::summary(&report).starts_with("done: steps 0..3"));

    // The classifier, 5 steps, on burn-train's Learner.
    let mut cf = ClassifierFile::parse(&text("mnist-classifier.toml")).unwrap();
    cf.train.steps = 5;
    cf.train.batch_size = 8;
    let copts = ClassifierRun {
        backend: BackendKind::Flex,
        restart: false,
        download: false,
        quiet: true,
    };
    let cr = launch::classifier(&cf, &cls, &copts).unwrap();
    assert!((0.0..=1.0).contains(&cr.test_accuracy));
    assert!(cr.valid_loss.is_some_and(f64::is_finite), "{cr:?}");
    assert!(cls.join("learner/valid/epoch-1/Accuracy.log").is_file());
    let e = launch::classifier(&cf, &cls, &copts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a classifier"), "{e}");

    // Unconditional samples.
    let g = generate::run(&GenerateOptions {
        checkpoint: ck.clone(),
        sampler: SamplerKind::Ddim,
        steps: Some(3),
        eta: 0.0,
        spacing: None,
        variance: Some(ModelVariance::Small),
        clip: None,
        raw_weights: false,
        n: 3,
        batch_size: 2,
        shards: 1,
        seed: 0,
        backend: BackendKind::Flex,
        quiet: true,
    })
    .unwrap();
    assert_eq!((g.shape, g.images.len()), ([3, 28, 28, 1], 3 * 784));
    g.write(&root.join("gen")).unwrap();
    let npy = root.join("gen/samples.npy");
    assert!(npy.is_file() && root.join("gen/grid.png").is_file());

    // A reconstruction preset, every method, 2 images.
    let mut rf = ReconFile::parse(&text("mnist-inpaint-box.toml")).unwrap();
    rf.checkpoint = ck.clone();
    rf.limit_images(2).unwrap();
    rf.run.samples = 2;
    (
        rf.dps.steps,
        rf.diffpir.steps,
        rf.pigdm.steps,
        rf.replacement.steps,
    ) = (3, 3, 3, 3);
    let ropts = ReconOptions {
        path: preset("mnist-inpaint-box.toml"),
        backend: BackendKind::Flex,
        raw_weights: false,
        quiet: true,
        lpips: None,
    };
    (rf.tds.steps, rf.fk.steps) = (3, 3);
    (rf.tds.particles, rf.fk.particles) = (vec![2], vec![2]);
    (rf.ddrm.steps, rf.ddnm.steps, rf.reddiff.steps) = (3, 3, 3);
    (rf.daps.steps, rf.daps.ode_steps, rf.daps.langevin_steps) = (2, 2, 2);
    (rf.pnpdm.iterations, rf.pnpdm.denoise_steps) = (2, 2);
    (rf.mcgdiff.steps, rf.mcgdiff.particles) = (3, vec![2]);
    let rr = recon::run(&rf, &ropts).unwrap();
    assert_eq!(rr.runs.len(), 13);
    for r in &rr.runs {
        let k = if r.method == Method::Pinv { 1 } else { 2 };
        assert_eq!(r.values.len(), 2 * k * 784, "{:?}", r.method);
        let s = &rr.scores[&r.spec().key()];
        assert!(s.psnr_mean.is_finite());
        if r.method.is_particle() {
            assert_eq!(s.particles, Some(2));
            assert!(s.images.iter().all(|i| i.log_z.is_some_and(f64::is_finite)));
        }
    }
    assert_eq!(rr.record["images"], serde_json::json!([0, 1]));
    rr.write(&root.join("recon")).unwrap();
    for f in [
        "metrics.json",
        "panels/00000.png",
        "panels/00001.png",
        "dps/samples.npy",
    ] {
        assert!(root.join("recon").join(f).is_file(), "{f}");
    }
    assert_eq!(rr.table().lines().count(), 2 + 13);
    let nfe = |m: &str| rr.record["methods"][m]["nfe"].as_u64();
    assert_eq!(nfe("daps"), Some(4), "levels × ODE steps");
    assert_eq!(nfe("pnpdm"), Some(4), "iterations × denoising steps");

    // Tuning the step sizes on train images writes a valid copy with the chosen values.
    let mut tf = ReconFile::parse(&text("mnist-sr4.toml")).unwrap();
    tf.checkpoint = ck.clone();
    (tf.dps.steps, tf.diffpir.steps, tf.pigdm.steps) = (2, 2, 2);
    (tf.ddrm.steps, tf.ddnm.steps, tf.reddiff.steps) = (2, 2, 2);
    (tf.daps.steps, tf.daps.ode_steps, tf.daps.langevin_steps) = (2, 1, 2);
    (tf.pnpdm.iterations, tf.pnpdm.denoise_steps) = (2, 2);
    (tf.mcgdiff.steps, tf.mcgdiff.particles) = (2, vec![2]);
    let topts = recon::TuneOptions {
        path: preset("mnist-sr4.toml"),
        images: 2,
        samples: 1,
        seed: 0,
        backend: BackendKind::Flex,
        quiet: true,
    };
    let tr = recon::tune(&tf, &topts).unwrap();
    // DPS ζ 9 runs, DiffPIR λ 9 and ζ 5, ΠGDM weight 9, RED-diff λ 9, DAPS lr 8.
    assert_eq!(tr.rows.len(), 49);
    assert_eq!(tr.chosen.len(), 6);
    let tuned = ReconFile::parse(
        &tr.tuned_text(&text("mnist-sr4.toml"), &preset("x"))
            .unwrap(),
    )
    .unwrap();
    let chosen = |s: &str, k: &str| tr.chosen.iter().find(|c| c.0 == s && c.1 == k).unwrap().2;
    assert!((tuned.dps.zeta - chosen("dps", "zeta")).abs() < 1e-4);
    assert!((tuned.pigdm.weight - chosen("pigdm", "weight")).abs() < 1e-4);
    assert!(
        tr.tuned_text(&text("mnist-sr4.toml"), &preset("x"))
            .unwrap()
            .contains("# tuned by `sample tune` on 2 train images")
    );
    assert!(tr.images.iter().all(|i| *i < 60_000));

    // The Gaussian-mixture benchmark, every method.
    let mut gf = GmmFile::parse(&text("gmm-2mode.toml")).unwrap();
    (gf.run.n_samples, gf.run.amortized_steps, gf.run.repeats) = (20, 10, 1);
    (gf.dps.steps, gf.diffpir.steps, gf.pigdm.steps) = (10, 10, 10);
    (gf.tds.steps, gf.fk.steps, gf.mcgdiff.steps) = (10, 10, 10);
    (gf.tds.particles, gf.fk.particles, gf.mcgdiff.particles) = (vec![2], vec![2], vec![2]);
    let gopts = GmmOptions {
        stem: "gmm".into(),
        quiet: true,
    };
    (gf.run.fresh_y, gf.amortized.steps) = (2, 5);
    (gf.csb.iterations, gf.csb.train_steps, gf.csb.steps) = (1, 3, 4);
    (gf.ddrm.steps, gf.ddnm.steps, gf.reddiff.steps) = (5, 5, 5);
    (gf.daps.steps, gf.daps.langevin_steps) = (4, 3);
    (gf.pnpdm.iterations, gf.pnpdm.denoise_steps) = (3, 2);
    let gr = gmm_bench::run(&gf, &gopts).unwrap();
    assert_eq!(gr.rows.len(), 13);
    let daps = gr.rows.iter().find(|r| r.method == "daps").unwrap();
    assert_eq!(daps.nfe, 4 * 5, "levels × ODE steps");
    let csb = gr.rows.iter().find(|r| r.method == "csb").unwrap();
    assert_eq!(csb.nfe, 4);
    assert!(csb.train_seconds.is_some() && csb.sw_ratio_fresh.is_some_and(f64::is_finite));
    assert!(gr.rows.iter().all(|r| r.sw.is_finite()));
    gr.write(&root.join("gmm")).unwrap();
    assert!(root.join("gmm/scatter.png").is_file());

    // Class-conditional generation, every method.
    let mut kf = ClassFile::parse(&text("mnist-class.toml")).unwrap();
    kf.checkpoint = ck.clone();
    kf.classifier = cls.clone();
    (kf.class.classes, kf.class.per_class) = (vec![3], 1);
    (kf.dps.steps, kf.tds.steps, kf.fk.steps) = (3, 3, 3);
    (kf.tds.particles, kf.fk.particles) = (vec![2], vec![2]);
    // Every method a label likelihood takes, from the one declaration the other runners use.
    kf.class.methods = [
        Method::Dps,
        Method::Tds,
        Method::Fk,
        Method::Reddiff,
        Method::Daps,
        Method::Pnpdm,
    ]
    .to_vec();
    (kf.reddiff.steps, kf.daps.steps, kf.daps.ode_steps) = (3, 2, 2);
    (kf.pnpdm.iterations, kf.pnpdm.denoise_steps) = (2, 2);
    let kopts = ClassOptions {
        backend: BackendKind::Flex,
        raw_weights: false,
        quiet: true,
    };
    // Judged by an independent classifier (another architecture and seed), 5 steps.
    let mut jf = ClassifierFile::parse(&text("mnist-judge.toml")).unwrap();
    jf.train.steps = 5;
    jf.train.batch_size = 8;
    let judge = root.join("judge");
    launch::classifier(&jf, &judge, &copts).unwrap();
    let same =
        text("mnist-class.toml").replace("checkpoints/mnist-judge", "checkpoints/mnist-classifier");
    let e = ClassFile::parse(&same).unwrap_err().to_string();
    assert!(e.contains("independent"), "{e}");
    kf.judge = Some(judge.clone());
    let kr = class_cond::run(&kf, &kopts).unwrap();
    assert_eq!(kr.rows.len(), 6);
    let daps = kr.rows.iter().find(|r| r.method == "daps").unwrap();
    assert_eq!((daps.steps, daps.nfe), (2, 4), "levels, levels × ODE steps");
    assert!(kr.rows.iter().all(|r| r.judge_accuracy.is_some()));
    assert_eq!(kr.record["headline"], "judge_accuracy");
    assert!(kr.table().contains("judge"));
    kr.write(&root.join("class")).unwrap();
    assert!(root.join("class/tds-k2.npy").is_file());

    // The NFE sweep and classifier-FID, against 50 test images.
    let reference = ReferenceSpec {
        classifier: cls.clone(),
        dataset: DatasetName::Mnist,
        split: Split::Test,
        n_reference: 50,
        data_dir: None,
    };
    let nopts = NfeOptions {
        checkpoint: ck.clone(),
        samplers: vec![SamplerKind::Ddim, SamplerKind::Heun],
        nfe: vec![3],
        n: 3,
        batch_size: 3,
        shards: 1,
        seed: 0,
        raw_weights: false,
        out: root.join("nfe"),
        backend: BackendKind::Flex,
        quiet: true,
        reference: reference.clone(),
    };
    let nr = nfe::run(&nopts).unwrap();
    assert_eq!(nr.rows.len(), 2);
    assert_eq!(nr.rows[1].nfe, 3, "Heun: 2 steps, 3 calls");
    nr.write(&root.join("nfe")).unwrap();
    // A rerun reuses the records.
    let again = nfe::run(&nopts).unwrap();
    assert_eq!(again.rows[0].classifier_fid, nr.rows[0].classifier_fid);
    let json = fid::score_npy(&npy, &reference, BackendKind::Flex).unwrap();
    assert!(json["classifier_fid"].as_f64().is_some_and(f64::is_finite));

    assert_eq!(
        <ClassFile as ExperimentFile>::KIND,
        ExperimentKind::ClassConditional
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Colour: the CIFAR-10 colourisation preset, every method, on a folder of RGB PNGs with the
/// committed 8×8 diffusers fixture as the prior (the path a published model takes).
#[test]
fn colour_presets_run_on_a_folder_with_an_imported_prior() {
    let root = std::env::temp_dir().join(format!("tweedie-colour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..3u8 {
        let img = image::RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([x as u8 * 30, y as u8 * 30, 80 * i])
        });
        img.save(images.join(format!("{i}.png"))).unwrap();
    }
    for task in ["inpaint-box", "sr4", "deblur", "denoise"] {
        let f = ReconFile::parse(&text(&format!("cifar10-{task}.toml"))).unwrap();
        assert_eq!(f.data.dataset, DatasetName::Cifar10, "{task}");
    }
    let mut rf = ReconFile::parse(&text("cifar10-colorize.toml")).unwrap();
    rf.checkpoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/diffusers");
    rf.data.dataset = DatasetName::Folder;
    rf.data.dir = Some(images);
    rf.limit_images(2).unwrap();
    (rf.dps.steps, rf.diffpir.steps, rf.pigdm.steps, rf.tds.steps) = (3, 3, 3, 3);
    rf.tds.particles = vec![2];
    (rf.ddrm.steps, rf.ddnm.steps, rf.reddiff.steps) = (3, 3, 3);
    (rf.daps.steps, rf.daps.ode_steps, rf.daps.langevin_steps) = (2, 2, 2);
    (rf.pnpdm.iterations, rf.pnpdm.denoise_steps) = (2, 2);
    (rf.mcgdiff.steps, rf.mcgdiff.particles) = (3, vec![2]);
    let ropts = ReconOptions {
        path: preset("cifar10-colorize.toml"),
        backend: BackendKind::Flex,
        raw_weights: false,
        quiet: true,
        // The test fixture's narrow LPIPS net (testdata/lpips): the metric's plumbing, not its values.
        lpips: Some(tweedie_core::lpips::LpipsFiles::in_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/lpips"),
        )),
    };
    let rr = recon::run(&rf, &ropts).unwrap();
    assert_eq!(rr.runs.len(), 11);
    for r in &rr.runs {
        let k = if r.method == Method::Pinv { 1 } else { 2 };
        assert_eq!(r.values.len(), 2 * k * 3 * 64, "{:?}", r.method);
        let s = &rr.scores[&r.spec().key()];
        assert!(s.psnr_mean.is_finite());
        let lpips = s.lpips_mean.expect("LPIPS with the weights given");
        assert!(lpips.is_finite() && lpips > 0.0, "{lpips}");
        assert_eq!(s.images[0].lpips.as_ref().map(Vec::len), Some(k));
    }
    assert!(rr.record["lpips"].as_str().unwrap().starts_with("AlexNet"));
    rr.write(&root.join("out")).unwrap();
    let panel = image::open(root.join("out/panels/00000.png")).unwrap();
    assert_eq!(panel.color(), image::ColorType::Rgb8, "colour panels");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The amortized route on images: a conditional model trained from the SR preset (3 steps),
/// used by the SR reconstruction file's `amortized` method; refused by an unconditional sampler
/// and by a file that observes something else.
#[test]
fn a_conditional_model_trains_and_serves_its_own_observation_model_only() {
    let root = std::env::temp_dir().join(format!("tweedie-amortized-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ck = root.join("ck");
    let mut file = TrainFile::parse(&text("mnist-sr4-amortized.toml")).unwrap();
    file.run_dir = Some(ck.clone());
    file.data.limit = 64;
    file.train.steps = 3;
    file.train.checkpoint_every = 3;
    let plan = file.resolve("t").unwrap();
    assert_eq!(plan.unet.cond_channels, 2);
    let run = DiffusionRun {
        backend: BackendKind::Flex,
        devices: Vec::new(),
        nodes: Default::default(),
        time_limit: None,
        resume: None,
        restart: false,
        no_eval: true,
        download: false,
        quiet: true,
    };
    launch::diffusion(&plan, &run).unwrap();
    // Resuming it for another observation model is refused, naming both.
    let mut other_obs = TrainFile::parse(&text("mnist-inpaint-box-amortized.toml")).unwrap();
    (
        other_obs.run_dir,
        other_obs.data.limit,
        other_obs.train.steps,
    ) = (Some(ck.clone()), 64, 6);
    let resume = DiffusionRun {
        resume: Some(ck.clone()),
        ..run.clone()
    };
    let e = format!(
        "{:#}",
        launch::diffusion(&other_obs.resolve("t").unwrap(), &resume)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("trained for") && e.contains("inpaint-box") && e.lines().count() == 1,
        "{e}"
    );

    let mut rf = ReconFile::parse(&text("mnist-sr4.toml")).unwrap();
    rf.checkpoint = ck.clone();
    rf.run.methods = vec![Method::Pinv, Method::Amortized];
    rf.amortized.checkpoint = Some(ck.clone());
    rf.amortized.steps = 3;
    rf.limit_images(2).unwrap();
    let ropts = ReconOptions {
        path: preset("mnist-sr4.toml"),
        backend: BackendKind::Flex,
        raw_weights: false,
        quiet: true,
        lpips: None,
    };
    // The file's prior must be unconditional.
    let e = recon::run(&rf, &ropts).err().unwrap().to_string();
    assert!(
        e.contains("conditional model") && e.contains("[amortized] checkpoint"),
        "{e}"
    );
    let prior = root.join("prior");
    let mut pf = TrainFile::parse(&text("mnist-tiny.toml")).unwrap();
    (
        pf.run_dir,
        pf.data.limit,
        pf.train.steps,
        pf.train.sample_every,
    ) = (Some(prior.clone()), 64, 1, 0);
    launch::diffusion(&pf.resolve("p").unwrap(), &run).unwrap();
    rf.checkpoint = prior;
    let rr = recon::run(&rf, &ropts).unwrap();
    let am = rr
        .runs
        .iter()
        .find(|r| r.method == Method::Amortized)
        .unwrap();
    assert_eq!((am.values.len(), am.nfe, am.vjps), (2 * 2 * 784, 3, 0));
    assert!(rr.scores["amortized"].psnr_mean.is_finite());
    assert!(rr.scores["amortized"].train_seconds.unwrap() > 0.0);

    // The bridge from it: an iteration trained and kept, read back (same samples) and continued.
    let bridge_dir = root.join("bridge");
    rf.run.methods = vec![Method::Csb];
    (rf.csb.dir, rf.csb.iterations, rf.csb.steps) = (Some(bridge_dir.clone()), 1, 3);
    rf.csb.horizon = 0.5;
    (rf.csb.train_steps, rf.csb.batch_size, rf.csb.refresh) = (2, 2, 1);
    let csb_run = |rf: &ReconFile| {
        let rr = recon::run(rf, &ropts).unwrap();
        let run = rr.runs.into_iter().next().unwrap();
        assert_eq!((run.method, run.nfe, run.vjps), (Method::Csb, 3, 0));
        let record = std::fs::read_to_string(bridge_dir.join("bridge.json")).unwrap();
        (run.values, record)
    };
    let (first, record) = csb_run(&rf);
    assert!(first.iter().all(|v| v.is_finite()) && first.len() == 2 * 2 * 784);
    assert!(bridge_dir.join("iteration-001/forward.bpk").is_file());
    let (again, record_again) = csb_run(&rf);
    assert_eq!((&first, &record), (&again, &record_again));
    rf.csb.iterations = 2;
    let (_, record) = csb_run(&rf);
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(v["iterations"].as_array().unwrap().len(), 2);
    // Another process (here another open handle) holding the bridge's directory: refused.
    {
        let _held =
            tweedie_core::run_dir::RunDir::claim(&bridge_dir, tweedie_core::run_dir::Claim::Resume)
                .unwrap();
        rf.csb.iterations = 3;
        let e = format!("{:#}", recon::run(&rf, &ropts).err().unwrap());
        assert!(e.contains("in use"), "{e}");
        rf.csb.iterations = 2;
    }
    assert!(!bridge_dir.join("iteration-003").exists());
    rf.csb.lr *= 2.0;
    let e = format!("{:#}", recon::run(&rf, &ropts).err().unwrap());
    assert!(
        e.contains("holds a bridge built from") && e.lines().count() == 1,
        "{e}"
    );
    rf.csb.dir = None;
    let e = recon::run(&rf, &ropts).err().unwrap().to_string();
    assert!(e.contains("[csb] dir"), "{e}");
    // More grid points than the schedule has timesteps.
    (rf.csb.dir, rf.csb.steps) = (Some(bridge_dir.clone()), 5000);
    let e = format!("{:#}", recon::run(&rf, &ropts).err().unwrap());
    assert!(e.contains("too many for its schedule"), "{e}");
    rf.run.methods = vec![Method::Pinv, Method::Amortized];

    // Another observation model is a one-line error naming both.
    let mut other = ReconFile::parse(&text("mnist-inpaint-box.toml")).unwrap();
    other.checkpoint = rf.checkpoint.clone();
    other.run.methods = vec![Method::Amortized];
    other.amortized.checkpoint = Some(ck.clone());
    other.limit_images(1).unwrap();
    let e = recon::run(&other, &ropts).err().unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("trained for sr×4") && e.contains("this file observes"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
