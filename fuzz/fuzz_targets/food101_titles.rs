#![no_main]
//! `cargo +nightly fuzz run food101_titles`: [`fuzzing::food101_titles`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::food101_titles(data));
