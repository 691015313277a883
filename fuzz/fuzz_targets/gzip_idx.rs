//! Gzipped IDX files: the decompression cap, then the IDX parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("f.gz");
    if let Ok(d) = tweedie_datasets::read::decompress_maybe_gz(data.to_vec(), p) {
        let _ = tweedie_datasets::idx::parse_idx(&d, p);
    }
});
