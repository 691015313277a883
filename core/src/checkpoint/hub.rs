//! Published models by name, `hf:<org>/<model>` (e.g. `hf:google/ddpm-cifar10-32`): read from the
//! Hugging Face cache in its standard layout (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; `models--<org>--<model>/snapshots/<revision>/`, the revision named
//! by `refs/main`), where `huggingface-cli download`, diffusers and [`fetch`] put them. Nothing is
//! downloaded unless asked (`sample download`): [`fetch`] needs a build with the `hub` feature and a network.

use std::path::{Path, PathBuf};

use crate::error::CoreError;

/// The prefix of a model name.
pub const PREFIX: &str = "hf:";

/// The model name `path` spells, if it is one (`hf:org/model`).
pub fn repo_of(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix(PREFIX)
}

/// The cache root of this environment.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map_or(PathBuf::from("."), PathBuf::from);
    home.join(".cache/huggingface/hub")
}

/// `org/model` as its two parts.
fn split(repo: &str) -> Result<(&str, &str), CoreError> {
    repo.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            CoreError::InvalidConfig(format!("{PREFIX}{repo}: expected {PREFIX}<org>/<model>"))
        })
}

/// `repo`'s snapshot folder in the cache at `root`: the revision `refs/main` names, else the only
/// snapshot there is.
pub fn snapshot_in(root: &Path, repo: &str) -> Result<PathBuf, CoreError> {
    let (org, name) = split(repo)?;
    let model = root.join(format!("models--{org}--{name}"));
    let snapshots = model.join("snapshots");
    let not_cached = || {
        CoreError::checkpoint(
            &model,
            format!(
                "{repo} is not in the Hugging Face cache: fetch it with `sample download \
                 {PREFIX}{repo}` (a build with the `hub` feature) or `huggingface-cli download \
                 {repo}`, or give its folder"
            ),
        )
    };
    if let Ok(rev) = std::fs::read_to_string(model.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|_| not_cached())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        0 => Err(not_cached()),
        n => Err(CoreError::checkpoint(
            &snapshots,
            format!("{n} snapshots and no refs/main: give the snapshot folder itself"),
        )),
    }
}

/// `repo`'s snapshot folder in this environment's cache.
pub fn snapshot(repo: &str) -> Result<PathBuf, CoreError> {
    snapshot_in(&cache_root(), repo)
}

/// Downloads `repo`'s UNet and scheduler files into the cache (the `hub` feature; hf-hub's
/// blocking client) and returns its snapshot folder.
#[cfg(feature = "hub")]
pub fn fetch(repo: &str) -> Result<PathBuf, CoreError> {
    split(repo)?;
    let api = hf_hub::api::sync::Api::new()
        .map_err(|e| CoreError::InvalidConfig(format!("{PREFIX}{repo}: {e}")))?;
    let model = api.model(repo.to_string());
    let first = |names: &[&str]| -> Result<PathBuf, CoreError> {
        let mut last = String::new();
        for n in names {
            match model.get(n) {
                Ok(p) => return Ok(p),
                Err(e) => last = e.to_string(),
            }
        }
        Err(CoreError::InvalidConfig(format!(
            "{PREFIX}{repo}: none of {names:?} ({last})"
        )))
    };
    let config = first(&["config.json", "unet/config.json"])?;
    let prefix = if config.ends_with("unet/config.json") {
        "unet/"
    } else {
        ""
    };
    first(&[
        &format!("{prefix}diffusion_pytorch_model.safetensors"),
        &format!("{prefix}diffusion_pytorch_model.bin"),
    ])?;
    let _ = first(&["scheduler_config.json", "scheduler/scheduler_config.json"]);
    snapshot(repo)
}

/// Without the `hub` feature: says how to get the model.
#[cfg(not(feature = "hub"))]
pub fn fetch(repo: &str) -> Result<PathBuf, CoreError> {
    split(repo)?;
    Err(CoreError::InvalidConfig(format!(
        "{PREFIX}{repo}: this binary was built without downloads (cargo build --release \
         --features tweedie-core/hub); or fetch it with `huggingface-cli download {repo}`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_the_cache_layout() {
        let root = std::env::temp_dir().join(format!("tweedie-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let model = root.join("models--google--ddpm-cifar10-32");
        std::fs::create_dir_all(model.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(model.join("snapshots/old")).unwrap();
        std::fs::create_dir_all(model.join("refs")).unwrap();
        std::fs::write(model.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            snapshot_in(&root, "google/ddpm-cifar10-32").unwrap(),
            model.join("snapshots/abc123")
        );
        assert_eq!(
            repo_of(Path::new("hf:google/ddpm-cifar10-32")),
            Some("google/ddpm-cifar10-32")
        );
        assert_eq!(repo_of(Path::new("checkpoints/x")), None);
        let e = snapshot_in(&root, "google/ddpm-cat-256")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not in the Hugging Face cache") && e.contains("huggingface-cli"),
            "{e}"
        );
        assert!(
            snapshot_in(&root, "nonsense")
                .unwrap_err()
                .to_string()
                .contains("<org>/<model>")
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
