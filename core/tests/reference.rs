//! Schedules and DDPM steps against diffusers' reference vectors (`testdata/ref/schedulers.json`,
//! `testdata/ref/schedulers.json`, a copy of the project's reference vectors: diffusers 0.42.1, float32 arithmetic).

use burn::prelude::*;
use serde_json::Value;
use tweedie_core::diffusion::{Transition, predict_x0};
use tweedie_core::schedule::{BetaSchedule, NoiseSchedule};

fn reference() -> Value {
    let p = format!("{}/../testdata/ref/schedulers.json", manifest_dir());
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference vectors")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// The reference is float32: ᾱ near 1 carries an absolute rounding error of ~2⁻²⁴, which
/// 1 − ᾱ turns into a relative error of ~6e-8/(1 − ᾱ). Our values are f64, so we allow 2e-5
/// relative plus four times that cancellation bound.
fn check(name: &str, ours: &[f64], theirs: &[f64], one_minus_ab: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{name}: length");
    for t in 0..ours.len() {
        let cancel = 2.4e-7 / one_minus_ab[t.saturating_sub(1)];
        let tol = theirs[t].abs() * (2e-5 + cancel) + 1e-12;
        assert!(
            (ours[t] - theirs[t]).abs() <= tol,
            "{name}[{t}]: ours {} reference {} (tol {tol:e})",
            ours[t],
            theirs[t]
        );
    }
}

#[test]
fn schedules_match_diffusers() {
    let r = reference();
    for (key, kind) in [
        ("linear", BetaSchedule::ddpm_linear()),
        ("cosine", BetaSchedule::iddpm_cosine()),
    ] {
        let refs = &r["schedules"][key];
        let s = NoiseSchedule::new(kind, refs["T"].as_u64().unwrap() as usize).unwrap();
        let oma: Vec<f64> = s.alphas_cumprod.iter().map(|a| 1.0 - a).collect();
        check(
            &format!("{key}.betas"),
            &s.betas,
            &floats(&refs["betas"]),
            &oma,
        );
        check(
            &format!("{key}.alphas_cumprod"),
            &s.alphas_cumprod,
            &floats(&refs["alphas_cumprod"]),
            &oma,
        );
        check(
            &format!("{key}.posterior_variance"),
            &s.posterior_variance,
            &floats(&refs["posterior_variance"]),
            &oma,
        );
        check(
            &format!("{key}.coef1"),
            &s.posterior_mean_coef1,
            &floats(&refs["posterior_mean_coef1"]),
            &oma,
        );
        check(
            &format!("{key}.coef2"),
            &s.posterior_mean_coef2,
            &floats(&refs["posterior_mean_coef2"]),
            &oma,
        );
    }
}

/// `scale[i]` bounds the magnitude of the terms combined into element i (for cancellation error).
fn close(name: &str, ours: &[f32], theirs: &[f64], rel: f64, cancel: f64, scale: &[f64]) {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let tol = rel * (1.0 + b.abs()) + cancel * scale[i];
        assert!(
            (*a as f64 - b).abs() <= tol,
            "{name}[{i}]: ours {a} reference {b}"
        );
    }
}

#[test]
fn ddpm_steps_match_diffusers() {
    let r = reference();
    let s = NoiseSchedule::new(BetaSchedule::ddpm_linear(), 1000).unwrap();
    let dev = Device::flex();
    let steps = r["ddpm_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    for st in steps {
        let t = st["t"].as_u64().unwrap() as usize;
        let tensor = |k: &str| {
            let v: Vec<f32> = floats(&st[k]).iter().map(|x| *x as f32).collect();
            Tensor::<4>::from_data(TensorData::new(v, [1, 1, 4, 4]), &dev)
        };
        let (x_t, eps) = (tensor("x_t"), tensor("eps"));
        let x0 = predict_x0(x_t.clone(), eps, &[s.alphas_cumprod[t]]);
        let x0_host = tweedie_core::host_values(x0.clone());
        close(
            &format!("pred_x0@{t}"),
            &x0_host,
            &floats(&st["pred_x0"]),
            2e-5,
            0.0,
            &[0.0; 16],
        );
        let tr = Transition::new(&s, t, t.checked_sub(1));
        let mean = tr.posterior_mean(x_t.clone(), x0);
        // diffusers forms the mean's coefficients from β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32 (see below).
        let xt_host = tweedie_core::host_values(x_t);
        let scale: Vec<f64> = x0_host
            .iter()
            .zip(&xt_host)
            .map(|(a, b)| (a.abs() + b.abs()) as f64)
            .collect();
        let cancel = 2.4e-7 / s.betas[t];
        close(
            &format!("posterior_mean@{t}"),
            &tweedie_core::host_values(mean),
            &floats(&st["posterior_mean"]),
            2e-5,
            cancel,
            &scale,
        );
        // diffusers' `_get_variance` recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32, whose rounding
        // (~6e-8 absolute) is relative error ~6e-8/β_t; allow four times that plus 2e-5.
        let var = st["posterior_variance"].as_f64().unwrap();
        let tol = var * (2e-5 + 2.4e-7 / s.betas[t]) + 1e-12;
        assert!(
            (tr.posterior_variance() - var).abs() <= tol,
            "variance@{t}: ours {} reference {var}",
            tr.posterior_variance()
        );
    }
}

/// The package directory at run time (a test binary reused from a build cache may have been
/// compiled in another checkout, so the compile-time value can be stale).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
