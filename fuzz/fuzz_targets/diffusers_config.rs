//! A diffusers `config.json` (UNet2DModel) or `scheduler_config.json`: parsed and mapped onto
//! Tweedie's U-Net (its parameter count, which bounds the weights file before allocation) and
//! schedule.
#![no_main]
use std::path::Path;

use tweedie_core::checkpoint::diffusers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(c) = diffusers::unet_config(&v, Path::new("unet/config.json")) {
            let _ = c.num_params();
        }
        let _ = diffusers::scheduler(&v, Path::new("scheduler/scheduler_config.json"));
    }
});
