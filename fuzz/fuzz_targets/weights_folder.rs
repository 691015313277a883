//! Shared by the `safetensors` and `torch_pickle` targets: the input becomes the weights file
//! `NAME` of a diffusers folder holding the committed fixture's config, which is read and loaded.
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::prelude::*;
use tweedie_core::checkpoint::diffusers;

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tweedie-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/diffusers/unet/config.json");
        std::fs::copy(cfg, dir.join("config.json")).unwrap();
        dir
    })
}

pub fn load_as(name: &str, data: &[u8]) {
    let file = folder().join(name);
    std::fs::write(&file, data).unwrap();
    let _ = diffusers::read(folder()).and_then(|m| diffusers::load(&m, &Device::flex()));
    std::fs::remove_file(&file).unwrap();
}
