#![no_main]
//! `cargo +nightly fuzz run mmimdb_json`: [`fuzzing::mmimdb_json`] under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::mmimdb_json(data));
