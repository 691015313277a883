//! PyTorch `.bin` weights (zip or legacy pickle) of a diffusers folder, read through burn's
//! PyTorch reader and loaded into the U-Net of the fixture's config.
#![no_main]
mod weights_folder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weights_folder::load_as("diffusion_pytorch_model.bin", data);
});
