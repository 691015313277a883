//! `.npy` sample files (`sample fid`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tweedie_sample::output::parse_npy_u8(data);
});
