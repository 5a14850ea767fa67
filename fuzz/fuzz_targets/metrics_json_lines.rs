#![no_main]
//! `cargo +nightly fuzz run metrics_json_lines`: [`fuzzing::metrics_json_lines`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::metrics_json_lines(data));
