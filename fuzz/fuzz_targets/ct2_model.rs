#![no_main]
//! `cargo +nightly fuzz run ct2_model`: [`fuzzing::ct2_model`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::ct2_model(data));
