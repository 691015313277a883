//! CIFAR-10 binary batches.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tweedie_datasets::cifar::parse_cifar(data, std::path::Path::new("f"));
});
