//! The `kind` of any experiment file, read before the file is given to its binary.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_sample::experiment::kind_of(text);
    }
});
