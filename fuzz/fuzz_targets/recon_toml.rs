//! Reconstruction experiment files: parse, validate, build the operator and noise model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_sample::recon::ReconFile::parse(text).and_then(|f| {
            f.validate()?;
            f.operator(28, 28)?;
            f.noise_model()
        });
    }
});
