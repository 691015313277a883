//! `classifier.json` of a classifier run.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("classifier.json");
    if let Ok(m) = tweedie_core::classifier::parse_meta(data, p) {
        let _ = m.config.num_params();
    }
});
