//! DDIM trajectories against diffusers' `DDIMScheduler` (`testdata/ref/schedulers.json`): the same
//! ε-function ε(x, t) = tanh(0.5 x + 0.001 t), the same initial x and the same per-step noise.

use burn::prelude::*;
use serde_json::Value;
use tweedie_core::denoiser::Denoiser;
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule, Spacing, inference_timesteps};
use tweedie_sample::sampler::{Ddim, NoiseSource, run};

struct TanhEps;
impl Denoiser for TanhEps {
    fn eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        x_t.mul_scalar(0.5).add_scalar(0.001 * t[0] as f64).tanh()
    }
}

/// Replays the reference's noise, one tensor per step.
struct Replay(Vec<Vec<f32>>, usize);
impl NoiseSource for Replay {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let v = self.0[self.1].clone();
        self.1 += 1;
        Tensor::<4>::from_data(TensorData::new(v, shape), device)
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn ddim_trajectories_match_diffusers() {
    let p = format!("{}/../testdata/ref/schedulers.json", manifest_dir());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let dev = Device::flex();
    let cases = r["ddim"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let n = case["num_inference_steps"].as_u64().unwrap() as usize;
        let eta = case["eta"].as_f64().unwrap();
        let spacing: Spacing = case["timestep_spacing"].as_str().unwrap().parse().unwrap();
        let ts = inference_timesteps(1000, n, spacing).unwrap();
        let want_ts: Vec<usize> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(ts, want_ts, "timesteps {spacing:?} n={n}");
        let x =
            Tensor::<4>::from_data(TensorData::new(floats(&case["x_init"]), [1, 1, 4, 4]), &dev);
        let noise: Vec<Vec<f32>> = case["variance_noise"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let want_x: Vec<Vec<f32>> = case["x_after_each_step"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let want_x0: Vec<Vec<f32>> = case["pred_x0"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let mut replay = Replay(noise, 0);
        let label = format!("{spacing:?} n={n} eta={eta}");
        let (_, nfe) = run(
            &TanhEps,
            &mut Ddim { eta, clip: false },
            &s,
            &ts,
            x,
            &mut replay,
            |i, out| {
                let got = tweedie_core::host_values(out.x_prev.clone());
                for (a, b) in got.iter().zip(&want_x[i]) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{label} step {i}: x {a} vs {b}"
                    );
                }
                let got0 = tweedie_core::host_values(out.x0.clone());
                for (a, b) in got0.iter().zip(&want_x0[i]) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{label} step {i}: x0 {a} vs {b}"
                    );
                }
            },
        );
        assert_eq!(nfe, n);
        assert_eq!(
            replay.1,
            if eta > 0.0 { n } else { 0 },
            "{label}: noise draws"
        );
    }
}

/// A constant noise source: zeros, then ones.
struct Constant(f32);
impl NoiseSource for Constant {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::<4>::full(shape, self.0, device)
    }
}

#[test]
fn ddpm_sampler_steps_match_diffusers() {
    use tweedie_core::diffusion::Transition;
    use tweedie_core::elbo::ModelVariance;
    use tweedie_sample::sampler::{Ddpm, Sampler};
    let p = format!("{}/../testdata/ref/schedulers.json", manifest_dir());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let dev = Device::flex();
    let mut ddpm = Ddpm {
        variance: ModelVariance::Small,
        clip: false,
    };
    for st in r["ddpm_steps"].as_array().unwrap() {
        let t = st["t"].as_u64().unwrap() as usize;
        let x = Tensor::<4>::from_data(TensorData::new(floats(&st["x_t"]), [1, 1, 4, 4]), &dev);
        let eps = Tensor::<4>::from_data(TensorData::new(floats(&st["eps"]), [1, 1, 4, 4]), &dev);
        let tr = Transition::new(&s, t, t.checked_sub(1));
        // Zero noise: the step is the posterior mean μ̃_t(x_t, x̂_0) of diffusers.
        let out = ddpm.step(&tr, x.clone(), eps.clone(), &TanhEps, &mut Constant(0.0));
        let (mean, want) = (
            tweedie_core::host_values(out.x_prev.clone()),
            floats(&st["posterior_mean"]),
        );
        // Tolerance: float32, plus diffusers' float32 β_t = 1 − ᾱ_t/ᾱ_{t−1} at small t (see
        // core/tests/reference.rs): at t = 1 the difference is 4.8e-5; allow 2e-4.
        for (a, b) in mean.iter().zip(&want) {
            assert!((a - b).abs() <= 2e-4 * (1.0 + b.abs()), "t={t}: {a} vs {b}");
        }
        let x0 = tweedie_core::host_values(out.x0);
        for (a, b) in x0.iter().zip(floats(&st["pred_x0"])) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "t={t}: x0 {a} vs {b}"
            );
        }
        // Unit noise adds √β̃_t (none on the last step, t = 0).
        let noisy =
            tweedie_core::host_values(ddpm.step(&tr, x, eps, &TanhEps, &mut Constant(1.0)).x_prev);
        let sd = st["posterior_variance"].as_f64().unwrap().sqrt() as f32;
        for (a, b) in noisy.iter().zip(&mean) {
            let want = if t == 0 { 0.0 } else { sd };
            assert!(
                (a - b - want).abs() < 1e-4,
                "t={t}: noise {} vs √β̃ {want}",
                a - b
            );
        }
    }
}

/// The package directory at run time (a test binary reused from a build cache may have been
/// compiled in another checkout, so the compile-time value can be stale).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
