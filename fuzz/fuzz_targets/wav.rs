#![no_main]
//! `cargo +nightly fuzz run wav`: [`fuzzing::wav`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::wav(data));
