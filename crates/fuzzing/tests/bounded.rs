//! A bounded fuzzing run of every target, in `cargo test`: mutations of each target's valid seeds
//! (bit flips, interesting bytes and little-endian words, insertions, deletions, repeats,
//! truncations) and random bytes. No input may panic, and none may make the reader hold more
//! memory at its peak than its size justifies: [`MEMORY_PER_INPUT_BYTE`] bytes per input byte
//! over a fixed [`MEMORY_ALLOWANCE`], measured by a counting allocator. (A hang shows as a test
//! that does not finish.) `PROPTEST_CASES` sets the cases per target (default 4,000); the
//! inputs are drawn from a fixed seed, the same on every run.

// The counting allocator forwards to the system's: the one use of `unsafe` here.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};

/// Memory a reader may hold beyond its input's share: its tables, a temporary folder's paths, an
/// error message.
const MEMORY_ALLOWANCE: usize = 8 << 20;
/// Memory a reader may hold per input byte: the file read once and its parsed structures; for
/// WAV, 8-bit samples at the lowest rate accepted (1 kHz) decoded to `f32`s and resampled to
/// 16 kHz: 4 + 16 × 4 bytes per input byte.
const MEMORY_PER_INPUT_BYTE: usize = 80;

thread_local! {
    /// Bytes this thread holds now, and the most it held since [`peak_during`] began.
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Whether this thread runs a target now: its panics are caught and reported with their
    /// input, not printed each time the input is shrunk.
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
}

fn account(change: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + change;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// The system allocator, counting what each thread holds.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most memory this thread held during `f`, above what it held before.
fn peak_during(f: impl FnOnce()) -> usize {
    let before = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    f();
    (PEAK.with(Cell::get) - before).max(0) as usize
}

/// One edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Byte { at: usize, byte: u8 },
    Word { at: usize, word: u32 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: usize },
    Truncate { at: usize },
}

/// Bytes that change what a parser sees: ends of strings and numbers, brackets, separators.
const BYTES: [u8; 18] = [0, 0xFF, 0x7F, 0x80, b'"', b'{', b'}', b'[', b']', b'\n', b'\r', b',', b'\\', b'0', b'9', b'-', b'e', b'='];
/// Lengths and counts at the edges.
const WORDS: [u32; 9] = [0, 1, 2, 64, 1 << 16, 1 << 24, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (at, prop::sample::select(&BYTES[..])).prop_map(|(at, byte)| Edit::Byte { at, byte }),
        (at, prop::sample::select(&WORDS[..])).prop_map(|(at, word)| Edit::Word { at, word }),
        (at, prop::collection::vec(prop::sample::select(&BYTES[..]), 1..6)).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (at, 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        (at, 1usize..32, 1usize..40).prop_map(|(at, len, times)| Edit::Repeat { at, len, times }),
        at.prop_map(|at| Edit::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let n = bytes.len();
        let at = |i: usize| if n == 0 { 0 } else { i % n };
        match edit {
            Edit::Flip { at: i, bit } if n > 0 => bytes[at(*i)] ^= 1 << bit,
            Edit::Byte { at: i, byte } if n > 0 => bytes[at(*i)] = *byte,
            Edit::Word { at: i, word } if n >= 4 => {
                let i = at(*i).min(n - 4);
                bytes[i..i + 4].copy_from_slice(&word.to_le_bytes());
            }
            Edit::Insert { at: i, bytes: inserted } => {
                let i = if n == 0 { 0 } else { i % (n + 1) };
                bytes.splice(i..i, inserted.iter().copied());
            }
            Edit::Remove { at: i, len } if n > 0 => {
                let i = at(*i);
                bytes.drain(i..(i + len).min(n));
            }
            Edit::Repeat { at: i, len, times } if n > 0 => {
                let i = at(*i);
                let piece: Vec<u8> = bytes[i..(i + len).min(n)].to_vec();
                let repeated: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
                bytes.splice(i..i, repeated);
            }
            Edit::Truncate { at: i } => bytes.truncate(if n == 0 { 0 } else { i % n }),
            _ => {}
        }
    }
    bytes
}

/// Inputs for `target`: its seeds under up to 8 edits, and (one case in eight) random bytes.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzzing::seeds(target);
    prop_oneof![
        7 => (prop::sample::select(seeds), prop::collection::vec(edit(), 0..8)).prop_map(|(seed, edits)| apply(seed, &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4000)
}

/// Runs `target` on its inputs; fails with the (shrunk) input that panics or holds too much.
fn fuzz(name: &str) {
    let target = fuzzing::TARGETS.iter().find(|(n, _)| *n == name).expect("a target").1;
    // The seeds themselves are read without trouble (a target that rejects its own seeds tests
    // nothing but its first check).
    for seed in fuzzing::seeds(name) {
        target(&seed);
    }
    static QUIET_IN_TARGETS: std::sync::Once = std::sync::Once::new();
    QUIET_IN_TARGETS.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TARGET.with(Cell::get) {
                default(info);
            }
        }));
    });
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    // The same inputs on every run, so that CI fails the same way twice or not at all; wider
    // searches are cargo-fuzz's (or more `PROPTEST_CASES`).
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let result = TestRunner::new_with_rng(config, rng).run(&inputs(name), |input| {
        IN_TARGET.with(|t| t.set(true));
        let outcome = std::panic::catch_unwind(|| peak_during(|| target(&input)));
        IN_TARGET.with(|t| t.set(false));
        let peak = outcome.map_err(|panic| {
            let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            TestCaseError::fail(format!("panicked: {message}"))
        })?;
        let allowed = MEMORY_ALLOWANCE + MEMORY_PER_INPUT_BYTE * input.len();
        prop_assert!(peak <= allowed, "held {peak} bytes for a {}-byte input (allowed {allowed})", input.len());
        Ok(())
    });
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
}

#[test]
fn experiment_spec() {
    fuzz("experiment_spec");
}

#[test]
fn dataset_json_lines() {
    fuzz("dataset_json_lines");
}

#[test]
fn metrics_json_lines() {
    fuzz("metrics_json_lines");
}

#[test]
fn food101_titles() {
    fuzz("food101_titles");
}

#[test]
fn mmimdb_json() {
    fuzz("mmimdb_json");
}

#[test]
fn safetensors_file() {
    fuzz("safetensors_file");
}

#[test]
fn ct2_model() {
    fuzz("ct2_model");
}

#[test]
fn wav() {
    fuzz("wav");
}

#[test]
fn adapter_config() {
    fuzz("adapter_config");
}

/// Every target of the library is run above.
#[test]
fn every_target_is_run() {
    let source = include_str!("bounded.rs");
    for (name, _) in fuzzing::TARGETS {
        assert!(source.contains(&format!("fn {name}() {{\n    fuzz(\"{name}\");")), "no bounded run of {name}");
    }
}

/// `seed` with the little-endian `value` written at `at`.
fn patched(mut seed: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    seed[at..at + value.len()].copy_from_slice(value);
    seed
}

/// A CTranslate2 file of one variable `a` of `dims` (f32) holding `data_len` bytes.
fn ct2_variable(dims: &[u32], data_len: u32) -> Vec<u8> {
    let mut out = 6u32.to_le_bytes().to_vec();
    out.extend_from_slice(&12u16.to_le_bytes());
    out.extend_from_slice(b"WhisperSpec\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(b"a\0");
    out.push(dims.len() as u8);
    dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
    out.push(0);
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// The inputs the bounded run found, each once a panic or an allocation out of proportion to
/// its size: now refused with an error naming the file, within the memory bound.
#[test]
fn found_inputs_are_refused() {
    let wav_seed = |i: usize| fuzzing::seeds("wav").swap_remove(i);
    let fmt = |wav: &[u8]| wav.windows(4).position(|w| w == b"fmt ").expect("a fmt chunk") + 8;
    let (ct2_seed, float_wav) = (fuzzing::seeds("ct2_model").swap_remove(0), wav_seed(2));
    let heads_at = ct2_seed.len() - 44; // the i32 of `encoder/num_heads`, before the aliases
    let found: [(&str, &str, Vec<u8>); 5] = [
        // A header length of 16 MiB in a 10-byte file: 16 MiB allocated before the read failed.
        ("safetensors_file", "header longer than the file", [&(16u64 << 20).to_le_bytes()[..], b"{}"].concat()),
        // Dims whose product overflows usize: a panic in the byte-count check.
        ("ct2_model", "dims overflowing", ct2_variable(&[u32::MAX, u32::MAX, 4], 0)),
        // 258 heads for a width of 4: accepted, and a panic when the encoder was built.
        ("ct2_model", "heads not dividing the width", patched(ct2_seed, heads_at, &258i32.to_le_bytes())),
        // 65 valid bits per sample (WAVE_FORMAT_EXTENSIBLE): a shift overflow in the scale.
        ("wav", "65 bits per sample", patched(wav_seed(1), fmt(&wav_seed(1)) + 18, &65u16.to_le_bytes())),
        // A sample rate of 0 Hz (and byte rate 0, which hound accepts): resampling divided by it.
        ("wav", "a rate of 0 Hz", patched(patched(float_wav.clone(), fmt(&float_wav) + 4, &0u32.to_le_bytes()), fmt(&float_wav) + 8, &0u32.to_le_bytes())),
    ];
    for (name, what, input) in found {
        let target = fuzzing::TARGETS.iter().find(|(n, _)| *n == name).expect("a target").1;
        let peak = peak_during(|| target(&input));
        assert!(peak <= MEMORY_ALLOWANCE + MEMORY_PER_INPUT_BYTE * input.len(), "{name}, {what}: held {peak} bytes");
    }
    // And each is an error of its reader, not a value.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let header = file("model.safetensors", &[&(16u64 << 20).to_le_bytes()[..], b"{}"].concat());
    assert!(backbones::weights::tensor_names(&header).is_err());
    let overflow = backbones::ct2::Ct2Model::open(&file("overflow.bin", &ct2_variable(&[u32::MAX, u32::MAX, 4], 0)));
    assert!(overflow.is_err_and(|e| e.to_string().contains("overflow.bin") && e.to_string().contains("do not fit dims")));
    let heads = backbones::ct2::Ct2Model::open(&file("heads.bin", &patched(fuzzing::seeds("ct2_model").swap_remove(0), heads_at, &258i32.to_le_bytes()))).unwrap();
    let error = backbones::audio::whisper::whisper_config(&heads, backbones::Pooling::Mean).unwrap_err().to_string();
    assert!(error.contains("encoder/num_heads") && error.contains("258 heads for d_model 4"), "{error}");
    let bits = data::read_wav(&file("bits.wav", &patched(wav_seed(1), fmt(&wav_seed(1)) + 18, &65u16.to_le_bytes()))).unwrap_err().to_string();
    assert!(bits.contains("bits.wav") && bits.contains("bits per sample"), "{bits}");
    let rate = patched(patched(float_wav.clone(), fmt(&float_wav) + 4, &0u32.to_le_bytes()), fmt(&float_wav) + 8, &0u32.to_le_bytes());
    let rate = data::read_wav(&file("rate.wav", &rate)).unwrap_err().to_string();
    assert!(rate.contains("rate.wav") && rate.contains("sample rate 0 Hz"), "{rate}");
}
