//! Images of a PNG folder dataset (decode with size limits, channel conversion).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let channels = if data.len() % 2 == 0 { 1 } else { 3 };
    let _ = tweedie_datasets::folder::decode_image(data, channels, std::path::Path::new("f"));
});
