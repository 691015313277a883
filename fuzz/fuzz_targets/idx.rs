//! IDX (MNIST, Fashion-MNIST) headers and data.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tweedie_datasets::idx::parse_idx(data, std::path::Path::new("f"));
});
