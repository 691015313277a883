//! diffusers model folders against diffusers itself, on the committed fixture
//! `testdata/diffusers/` (written by `scripts/diffusers-parity.py --fixture`: a reduced
//! `UNet2DModel` with every block type Tweedie maps, attention included, its ε̂ at fixed inputs
//! and a 10-step `DDPMScheduler` trajectory from recorded noise).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;
use tweedie_core::checkpoint::{self, ScheduleSpec, diffusers};
use tweedie_core::elbo::ModelVariance;
use tweedie_core::schedule::Spacing;
use tweedie_sample::prior::Prior;
use tweedie_sample::sampler::{Ddpm, NoiseSource, run};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/diffusers")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_diffusers_folder_maps_onto_tweedie_exactly() {
    let m = diffusers::read(&fixture()).unwrap();
    assert_eq!(
        (m.unet.in_channels, m.unet.resolution, m.unet.ch),
        (3, 8, 32)
    );
    assert_eq!(
        (m.unet.ch_mult.clone(), m.unet.num_res_blocks),
        (vec![1, 1], 1)
    );
    assert_eq!(
        m.unet.attn_resolutions,
        vec![4],
        "AttnDownBlock2D at level 1"
    );
    assert_eq!(
        m.schedule,
        ScheduleSpec::Linear {
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02
        }
    );
    assert_eq!(
        (m.variance, m.clip_sample),
        (Some(ModelVariance::Large), Some(true))
    );
    // ε̂ against diffusers' on the recorded inputs and timesteps.
    let r = reference();
    let dims: Vec<usize> = r["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let t: Vec<usize> = r["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let prior = Prior::load(&fixture(), &Device::flex(), false).unwrap();
    let eps = prior
        .eps(floats(&r["x"]), [dims[0], dims[1], dims[2], dims[3]], &t)
        .unwrap();
    let err = max_diff(&eps, &floats(&r["eps"]));
    assert!(err < 1e-4, "ε̂ differs from diffusers' by {err}");
}

/// Noise recorded from diffusers' generator, replayed step by step.
struct Replay(Vec<Vec<f32>>);

impl NoiseSource for Replay {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let v = self.0.remove(0);
        Tensor::from_data(TensorData::new(v, shape), device)
    }
}

#[test]
fn the_ddpm_sampler_reproduces_a_diffusers_trajectory() {
    let r = reference();
    let tr = &r["trajectory"];
    let prior = Prior::load(&fixture(), &Device::flex(), false).unwrap();
    let timesteps: Vec<usize> = tr["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    // DDPMScheduler.set_timesteps(10) spaces them leading, as Spacing::Leading does.
    assert_eq!(
        prior.schedule.timesteps(10, Spacing::Leading).unwrap(),
        timesteps
    );
    let defaults = prior.meta.sampling.unwrap();
    let mut ddpm = Ddpm {
        variance: defaults.variance.unwrap(),
        clip: defaults.clip.unwrap(),
    };
    let shape: Vec<usize> = tr["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let dev = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(floats(&tr["x_init"]), shape), &dev);
    // diffusers draws step noise at every step (and uses it unless t = 0); Tweedie draws it only
    // where it adds it, so the replay skips the last step's draw.
    let mut noise: Vec<Vec<f32>> = tr["noise"].as_array().unwrap().iter().map(floats).collect();
    noise.pop();
    let mut steps = Vec::new();
    let (x0, _) = run(
        &prior.model,
        &mut ddpm,
        &prior.schedule,
        &timesteps,
        x,
        &mut Replay(noise),
        |_, out| steps.push(tweedie_core::host_values(out.x_prev.clone())),
    );
    for (i, (got, want)) in steps
        .iter()
        .zip(tr["x_after_each_step"].as_array().unwrap())
        .enumerate()
    {
        let err = max_diff(got, &floats(want));
        assert!(err < 1e-4, "step {i} (t = {}): {err}", timesteps[i]);
    }
    assert_eq!(steps.len(), timesteps.len());
    assert!(tweedie_core::host_values(x0).iter().all(|v| v.is_finite()));
}

/// A copy of the fixture with one config value changed.
fn altered(file: &str, key: &str, value: Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-diffusers-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["unet", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(fixture().join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let p = dir.join(file);
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    dir
}

#[test]
fn what_does_not_map_is_one_line_naming_the_key_and_value() {
    use serde_json::json;
    let cases = [
        (
            "unet/config.json",
            "flip_sin_to_cos",
            json!(true),
            "flip_sin_to_cos = true",
        ),
        (
            "unet/config.json",
            "out_channels",
            json!(6),
            "out_channels = 6: a learned variance",
        ),
        (
            "unet/config.json",
            "norm_num_groups",
            json!(16),
            "norm_num_groups = 16",
        ),
        (
            "unet/config.json",
            "attention_head_dim",
            json!(8),
            "attention_head_dim = 8",
        ),
        (
            "unet/config.json",
            "down_block_types",
            json!(["DownBlock2D", "CrossAttnDownBlock2D"]),
            "down_block_types[1] = \"CrossAttnDownBlock2D\"",
        ),
        (
            "scheduler/scheduler_config.json",
            "prediction_type",
            json!("v_prediction"),
            "prediction_type = \"v_prediction\"",
        ),
        (
            "scheduler/scheduler_config.json",
            "variance_type",
            json!("learned_range"),
            "variance_type = \"learned_range\"",
        ),
        (
            "scheduler/scheduler_config.json",
            "beta_schedule",
            json!("scaled_linear"),
            "beta_schedule = \"scaled_linear\"",
        ),
    ];
    for (file, key, value, want) in cases {
        let dir = altered(file, key, value);
        let e = checkpoint::read_meta(&checkpoint::resolve(&dir).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains(file.rsplit('/').next().unwrap()),
            "{key}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn exported_weights_read_back_to_the_same_network() {
    let dev = Device::flex();
    let m = diffusers::read(&fixture()).unwrap();
    let unet = diffusers::load(&m, &dev).unwrap();
    let out = std::env::temp_dir().join(format!("tweedie-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    diffusers::export(
        &unet,
        &m.unet,
        &m.schedule,
        ModelVariance::Large,
        true,
        &out,
        "# card\n",
    )
    .unwrap();
    let back = diffusers::read(&out).unwrap();
    assert_eq!(
        (back.unet.clone(), back.schedule.clone()),
        (m.unet.clone(), m.schedule.clone())
    );
    assert_eq!(
        (back.variance, back.clip_sample),
        (Some(ModelVariance::Large), Some(true))
    );
    let again = diffusers::load(&back, &dev).unwrap();
    let x = tweedie_core::rng::Rng::new(3).normal_tensor([2, 3, 8, 8], &dev);
    use tweedie_core::denoiser::Denoiser;
    let (a, b) = (unet.eps(x.clone(), &[10, 900]), again.eps(x, &[10, 900]));
    assert_eq!(tweedie_core::host_values(a), tweedie_core::host_values(b));
    // A preconditioned network has no UNet2DModel form: refused, nothing written.
    let mut pre = m.unet.clone();
    pre.precondition = Some(tweedie_core::unet::Precondition {
        mean: 0.0,
        std: 0.5,
        schedule: m.schedule.clone(),
    });
    let e = diffusers::export(
        &unet,
        &pre,
        &m.schedule,
        ModelVariance::Small,
        true,
        &out.join("p"),
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("preconditioned"), "{e}");
    assert!(!out.join("p").exists());
    std::fs::remove_dir_all(out).unwrap();
}

/// Copies the fixture's files into `dst`.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn published_names_read_the_hugging_face_cache() {
    let root = std::env::temp_dir().join(format!("tweedie-hf-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let model = root.join("models--tweedie--fixture");
    copy_tree(&fixture(), &model.join("snapshots/0123abcd"));
    std::fs::create_dir_all(model.join("refs")).unwrap();
    std::fs::write(model.join("refs/main"), "0123abcd").unwrap();
    let sample = |checkpoint: &str, out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sample"))
            .env("HF_HUB_CACHE", &root)
            .args([
                "--checkpoint",
                checkpoint,
                "--n",
                "2",
                "--steps",
                "3",
                "--quiet",
            ])
            .arg("--out")
            .arg(root.join(out))
            .output()
            .unwrap()
    };
    let named = sample("hf:tweedie/fixture", "named");
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    let direct = sample(fixture().to_str().unwrap(), "direct");
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let npy = |d: &str| std::fs::read(root.join(d).join("samples.npy")).unwrap();
    assert_eq!(
        npy("named"),
        npy("direct"),
        "the cached snapshot is the same model"
    );

    let missing = sample("hf:tweedie/absent", "absent");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not in the Hugging Face cache") && err.contains("sample download"),
        "{err}"
    );
    std::fs::remove_dir_all(root).unwrap();
}
