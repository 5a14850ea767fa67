#![no_main]
//! `cargo +nightly fuzz run safetensors_file`: [`fuzzing::safetensors_file`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::safetensors_file(data));
