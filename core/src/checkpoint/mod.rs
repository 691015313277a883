//! Checkpoint directories: written whole or not at all.
//!
//! Layout: `<run>/step-00000500/{model.bpk, checkpoint.json, ...}` plus `<run>/latest`, a one-line
//! file naming the newest complete step directory. A step directory is first written under a
//! temporary name, every file synced, then renamed into place; `latest` is replaced by rename too.
//! A crash therefore leaves either the previous checkpoint or the new one, never a half-written one.
//!
//! Wherever a checkpoint is read, a diffusers model folder is read too ([`diffusers`]): it maps
//! onto the same metadata and network.

pub mod diffusers;
pub mod hub;
pub mod torch_file;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::elbo::ModelVariance;
use crate::error::CoreError;
use crate::schedule::{BetaSchedule, NoiseSchedule};
use crate::unet::{UNet, UNetConfig};

/// Version of the checkpoint layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// File holding the [`CheckpointMeta`].
pub const META_FILE: &str = "checkpoint.json";
/// File holding the model weights (burnpack).
pub const MODEL_FILE: &str = "model.bpk";
/// File holding the EMA of the weights (burnpack), when the run kept one.
pub const EMA_FILE: &str = "ema.bpk";

/// Which weights an inference model was loaded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Ema,
    Raw,
    /// The one set of weights of a diffusers folder.
    Diffusers,
}

impl Weights {
    pub fn name(self) -> &'static str {
        match self {
            Weights::Ema => "ema",
            Weights::Raw => "raw",
            Weights::Diffusers => "diffusers",
        }
    }
}

/// Sampling defaults a model came with (a diffusers scheduler's `variance_type` and
/// `clip_sample`); flags override them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    pub variance: Option<ModelVariance>,
    pub clip: Option<bool>,
}

/// The noise schedule as stored in checkpoints and configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleSpec {
    Linear {
        timesteps: usize,
        beta_start: f64,
        beta_end: f64,
    },
    Cosine {
        timesteps: usize,
        s: f64,
        max_beta: f64,
    },
}

impl ScheduleSpec {
    pub fn build(&self) -> Result<NoiseSchedule, CoreError> {
        match *self {
            ScheduleSpec::Linear {
                timesteps,
                beta_start,
                beta_end,
            } => NoiseSchedule::new(
                BetaSchedule::Linear {
                    start: beta_start,
                    end: beta_end,
                },
                timesteps,
            ),
            ScheduleSpec::Cosine {
                timesteps,
                s,
                max_beta,
            } => NoiseSchedule::new(BetaSchedule::Cosine { s, max_beta }, timesteps),
        }
    }
}

/// Everything needed to rebuild the model and its diffusion from a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Optimiser steps taken when this checkpoint was written.
    pub step: usize,
    #[serde(deserialize_with = "unet_config_any_version")]
    pub unet: UNetConfig,
    pub schedule: ScheduleSpec,
    /// The dataset the model was trained on (informative; `diffusers` for an imported model).
    pub dataset: String,
    /// Sampling defaults (imported models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingDefaults>,
    /// A conditional model's observation model (its training file's `[condition]` section, which
    /// only `tweedie-sample` reads): what it may be used for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<serde_json::Value>,
}

/// A checkpoint's `unet`, also as written before `cond_channels` existed (an unconditional
/// network: 0), so that older checkpoints stay readable.
fn unet_config_any_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UNetConfig, D::Error> {
    let mut v = serde_json::Value::deserialize(d)?;
    if let Some(m) = v.as_object_mut() {
        m.entry("cond_channels")
            .or_insert(serde_json::Value::from(0));
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

/// The step directory's name for `step`.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn sync_write(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let mut f = fs::File::create(path).map_err(|e| CoreError::io(path, e))?;
    f.write_all(bytes).map_err(|e| CoreError::io(path, e))?;
    f.sync_all().map_err(|e| CoreError::io(path, e))
}

/// Writes `bytes` to `path` atomically: a temporary sibling, synced, then renamed over `path`.
/// On failure the temporary is removed and `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let r = sync_write(&tmp, bytes)
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e)));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Writes the directory `dest` holding `files` atomically: a temporary sibling
/// `.tmp-<name>-<pid>` with every file synced, then renamed to `dest` (replacing one that
/// exists). On failure the temporary is removed and `dest` is as it was.
pub fn write_dir_atomic(dest: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), CoreError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    }
    let written = fs::create_dir_all(&tmp)
        .map_err(|e| CoreError::io(&tmp, e))
        .and_then(|_| {
            files
                .iter()
                .try_for_each(|(file, bytes)| sync_write(&tmp.join(file), bytes))
        });
    if let Err(e) = written {
        // A partial directory would only take space (a full disk stays full): remove it.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|e| CoreError::io(dest, e))?;
    }
    fs::rename(&tmp, dest).map_err(|e| CoreError::io(dest, e))
}

/// Writes a complete checkpoint `run_dir/step-NNNNNNNN/` holding `files`, points `run_dir/latest`
/// at it and removes all but the newest `keep_last` step directories (0 keeps all).
pub fn write_checkpoint(
    run_dir: &Path,
    step: usize,
    files: &[(&str, Vec<u8>)],
    keep_last: usize,
) -> Result<PathBuf, CoreError> {
    let name = step_dir_name(step);
    let dest = run_dir.join(&name);
    // Re-saving the same step (e.g. the final step after a periodic save) replaces it.
    if let Err(e) = write_dir_atomic(&dest, files) {
        let why = match e {
            CoreError::Io { error, .. } => error.to_string(),
            e => e.to_string(),
        };
        return Err(CoreError::checkpoint(
            &dest,
            format!("not written ({why}); the previous checkpoint is intact"),
        ));
    }
    write_atomic(&run_dir.join("latest"), format!("{name}\n").as_bytes())?;
    if keep_last > 0 {
        let steps = list_steps(run_dir)?;
        let excess = steps.len().saturating_sub(keep_last);
        for old in steps.into_iter().take(excess) {
            let p = run_dir.join(step_dir_name(old));
            fs::remove_dir_all(&p).map_err(|e| CoreError::io(&p, e))?;
        }
    }
    Ok(dest)
}

/// The step numbers of the `step-NNNNNNNN` directories in `run_dir`, ascending.
pub fn list_steps(run_dir: &Path) -> Result<Vec<usize>, CoreError> {
    let entries = fs::read_dir(run_dir).map_err(|e| CoreError::io(run_dir, e))?;
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("step-").and_then(|s| s.parse().ok()))
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// Resolves what the user named: a published model's name (`hf:<org>/<model>`, from the Hugging
/// Face cache, see [`hub`]), a diffusers model folder, a step directory (holding
/// `checkpoint.json`) or a run directory,
/// whose newest complete step directory is taken. That is the one `latest` names, unless the
/// process was stopped between renaming a finished step directory into place and updating
/// `latest`: a step directory exists only once complete, so the newest one wins.
pub fn resolve(path: &Path) -> Result<PathBuf, CoreError> {
    if let Some(repo) = hub::repo_of(path) {
        return resolve(&hub::snapshot(repo)?);
    }
    if path.join(META_FILE).is_file() || diffusers::is_model_dir(path) {
        return Ok(path.to_path_buf());
    }
    if path.is_dir()
        && let Some(step) = list_steps(path)?
            .into_iter()
            .rev()
            .find(|s| path.join(step_dir_name(*s)).join(META_FILE).is_file())
    {
        return Ok(path.join(step_dir_name(step)));
    }
    let latest = path.join("latest");
    if latest.is_file() {
        let name = fs::read_to_string(&latest).map_err(|e| CoreError::io(&latest, e))?;
        let dir = path.join(name.trim());
        if dir.join(META_FILE).is_file() {
            return Ok(dir);
        }
        return Err(CoreError::checkpoint(
            &latest,
            format!("points at `{}`, which holds no {META_FILE}", name.trim()),
        ));
    }
    if !path.exists() {
        return Err(CoreError::checkpoint(path, "no such directory"));
    }
    Err(CoreError::checkpoint(
        path,
        format!("neither a run directory (no `latest`) nor a checkpoint (no {META_FILE})"),
    ))
}

/// Reads the metadata of a resolved checkpoint directory.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, CoreError> {
    if !dir.join(META_FILE).is_file() && diffusers::is_model_dir(dir) {
        let m = diffusers::read(dir)?;
        return Ok(CheckpointMeta {
            format: FORMAT_VERSION,
            step: 0,
            unet: m.unet,
            schedule: m.schedule,
            dataset: "diffusers".into(),
            sampling: Some(SamplingDefaults {
                variance: m.variance,
                clip: m.clip_sample,
            }),
            observation: None,
        });
    }
    let p = dir.join(META_FILE);
    let bytes = fs::read(&p).map_err(|e| CoreError::io(&p, e))?;
    parse_meta(&bytes, &p)
}

/// Parses and validates checkpoint metadata; `p` names the file in errors.
pub fn parse_meta(bytes: &[u8], p: &Path) -> Result<CheckpointMeta, CoreError> {
    let meta: CheckpointMeta = serde_json::from_slice(bytes)
        .map_err(|e| CoreError::checkpoint(p, format!("unreadable metadata: {e}")))?;
    if meta.format != FORMAT_VERSION {
        return Err(CoreError::checkpoint(
            p,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                meta.format
            ),
        ));
    }
    meta.unet
        .validate()
        .map_err(|e| CoreError::checkpoint(p, e.to_string()))?;
    meta.schedule
        .build()
        .map_err(|e| CoreError::checkpoint(p, e.to_string()))?;
    Ok(meta)
}

/// Serialises a module's parameters (burnpack bytes).
pub fn module_bytes<M: Module>(module: M) -> Result<Vec<u8>, CoreError> {
    let bytes = module
        .into_record()
        .into_bytes()
        .map_err(|e| CoreError::InvalidConfig(format!("cannot serialise the model: {e}")))?;
    Ok(bytes.to_vec())
}

/// Loads burnpack bytes from `path` into `module`; every tensor must be present and of the right
/// shape, and no extra tensor may remain.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, CoreError> {
    let bytes = fs::read(path).map_err(|e| CoreError::io(path, e))?;
    load_module_bytes(module, bytes, path)
}

/// [`load_module`] from the file's bytes; `path` names it in errors.
pub fn load_module_bytes<M: Module>(
    module: M,
    bytes: Vec<u8>,
    path: &Path,
) -> Result<M, CoreError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| CoreError::checkpoint(path, format!("damaged weights file: {e}")))?;
    module
        .try_load_record(record)
        .map_err(|e| CoreError::checkpoint(path, format!("weights do not fit the model: {e}")))
}

/// Refuses a weights file too small to hold `params` parameters (at 2 bytes each, the smallest
/// float type), before a model of that size is allocated: a damaged or hostile header must not
/// drive the allocation.
pub fn check_weights_fit(path: &Path, params: u64) -> Result<(), CoreError> {
    let len = fs::metadata(path)
        .map_err(|e| CoreError::io(path, e))?
        .len();
    if len / 2 < params {
        return Err(CoreError::checkpoint(
            path,
            format!("{len} bytes cannot hold the {params} parameters the metadata describes"),
        ));
    }
    Ok(())
}

/// Loads the U-Net of a resolved checkpoint directory on `device` (raw weights).
pub fn load_unet(dir: &Path, meta: &CheckpointMeta, device: &Device) -> Result<UNet, CoreError> {
    if meta.dataset == "diffusers" && diffusers::is_model_dir(dir) {
        return diffusers::load(&diffusers::read(dir)?, device);
    }
    let path = dir.join(MODEL_FILE);
    check_weights_fit(&path, meta.unet.num_params())?;
    load_module(meta.unet.init(device), &path)
}

/// Loads the U-Net for sampling or evaluation: the EMA weights unless `raw` is asked for or the
/// checkpoint has none (then the raw weights; the returned [`Weights`] says which).
pub fn load_for_inference(
    dir: &Path,
    meta: &CheckpointMeta,
    device: &Device,
    raw: bool,
) -> Result<(UNet, Weights), CoreError> {
    if meta.dataset == "diffusers" && diffusers::is_model_dir(dir) {
        return Ok((
            diffusers::load(&diffusers::read(dir)?, device)?,
            Weights::Diffusers,
        ));
    }
    let ema = dir.join(EMA_FILE);
    let (path, which) = if !raw && ema.is_file() {
        (ema, Weights::Ema)
    } else {
        (dir.join(MODEL_FILE), Weights::Raw)
    };
    check_weights_fit(&path, meta.unet.num_params())?;
    Ok((load_module(meta.unet.init(device), &path)?, which))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_written_before_conditional_models_read_as_unconditional() {
        let meta = CheckpointMeta {
            format: FORMAT_VERSION,
            step: 3,
            unet: UNetConfig::new(1, 8, 32, vec![1], 1, vec![], 0.0).with_cond_channels(2),
            schedule: ScheduleSpec::Linear {
                timesteps: 10,
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            dataset: "mnist".into(),
            sampling: None,
            observation: None,
        };
        let mut v = serde_json::to_value(&meta).unwrap();
        let p = Path::new("checkpoint.json");
        assert_eq!(
            parse_meta(&serde_json::to_vec(&v).unwrap(), p).unwrap(),
            meta
        );
        v["unet"].as_object_mut().unwrap().remove("cond_channels");
        let old = parse_meta(&serde_json::to_vec(&v).unwrap(), p).unwrap();
        assert_eq!(old.unet.cond_channels, 0);
        assert_eq!(old.unet.with_cond_channels(2), meta.unet);
    }

    #[test]
    fn a_failed_checkpoint_write_leaves_the_previous_one_and_no_temporary() {
        let run = std::env::temp_dir().join(format!("tweedie-ckpt-fail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        let ok = [(META_FILE, b"{}".to_vec())];
        write_checkpoint(&run, 10, &ok, 2).unwrap();
        // A file in a missing sub-directory fails mid-write, as a full disk would.
        let bad = [
            (META_FILE, b"{}".to_vec()),
            ("missing/model.bpk", vec![0; 8]),
        ];
        assert!(write_checkpoint(&run, 20, &bad, 2).is_err());
        let mut names: Vec<String> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["latest", "step-00000010"]);
        assert_eq!(
            fs::read_to_string(run.join("latest")).unwrap(),
            "step-00000010\n"
        );
        assert!(write_atomic(&run.join("missing/x"), b"y").is_err());
        fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn json_floats_round_trip_bit_for_bit() {
        // Metadata, metrics and run records are JSON: a value read back must be the value
        // written (serde_json's `float_roundtrip`), or resuming a run or a sweep changes numbers
        // in the last place (seen: a reused FID 127.39283000146611 came back as …612).
        let mut rng = crate::rng::Rng::new(3);
        let mut xs = vec![127.39283000146611, 124.64330134468855, 0.1, 1e-300, -2.5e17];
        xs.extend(
            (0..10_000).map(|_| (rng.uniform() - 0.5) * 10f64.powi(rng.below(40) as i32 - 20)),
        );
        for x in xs {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e} came back as {back:e}");
        }
    }
}
