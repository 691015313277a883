//! Burnpack weights loaded into a small U-Net (every tensor present, of the right shape).
#![no_main]
use std::sync::OnceLock;

use burn::prelude::*;
use tweedie_core::unet::{UNet, UNetConfig};

fn model() -> &'static UNet {
    static M: OnceLock<UNet> = OnceLock::new();
    M.get_or_init(|| UNetConfig::new(1, 8, 32, vec![1], 1, vec![], 0.0).init(&Device::flex()))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tweedie_core::checkpoint::load_module_bytes(
        model().clone(),
        data.to_vec(),
        std::path::Path::new("model.bpk"),
    );
});
