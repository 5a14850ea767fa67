#![no_main]
//! `cargo +nightly fuzz run adapter_config`: [`fuzzing::adapter_config`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::adapter_config(data));
