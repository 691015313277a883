//! `checkpoint.json`: parse and validate (model and schedule), and count the parameters a
//! weights file must then hold.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("checkpoint.json");
    if let Ok(m) = tweedie_core::checkpoint::parse_meta(data, p) {
        let _ = m.unet.num_params();
    }
});
