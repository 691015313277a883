//! The GPU path (burn-wgpu) against the CPU (flex) on tiny shapes: the U-Net's ε̂ and its
//! gradients (the GroupNorm composition wgpu runs instead of the CPU kernels), a DDIM trajectory,
//! and a few training steps. Built only with `--features tweedie-train/wgpu`; CI runs it on Mesa's
//! software Vulkan device (lavapipe), so the GPU code path runs on every change.
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use tweedie_core::checkpoint;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::device::{BackendKind, DeviceSpec};
use tweedie_core::host_values;
use tweedie_core::loss::l_simple;
use tweedie_core::rng::Rng;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing};
use tweedie_core::unet::{UNet, UNetConfig};
use tweedie_sample::experiment::ExperimentFile;
use tweedie_sample::sampler::{Ddim, run};
use tweedie_train::config::TrainFile;
use tweedie_train::trainer::{self, RunOptions};

fn devices() -> [Device; 2] {
    [
        Device::flex(),
        BackendKind::Wgpu.device().expect("a wgpu adapter"),
    ]
}

/// A two-level U-Net on 1×8×8 with attention, GroupNorm(32) and dropout off.
fn config() -> UNetConfig {
    UNetConfig::new(1, 8, 32, vec![1, 2], 1, vec![4], 0.0)
}

/// max |a − b| over max |a|.
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "an all-zero reference");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn unet_eps_and_its_gradients_on_wgpu_match_flex() {
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let t = [3, 250, 999];
    let run_on = |dev: &Device| {
        let dev = dev.clone().autodiff();
        let net = randomized(config().init_seeded(&dev, 7), 11);
        let mut rng = Rng::new(2);
        let x0 = rng.normal_tensor([3, 1, 8, 8], &dev);
        let eps = rng.normal_tensor([3, 1, 8, 8], &dev);
        let x0 = x0.require_grad();
        let out = host_values(net.eps(x0.clone(), &t));
        let loss = l_simple(&net, &s, x0.clone(), &t, eps);
        let grads = loss.backward();
        let dx = host_values(x0.grad(&grads).unwrap());
        let mut params = ParamGrads {
            grads: &grads,
            each: Vec::new(),
        };
        net.visit(&mut params);
        (out, dx, params.each)
    };
    let [cpu, gpu] = devices();
    let (a, b) = (run_on(&cpu), run_on(&gpu));
    assert!(max_rel(&a.0, &b.0) < 1e-4, "ε̂: {}", max_rel(&a.0, &b.0));
    assert!(max_rel(&a.1, &b.1) < 1e-3, "∂x₀: {}", max_rel(&a.1, &b.1));
    // Every parameter's gradient against the largest of them all (the attention's key bias has
    // a zero gradient, softmax being shift-invariant, so its own scale is rounding noise).
    assert_eq!(a.2.len(), b.2.len());
    let scale = a.2.iter().flatten().fold(0f32, |m, g| m.max(g.abs()));
    for (i, (ga, gb)) in a.2.iter().zip(&b.2).enumerate() {
        let err = ga
            .iter()
            .zip(gb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        assert!(err < 1e-4, "parameter {i}: {err}");
    }
}

/// `net` with every parameter redrawn as N(0, 0.2²) from `seed` on the host: the same network on
/// every device, and one whose output is not the ≈ 0 of a fresh DDPM U-Net (its last
/// convolution starts at 1e-10), so that values and gradients have something to compare.
fn randomized(net: UNet, seed: u64) -> UNet {
    struct Redraw(Rng);
    impl ModuleMapper for Redraw {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = p.consume();
            let dims = t.dims();
            let n = dims.iter().product();
            let values: Vec<f32> = self.0.normals(n).iter().map(|z| 0.2 * z).collect();
            let fresh = Tensor::<1>::from_floats(values.as_slice(), &t.device()).reshape(dims);
            let fresh = if t.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            };
            Param::from_mapped_value(id, fresh, mapper)
        }
    }
    net.map(&mut Redraw(Rng::new(seed)))
}

/// Every parameter's values, in visiting order.
fn weights<M: Module>(m: &M) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(host_values(p.val()));
        }
    }
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

/// Every parameter's gradient, in visiting order.
struct ParamGrads<'a> {
    grads: &'a burn::tensor::Gradients,
    each: Vec<Vec<f32>>,
}

impl ModuleVisitor for ParamGrads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = p.val().grad(self.grads) {
            self.each.push(host_values(g));
        }
    }
}

#[test]
fn a_ddim_trajectory_on_wgpu_matches_flex() {
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let ts = s.timesteps(10, Spacing::Trailing).unwrap();
    let sample_on = |dev: &Device| {
        let net = randomized(config().init_seeded(dev, 3), 12);
        let mut rng = Rng::new(4);
        let x = rng.normal_tensor([2, 1, 8, 8], dev);
        let (x0, nfe) = run(
            &net as &dyn Denoiser,
            &mut Ddim {
                eta: 0.0,
                clip: true,
            },
            &s,
            &ts,
            x,
            &mut rng,
            |_, _| {},
        );
        (host_values(x0), nfe)
    };
    let [cpu, gpu] = devices();
    let (a, b) = (sample_on(&cpu), sample_on(&gpu));
    assert_eq!(a.1, b.1);
    assert!(max_rel(&a.0, &b.0) < 1e-3, "x₀: {}", max_rel(&a.0, &b.0));
}

/// 16 random 1×8×8 images.
fn images() -> tweedie_datasets::ImageSet {
    let mut r = Rng::new(3);
    tweedie_datasets::ImageSet {
        shape: [1, 8, 8],
        pixels: (0..16 * 64).map(|_| r.below(256) as u8).collect(),
        labels: vec![0; 16],
    }
}

/// A 2-level U-Net on 8×8 images trained `steps` steps on `backend` with the `[train]` lines
/// `extra`, in `dir` (a checkpoint at the last step).
fn train_on(
    backend: BackendKind,
    dir: &std::path::Path,
    steps: usize,
    extra: &str,
) -> trainer::Report {
    train_with(backend, Vec::new(), dir, steps, extra)
}

fn train_with(
    backend: BackendKind,
    devices: Vec<DeviceSpec>,
    dir: &std::path::Path,
    steps: usize,
    extra: &str,
) -> trainer::Report {
    let text = format!(
        "kind = \"diffusion-training\"\nseed = 5\nrun_dir = \"{}\"\n[data]\ndataset = \"mnist\"\n\
         [model]\npreset = \"tiny\"\nch_mult = [1, 2]\ndropout = 0.0\n[diffusion]\ntimesteps = 50\n\
         [train]\nsteps = {steps}\nbatch_size = 4\nlr = 1e-3\nema_decay = 0.9\n\
         checkpoint_every = {steps}\nsample_every = 0\nlog_every = 1\n{extra}",
        dir.display()
    );
    let mut plan = TrainFile::parse(&text).unwrap().resolve("t").unwrap();
    plan.unet.resolution = 8;
    let opts = RunOptions {
        backend,
        devices,
        nodes: Default::default(),
        time_limit: None,
        resume: None,
        restart: false,
        progress: false,
        eval_data: None,
        score_fid: false,
        fid_cache: None,
    };
    trainer::train(&plan, &images(), &opts).unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-gpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The U-Net of the newest checkpoint in `dir`, read on the CPU.
fn checkpoint_weights(dir: &std::path::Path) -> Vec<f32> {
    let step = checkpoint::resolve(dir).unwrap();
    let meta = checkpoint::read_meta(&step).unwrap();
    weights(&checkpoint::load_unet(&step, &meta, &Device::flex()).unwrap())
}

#[test]
fn a_few_training_steps_on_wgpu_follow_flex() {
    let (a, b) = (tmp("flex"), tmp("wgpu"));
    let cpu = train_on(BackendKind::Flex, &a, 3, "");
    let gpu = train_on(BackendKind::Wgpu, &b, 3, "");
    assert_eq!(cpu.losses.len(), 3);
    // The checkpoint a GPU run writes reads back on the CPU, with the CPU run's weights.
    same_run((&cpu, a), (&gpu, b), 1e-3);
}

/// Two runs took the same steps: losses and checkpointed weights within `tol` (relative); their
/// directories are then removed.
fn same_run(
    (x, dir_x): (&trainer::Report, std::path::PathBuf),
    (y, dir_y): (&trainer::Report, std::path::PathBuf),
    tol: f32,
) {
    assert_eq!(x.losses.len(), y.losses.len());
    for (a, b) in x.losses.iter().zip(&y.losses) {
        assert!((a - b).abs() <= tol as f64 * a.abs(), "losses {a} vs {b}");
    }
    let (wa, wb) = (checkpoint_weights(&dir_x), checkpoint_weights(&dir_y));
    assert!(max_rel(&wa, &wb) < tol, "weights: {}", max_rel(&wa, &wb));
    for d in [dir_x, dir_y] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn training_across_the_cpu_and_the_gpu_follows_one_device() {
    // Half of every batch on flex, half on wgpu; burn's reduction moves the gradients between them.
    let (a, b) = (tmp("one"), tmp("two"));
    let one = train_on(BackendKind::Flex, &a, 3, "");
    let devices = DeviceSpec::parse_list("wgpu,flex").unwrap();
    let two = train_with(BackendKind::Wgpu, devices, &b, 3, "");
    same_run((&one, a), (&two, b), 1e-3);
}

#[test]
fn mixed_precision_follows_f32_and_skips_overflowing_steps() {
    // f16 forward and backward on a copy of the f32 weights: the losses of f32 within f16's
    // precision, the loss scale saved with the checkpoint.
    let (a, b, c) = (tmp("f32"), tmp("f16"), tmp("f16-overflow"));
    let f32_run = train_on(BackendKind::Wgpu, &a, 4, "");
    let mixed = train_on(BackendKind::Wgpu, &b, 4, "precision = \"mixed-f16\"\n");
    let scale = mixed.loss_scale.as_ref().unwrap();
    assert_eq!((scale.scale, scale.skipped), (65536.0, 0));
    same_run((&f32_run, a), (&mixed, b), 1e-2);
    // A scale of 2¹²⁰ overflows f16 in the backward pass: every step is skipped, the weights
    // stay as initialised, and the scale halves once per step.
    let over = train_on(
        BackendKind::Wgpu,
        &c,
        3,
        "precision = \"mixed-f16\"\nloss_scale = 1.329227995784916e36\n",
    );
    assert!(over.losses.is_empty());
    let s = over.loss_scale.as_ref().unwrap();
    assert_eq!((s.skipped, s.scale), (3, 2f64.powi(117)));
    let mut cfg = UNetConfig::tiny();
    cfg.resolution = 8;
    let fresh = weights(&cfg.init_seeded(&Device::flex(), 5));
    assert_eq!(checkpoint_weights(&c), fresh);
    std::fs::remove_dir_all(c).unwrap();
}
