//! Class-conditional experiment files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_sample::class_cond::ClassFile::parse(text);
    }
});
