//! The two small real datasets built from registry packages during the set-up, written in the
//! JSON-lines layout that `data::jsonl` reads: [`emoji`] (image + text) and [`digits`] (image +
//! audio). They are builders, not loaders: they run once, from the unpacked packages.

pub mod digits;
pub mod emoji;

/// The deterministic stratified splits the loaders use too (one source, shared by path: the
/// builders write the same splits as `data::stratify` computes, without xtask depending on burn).
#[path = "../../crates/data/src/stratify.rs"]
mod stratify;

use std::path::Path;

use anyhow::{Context, Result};

/// The whole of a text file, with its path in the error.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
