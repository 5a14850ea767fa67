#![no_main]
//! `cargo +nightly fuzz run experiment_spec`: [`fuzzing::experiment_spec`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::experiment_spec(data));
