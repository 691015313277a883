//! Classifier experiment files: parse and validate.
#![no_main]
use tweedie_sample::experiment::ExperimentFile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tweedie_train::classify::ClassifierFile::parse(text).and_then(|f| f.validate());
    }
});
