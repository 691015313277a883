//! Gaussian-mixture benchmark files: parse, validate, build the prior and exact posterior.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_sample::gmm_bench::GmmFile::parse(text).and_then(|f| f.build());
    }
});
