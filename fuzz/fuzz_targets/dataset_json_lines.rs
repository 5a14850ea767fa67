#![no_main]
//! `cargo +nightly fuzz run dataset_json_lines`: [`fuzzing::dataset_json_lines`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::dataset_json_lines(data));
