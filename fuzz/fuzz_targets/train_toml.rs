//! Training experiment files: parse, then validate and build the model and schedule configs.
#![no_main]
use tweedie_sample::experiment::ExperimentFile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_train::config::TrainFile::parse(text).and_then(|f| f.resolve("fuzz"));
    }
});
