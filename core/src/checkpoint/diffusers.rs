//! Model folders in diffusers' layout: a `UNet2DModel` (`config.json` +
//! `diffusion_pytorch_model.safetensors`, or the older `.bin`) and its `DDPMScheduler`
//! (`scheduler_config.json`), as published for the DDPM authors' models (`google/ddpm-cifar10-32`,
//! `google/ddpm-celebahq-256`, …) and as `DDPMPipeline.save_pretrained` writes them.
//!
//! [`read`] maps such a folder onto Tweedie's [`UNetConfig`] and [`ScheduleSpec`] exactly, or
//! says in one line which key holds a value that does not map; [`load`] reads its weights through
//! burn-store with an explicit key map ([`key_map`]); [`export`] writes a Tweedie model as such a
//! folder. It is the same network: diffusers' conversion of the official DDPM code is layer for
//! layer the one `UNet` follows (positional embedding with `freq_shift = 1`, [sin | cos],
//! GroupNorm(32, ε = 1e-6), single-head attention, stride-2 convolutions padded on the
//! bottom/right, [h | skip] concatenation).

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{
    BurnToPyTorchAdapter, ChainAdapter, KeyRemapper, ModuleAdapter, ModuleContext, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use serde_json::{Value, json};

use super::ScheduleSpec;
use crate::elbo::ModelVariance;
use crate::error::CoreError;
use crate::unet::{UNet, UNetConfig};

/// The weights file names diffusers writes and reads, in order of preference.
pub const WEIGHTS: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
];

/// A diffusers model folder, read and mapped.
#[derive(Debug, Clone)]
pub struct DiffusersModel {
    /// The folder holding the UNet's `config.json`.
    pub unet_dir: PathBuf,
    pub weights: PathBuf,
    pub unet: UNetConfig,
    pub schedule: ScheduleSpec,
    /// The scheduler's `variance_type` and `clip_sample`, when it has a config.
    pub variance: Option<ModelVariance>,
    pub clip_sample: Option<bool>,
    /// The scheduler config that was read, if any.
    pub scheduler_config: Option<PathBuf>,
}

/// Whether `path` is a diffusers model folder (a UNet's, or a pipeline's with `unet/`).
pub fn is_model_dir(path: &Path) -> bool {
    unet_dir(path).is_some()
}

fn unet_dir(path: &Path) -> Option<PathBuf> {
    let is_unet = |d: &Path| {
        fs::read(d.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| {
                v["_class_name"] == "UNet2DModel" || v.get("block_out_channels").is_some()
            })
    };
    if is_unet(path) {
        Some(path.to_path_buf())
    } else if is_unet(&path.join("unet")) {
        Some(path.join("unet"))
    } else {
        None
    }
}

/// A config key with a value Tweedie's U-Net cannot take.
fn unmappable(file: &Path, key: &str, value: &Value, why: &str) -> CoreError {
    CoreError::checkpoint(file, format!("{key} = {value}: {why}"))
}

fn get<'a>(cfg: &'a Value, key: &str) -> Option<&'a Value> {
    cfg.get(key).filter(|v| !v.is_null())
}

/// Checks that `key`, when present, holds `want` (its diffusers default when absent is
/// `want` too).
fn expect(cfg: &Value, file: &Path, key: &str, want: Value, why: &str) -> Result<(), CoreError> {
    match get(cfg, key) {
        Some(v)
            if *v != want
                && !(v.is_number() && want.is_number() && v.as_f64() == want.as_f64()) =>
        {
            Err(unmappable(file, key, v, why))
        }
        _ => Ok(()),
    }
}

fn usize_of(cfg: &Value, file: &Path, key: &str) -> Result<usize, CoreError> {
    get(cfg, key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| CoreError::checkpoint(file, format!("{key}: missing or not a count")))
}

/// The keys whose value Tweedie's U-Net fixes (one line naming the key where they differ).
fn check_fixed_keys(cfg: &Value, file: &Path) -> Result<(), CoreError> {
    let same = "Tweedie's U-Net (the DDPM paper's) has only this value";
    expect(cfg, file, "act_fn", json!("silu"), same)?;
    expect(
        cfg,
        file,
        "norm_num_groups",
        json!(32),
        "Tweedie's U-Net uses GroupNorm with 32 groups",
    )?;
    expect(
        cfg,
        file,
        "norm_eps",
        json!(1e-6),
        "Tweedie's U-Net uses GroupNorm's ε = 1e-6",
    )?;
    expect(cfg, file, "center_input_sample", json!(false), same)?;
    expect(cfg, file, "time_embedding_type", json!("positional"), same)?;
    expect(
        cfg,
        file,
        "flip_sin_to_cos",
        json!(false),
        "Tweedie's embedding is [sin | cos]",
    )?;
    expect(
        cfg,
        file,
        "freq_shift",
        json!(1),
        "Tweedie's embedding spaces frequencies by log(10000)/(half − 1)",
    )?;
    expect(cfg, file, "mid_block_scale_factor", json!(1), same)?;
    expect(
        cfg,
        file,
        "downsample_padding",
        json!(0),
        "Tweedie pads stride-2 convolutions on the bottom/right only (TensorFlow's SAME)",
    )?;
    expect(cfg, file, "downsample_type", json!("conv"), same)?;
    expect(cfg, file, "upsample_type", json!("conv"), same)?;
    expect(cfg, file, "resnet_time_scale_shift", json!("default"), same)?;
    expect(
        cfg,
        file,
        "add_attention",
        json!(true),
        "Tweedie's middle block has attention",
    )?;
    expect(
        cfg,
        file,
        "mid_block_type",
        json!("UNetMidBlock2D"),
        "Tweedie's middle block is UNetMidBlock2D",
    )?;
    for key in [
        "class_embed_type",
        "num_class_embeds",
        "attn_norm_num_groups",
    ] {
        if let Some(v) = get(cfg, key) {
            return Err(unmappable(
                file,
                key,
                v,
                "not supported by Tweedie's unconditional U-Net",
            ));
        }
    }
    Ok(())
}

/// The resolutions with attention, from the down and up block types (mirrored, one head).
fn attention_resolutions(
    cfg: &Value,
    file: &Path,
    size: usize,
    channels: &[usize],
) -> Result<Vec<usize>, CoreError> {
    let strings = |key: &str| -> Result<Vec<String>, CoreError> {
        get(cfg, key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .ok_or_else(|| CoreError::checkpoint(file, format!("{key}: missing")))
    };
    let down = strings("down_block_types")?;
    let up = strings("up_block_types")?;
    if down.len() != channels.len() || up.len() != channels.len() {
        return Err(CoreError::checkpoint(
            file,
            format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({}) must have one entry per level",
                down.len(),
                up.len(),
                channels.len()
            ),
        ));
    }
    let mut attn_resolutions = Vec::new();
    for (i, t) in down.iter().enumerate() {
        let attn = match t.as_str() {
            "DownBlock2D" => false,
            "AttnDownBlock2D" => true,
            _ => {
                return Err(unmappable(
                    file,
                    &format!("down_block_types[{i}]"),
                    &json!(t),
                    "Tweedie's U-Net has DownBlock2D and AttnDownBlock2D",
                ));
            }
        };
        let mirror = &up[up.len() - 1 - i];
        let up_attn = match mirror.as_str() {
            "UpBlock2D" => false,
            "AttnUpBlock2D" => true,
            _ => {
                return Err(unmappable(
                    file,
                    &format!("up_block_types[{}]", up.len() - 1 - i),
                    &json!(mirror),
                    "Tweedie's U-Net has UpBlock2D and AttnUpBlock2D",
                ));
            }
        };
        if attn != up_attn {
            return Err(unmappable(
                file,
                &format!("up_block_types[{}]", up.len() - 1 - i),
                &json!(mirror),
                "attention must sit at the same resolution on the way up as down",
            ));
        }
        if attn {
            attn_resolutions.push(size >> i);
        }
    }
    // One head: attention_head_dim absent, null, or the channels of every attention level.
    if let Some(v) = get(cfg, "attention_head_dim") {
        let d = v.as_u64().unwrap_or(0) as usize;
        let single = down
            .iter()
            .enumerate()
            .filter(|(_, t)| *t == "AttnDownBlock2D")
            .all(|(i, _)| channels[i] == d)
            && channels.last() == Some(&d);
        if !single {
            return Err(unmappable(
                file,
                "attention_head_dim",
                v,
                "Tweedie's attention has one head (attention_head_dim = null)",
            ));
        }
    }
    Ok(attn_resolutions)
}

/// Maps a `UNet2DModel` config onto [`UNetConfig`].
pub fn unet_config(cfg: &Value, file: &Path) -> Result<UNetConfig, CoreError> {
    if let Some(c) = get(cfg, "_class_name").filter(|c| *c != "UNet2DModel") {
        return Err(unmappable(
            file,
            "_class_name",
            c,
            "only UNet2DModel maps onto Tweedie's U-Net",
        ));
    }
    check_fixed_keys(cfg, file)?;
    let in_ch = usize_of(cfg, file, "in_channels")?;
    let out_ch = usize_of(cfg, file, "out_channels")?;
    if out_ch != in_ch {
        let why = if out_ch == 2 * in_ch {
            "a learned variance (2 × in_channels outputs); Tweedie's models predict ε only"
        } else {
            "the output must have in_channels channels (ε)"
        };
        return Err(unmappable(file, "out_channels", &json!(out_ch), why));
    }
    let size = match get(cfg, "sample_size") {
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
        Some(v) => v.as_u64(),
        None => None,
    }
    .ok_or_else(|| {
        let v = cfg.get("sample_size").cloned().unwrap_or(Value::Null);
        unmappable(
            file,
            "sample_size",
            &v,
            "Tweedie's U-Net takes square images of one size",
        )
    })? as usize;
    let channels: Vec<usize> = get(cfg, "block_out_channels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|v| v as usize))
                .collect()
        })
        .unwrap_or_default();
    let ch = *channels
        .first()
        .ok_or_else(|| CoreError::checkpoint(file, "block_out_channels: missing"))?;
    if ch == 0 || channels.iter().any(|c| c % ch != 0) {
        return Err(unmappable(
            file,
            "block_out_channels",
            &json!(channels),
            "every level's channels must be a multiple of the first (ch × ch_mult)",
        ));
    }
    let attn_resolutions = attention_resolutions(cfg, file, size, &channels)?;
    let dropout = get(cfg, "dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let config = UNetConfig::new(
        in_ch,
        size,
        ch,
        channels.iter().map(|c| c / ch).collect(),
        usize_of(cfg, file, "layers_per_block")?,
        attn_resolutions,
        dropout,
    );
    config
        .validate()
        .map_err(|e| CoreError::checkpoint(file, e.to_string()))?;
    Ok(config)
}

/// The schedule and sampling defaults of a scheduler config (`DDPMScheduler` and its kin).
pub fn scheduler(
    cfg: &Value,
    file: &Path,
) -> Result<(ScheduleSpec, Option<ModelVariance>, Option<bool>), CoreError> {
    expect(
        cfg,
        file,
        "prediction_type",
        json!("epsilon"),
        "Tweedie's models predict ε",
    )?;
    expect(
        cfg,
        file,
        "thresholding",
        json!(false),
        "dynamic thresholding is not supported",
    )?;
    expect(
        cfg,
        file,
        "clip_sample_range",
        json!(1.0),
        "Tweedie clips x̂_0 to [−1, 1]",
    )?;
    if let Some(v) = get(cfg, "trained_betas") {
        return Err(unmappable(
            file,
            "trained_betas",
            v,
            "give beta_schedule instead",
        ));
    }
    let timesteps = get(cfg, "num_train_timesteps")
        .and_then(Value::as_u64)
        .unwrap_or(1000) as usize;
    let f = |key: &str, default: f64| get(cfg, key).and_then(Value::as_f64).unwrap_or(default);
    let schedule = match get(cfg, "beta_schedule")
        .and_then(Value::as_str)
        .unwrap_or("linear")
    {
        "linear" => ScheduleSpec::Linear {
            timesteps,
            beta_start: f("beta_start", 1e-4),
            beta_end: f("beta_end", 0.02),
        },
        // diffusers' cosine schedule: s = 0.008, β capped at 0.999 (betas_for_alpha_bar).
        "squaredcos_cap_v2" => ScheduleSpec::Cosine {
            timesteps,
            s: 0.008,
            max_beta: 0.999,
        },
        other => {
            return Err(unmappable(
                file,
                "beta_schedule",
                &json!(other),
                "Tweedie has linear and squaredcos_cap_v2",
            ));
        }
    };
    schedule
        .build()
        .map_err(|e| CoreError::checkpoint(file, e.to_string()))?;
    let variance = match get(cfg, "variance_type") {
        None => None,
        Some(v) => Some(match v.as_str() {
            Some("fixed_small") => ModelVariance::Small,
            Some("fixed_large") => ModelVariance::Large,
            _ => {
                return Err(unmappable(
                    file,
                    "variance_type",
                    v,
                    "Tweedie's models have a fixed variance: fixed_small or fixed_large",
                ));
            }
        }),
    };
    let clip = get(cfg, "clip_sample").and_then(Value::as_bool);
    Ok((schedule, variance, clip))
}

fn read_json(path: &Path) -> Result<Value, CoreError> {
    let bytes = fs::read(path).map_err(|e| CoreError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CoreError::checkpoint(path, format!("not JSON: {e}")))
}

/// Reads a diffusers folder: the UNet's folder itself (its scheduler config beside it or in
/// `../scheduler/`), or a pipeline's folder (`unet/`, `scheduler/`). Without a scheduler config
/// the schedule is DDPM's (linear, 1e-4 to 0.02, T = 1000).
pub fn read(path: &Path) -> Result<DiffusersModel, CoreError> {
    let unet_dir = unet_dir(path).ok_or_else(|| {
        CoreError::checkpoint(
            path,
            "no UNet2DModel config.json (or unet/config.json) here",
        )
    })?;
    let cfg_path = unet_dir.join("config.json");
    let unet = unet_config(&read_json(&cfg_path)?, &cfg_path)?;
    let weights = WEIGHTS
        .iter()
        .map(|w| unet_dir.join(w))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CoreError::checkpoint(
                &unet_dir,
                format!("no weights ({} or {})", WEIGHTS[0], WEIGHTS[1]),
            )
        })?;
    let candidates = [
        unet_dir.join("scheduler_config.json"),
        unet_dir.join("scheduler/scheduler_config.json"),
        path.join("scheduler/scheduler_config.json"),
        unet_dir.join("../scheduler/scheduler_config.json"),
    ];
    let scheduler_config = candidates.into_iter().find(|p| p.is_file());
    let (schedule, variance, clip_sample) = match &scheduler_config {
        Some(p) => scheduler(&read_json(p)?, p)?,
        None => (
            ScheduleSpec::Linear {
                timesteps: 1000,
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            None,
            None,
        ),
    };
    Ok(DiffusersModel {
        unet_dir,
        weights,
        unet,
        schedule,
        variance,
        clip_sample,
        scheduler_config,
    })
}

/// The diffusers key of every parameter of a U-Net of `config`, as (Tweedie path, diffusers
/// key) pairs. Tweedie's paths are its modules' field names; diffusers' are the names of
/// `UNet2DModel`'s modules (attention with the current `to_q`, `to_k`, `to_v`, `to_out.0`; older
/// files' `query`, `key`, `value`, `proj_attn` are read too).
pub fn key_map(config: &UNetConfig) -> Vec<(String, String)> {
    let mut map = Vec::new();
    let mut add = |ours: String, theirs: String| {
        for p in ["weight", "bias"] {
            map.push((format!("{ours}.{p}"), format!("{theirs}.{p}")));
        }
    };
    let res = |ours: &str, theirs: &str, shortcut: bool, add: &mut dyn FnMut(String, String)| {
        for (a, b) in [
            ("norm1", "norm1"),
            ("conv1", "conv1"),
            ("temb_proj", "time_emb_proj"),
            ("norm2", "norm2"),
            ("conv2", "conv2"),
        ] {
            add(format!("{ours}.{a}"), format!("{theirs}.{b}"));
        }
        if shortcut {
            add(
                format!("{ours}.nin_shortcut"),
                format!("{theirs}.conv_shortcut"),
            );
        }
    };
    let attn = |ours: &str, theirs: &str, add: &mut dyn FnMut(String, String)| {
        for (a, b) in [
            ("norm", "group_norm"),
            ("q", "to_q"),
            ("k", "to_k"),
            ("v", "to_v"),
            ("proj_out", "to_out.0"),
        ] {
            add(format!("{ours}.{a}"), format!("{theirs}.{b}"));
        }
    };
    add("temb_dense0".into(), "time_embedding.linear_1".into());
    add("temb_dense1".into(), "time_embedding.linear_2".into());
    add("conv_in".into(), "conv_in".into());
    let ch = config.ch;
    let levels = config.ch_mult.len();
    let (mut cur, mut r) = (ch, config.resolution);
    let mut skips = vec![ch];
    for (i, m) in config.ch_mult.iter().enumerate() {
        let cout = ch * m;
        for j in 0..config.num_res_blocks {
            res(
                &format!("down.{i}.blocks.{j}"),
                &format!("down_blocks.{i}.resnets.{j}"),
                cur != cout,
                &mut add,
            );
            cur = cout;
            if config.attn_resolutions.contains(&r) {
                attn(
                    &format!("down.{i}.attns.{j}"),
                    &format!("down_blocks.{i}.attentions.{j}"),
                    &mut add,
                );
            }
            skips.push(cur);
        }
        if i + 1 != levels {
            add(
                format!("down.{i}.resample"),
                format!("down_blocks.{i}.downsamplers.0.conv"),
            );
            skips.push(cur);
            r = r.div_ceil(2);
        }
    }
    res("mid_block1", "mid_block.resnets.0", false, &mut add);
    attn("mid_attn", "mid_block.attentions.0", &mut add);
    res("mid_block2", "mid_block.resnets.1", false, &mut add);
    for (u, i) in (0..levels).rev().enumerate() {
        let cout = ch * config.ch_mult[i];
        for j in 0..=config.num_res_blocks {
            let skip = skips.pop().unwrap_or(0);
            res(
                &format!("up.{u}.blocks.{j}"),
                &format!("up_blocks.{u}.resnets.{j}"),
                cur + skip != cout,
                &mut add,
            );
            cur = cout;
            if config.attn_resolutions.contains(&r) {
                attn(
                    &format!("up.{u}.attns.{j}"),
                    &format!("up_blocks.{u}.attentions.{j}"),
                    &mut add,
                );
            }
        }
        if i != 0 {
            add(
                format!("up.{u}.resample"),
                format!("up_blocks.{u}.upsamplers.0.conv"),
            );
            r *= 2;
        }
    }
    add("norm_out".into(), "conv_norm_out".into());
    add("conv_out".into(), "conv_out".into());
    map
}

/// diffusers' attention projections are `Linear` ([out, in]); Tweedie's are 1×1 convolutions
/// ([out, in, 1, 1]), the same numbers: reshape between the two.
#[derive(Debug, Clone)]
struct AttentionConv {
    to_burn: bool,
}

impl ModuleAdapter for AttentionConv {
    fn adapt(
        &self,
        tensor: burn::store::burn_pack::Tensor,
        ctx: ModuleContext<'_>,
    ) -> burn::store::burn_pack::Tensor {
        let is_attn = [".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"]
            .iter()
            .any(|s| tensor.name.ends_with(s));
        if !is_attn || ctx.module_type() != Some("Struct:Conv2d") {
            return tensor;
        }
        let dims = tensor.shape.to_vec();
        let shape = match (self.to_burn, dims.as_slice()) {
            (true, [o, i]) => vec![*o, *i, 1, 1],
            (false, [o, i, 1, 1]) => vec![*o, *i],
            _ => return tensor,
        };
        let name = tensor.name.clone();
        let dtype = tensor.dtype;
        let target = Shape::from(shape.clone());
        burn::store::bridge::map_data(tensor, name, dtype, target, move |d| {
            let dtype = d.dtype();
            TensorData::from_bytes_vec(d.as_bytes().to_vec(), shape.clone(), dtype)
        })
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// A key remapper from the file's keys to Tweedie's paths (or back), one exact pattern per key.
fn remapper(config: &UNetConfig, to_burn: bool) -> Result<KeyRemapper, CoreError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (ours, theirs) in key_map(config) {
        if to_burn {
            pairs.push((format!("^{}$", regex_escape(&theirs)), ours));
        } else {
            // Saving, a norm's parameters may still carry burn's names (gamma, beta) here.
            let burn_name = ours.replace(".weight", ".gamma").replace(".bias", ".beta");
            pairs.push((format!("^{}$", regex_escape(&ours)), theirs.clone()));
            pairs.push((format!("^{}$", regex_escape(&burn_name)), theirs));
        }
    }
    KeyRemapper::from_pattern_iter(pairs)
        .map_err(|e| CoreError::InvalidConfig(format!("key map: {e}")))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// Loads the model's weights into a Tweedie `UNet` on `device`; every parameter must be found,
/// of the right shape, and every tensor of the file used.
pub fn load(model: &DiffusersModel, device: &Device) -> Result<UNet, CoreError> {
    super::check_weights_fit(&model.weights, model.unet.num_params())?;
    let mut unet = model.unet.init(device);
    let adapter = ChainAdapter::new(AttentionConv { to_burn: true }, PyTorchToBurnAdapter);
    let remap = renamed(remapper(&model.unet, true)?);
    let is_bin = model.weights.extension().is_some_and(|e| e == "bin");
    let bad = |e: String| CoreError::checkpoint(&model.weights, e);
    let result = if is_bin {
        // PyTorch's pickle format: its tensors, renamed, then applied through the same adapters.
        let reader = burn::store::pytorch_reader::PytorchReader::new(&model.weights)
            .map_err(|e| bad(format!("not a PyTorch checkpoint: {e}")))?;
        let tensors: Vec<_> = reader
            .into_tensors()
            .into_iter()
            .map(|(name, t)| {
                let mut t = burn::store::bridge::from_pytorch(t);
                t.name = name;
                t
            })
            .collect();
        let (tensors, _) = remap.remap(tensors);
        unet.apply(tensors, None, Some(Box::new(adapter)), false)
    } else {
        let mut store = SafetensorsStore::from_file(&model.weights)
            .with_from_adapter(adapter)
            .remap(remap)
            .allow_partial(true);
        unet.load_from(&mut store)
            .map_err(|e| bad(format!("{e}")))?
    };
    if !result.missing.is_empty() || !result.unused.is_empty() || !result.errors.is_empty() {
        let first = |v: &[String]| v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
        return Err(CoreError::checkpoint(
            &model.weights,
            format!(
                "weights do not fit the config: {} missing ({}), {} unused ({}), {} errors",
                missing.len(),
                first(&missing),
                result.unused.len(),
                first(&result.unused),
                result.errors.len()
            ),
        ));
    }
    Ok(unet)
}

/// `remap` preceded by the rewrite of older files' attention names (`query`, `key`, `value`,
/// `proj_attn`) to the current ones; the patterns apply in order.
fn renamed(remap: KeyRemapper) -> KeyRemapper {
    let old = [
        (r"\.attentions\.(\d+)\.query\.", ".attentions.$1.to_q."),
        (r"\.attentions\.(\d+)\.key\.", ".attentions.$1.to_k."),
        (r"\.attentions\.(\d+)\.value\.", ".attentions.$1.to_v."),
        (
            r"\.attentions\.(\d+)\.proj_attn\.",
            ".attentions.$1.to_out.0.",
        ),
    ];
    let mut pairs: Vec<(regex::Regex, String)> = old
        .iter()
        .map(|(p, r)| {
            (
                regex::Regex::new(p).expect("a valid pattern"),
                r.to_string(),
            )
        })
        .collect();
    pairs.extend(remap.to_regex_pairs());
    KeyRemapper::from_compiled_patterns(pairs)
}

/// The `UNet2DModel` config of a Tweedie U-Net; preconditioned networks have none (their
/// timestep-dependent input and output scalings are not layers of `UNet2DModel`).
pub fn unet_json(config: &UNetConfig) -> Result<Value, CoreError> {
    if config.cond_channels > 0 {
        return Err(CoreError::InvalidConfig(
            "a conditional network (trained with a `[condition]` section) is not a DDPMPipeline's \
             unconditional UNet2DModel"
                .into(),
        ));
    }
    if config.precondition.is_some() {
        return Err(CoreError::InvalidConfig(
            "a preconditioned network (`[model] precondition = true`) has no UNet2DModel form: its \
             timestep-dependent input and output scalings are not diffusers layers"
                .into(),
        ));
    }
    let levels = config.ch_mult.len();
    let attn_at = |i: usize| config.attn_resolutions.contains(&(config.resolution >> i));
    let down: Vec<&str> = (0..levels)
        .map(|i| {
            if attn_at(i) {
                "AttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = (0..levels)
        .rev()
        .map(|i| {
            if attn_at(i) {
                "AttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    Ok(json!({
        "_class_name": "UNet2DModel",
        "_diffusers_version": "0.42.1",
        "sample_size": config.resolution,
        "in_channels": config.in_channels,
        "out_channels": config.in_channels,
        "center_input_sample": false,
        "time_embedding_type": "positional",
        "freq_shift": 1,
        "flip_sin_to_cos": false,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": config.ch_mult.iter().map(|m| m * config.ch).collect::<Vec<_>>(),
        "layers_per_block": config.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 0,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": config.dropout,
        "act_fn": "silu",
        "attention_head_dim": null,
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
        "resnet_time_scale_shift": "default",
        "add_attention": true,
        "mid_block_type": "UNetMidBlock2D",
    }))
}

/// The `DDPMScheduler` config of a schedule and its sampling defaults.
pub fn scheduler_json(
    schedule: &ScheduleSpec,
    variance: ModelVariance,
    clip: bool,
) -> Result<Value, CoreError> {
    let (timesteps, beta_schedule, start, end) = match *schedule {
        ScheduleSpec::Linear {
            timesteps,
            beta_start,
            beta_end,
        } => (timesteps, "linear", beta_start, beta_end),
        ScheduleSpec::Cosine {
            timesteps,
            s,
            max_beta,
        } if s == 0.008 && max_beta == 0.999 => (timesteps, "squaredcos_cap_v2", 1e-4, 0.02),
        ScheduleSpec::Cosine { s, max_beta, .. } => {
            return Err(CoreError::InvalidConfig(format!(
                "a cosine schedule with s = {s}, max_beta = {max_beta} has no diffusers name \
                 (squaredcos_cap_v2 is s = 0.008, max_beta = 0.999)"
            )));
        }
    };
    Ok(json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.42.1",
        "num_train_timesteps": timesteps,
        "beta_start": start,
        "beta_end": end,
        "beta_schedule": beta_schedule,
        "trained_betas": null,
        "variance_type": match variance {
            ModelVariance::Small => "fixed_small",
            ModelVariance::Large => "fixed_large",
        },
        "clip_sample": clip,
        "clip_sample_range": 1.0,
        "prediction_type": "epsilon",
        "thresholding": false,
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }))
}

/// Writes `unet` (of `config`) and its schedule as a `DDPMPipeline` folder `out`:
/// `model_index.json`, `unet/{config.json, diffusion_pytorch_model.safetensors}`,
/// `scheduler/scheduler_config.json` and `README.md` (`card`). Nothing is written unless every
/// part maps.
pub fn export(
    unet: &UNet,
    config: &UNetConfig,
    schedule: &ScheduleSpec,
    variance: ModelVariance,
    clip: bool,
    out: &Path,
    card: &str,
) -> Result<(), CoreError> {
    let unet_cfg = unet_json(config)?;
    let sched_cfg = scheduler_json(schedule, variance, clip)?;
    for d in [out.join("unet"), out.join("scheduler")] {
        fs::create_dir_all(&d).map_err(|e| CoreError::io(&d, e))?;
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    let index = json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    });
    let weights = out.join("unet").join(WEIGHTS[0]);
    let adapter = ChainAdapter::new(AttentionConv { to_burn: false }, BurnToPyTorchAdapter);
    let mut store = SafetensorsStore::from_file(&weights)
        .with_to_adapter(adapter)
        .remap(remapper(config, false)?)
        .metadata("format", "pt")
        .overwrite(true);
    unet.save_into(&mut store)
        .map_err(|e| CoreError::checkpoint(&weights, format!("cannot write the weights: {e}")))?;
    super::write_atomic(&out.join("unet/config.json"), &pretty(&unet_cfg))?;
    super::write_atomic(
        &out.join("scheduler/scheduler_config.json"),
        &pretty(&sched_cfg),
    )?;
    super::write_atomic(&out.join("model_index.json"), &pretty(&index))?;
    super::write_atomic(&out.join("README.md"), card.as_bytes())
}
