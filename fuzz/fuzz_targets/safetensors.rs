//! safetensors weights of a diffusers folder, read through burn-store and loaded into the U-Net
//! of the fixture's config.
#![no_main]
mod weights_folder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weights_folder::load_as("diffusion_pytorch_model.safetensors", data);
});
