//! Loader throughput on the emoji image+text dataset (built by `cargo xtask fetch-assets`):
//! samples per second to decode, resize to 224×224 and normalise, with 1 and 2 workers, without
//! and with the on-disk cache. Each configuration runs 3 passes over the training split; the
//! median is reported.
//!
//! Run: `cargo run -p data --example loader_throughput`.

use std::path::Path;
use std::sync::Arc;

use data::{ImageCache, ImagePreprocess, LoadOptions, LoaderConfig, SplitName, batches};

fn main() -> Result<(), data::DataError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/datasets/emoji");
    if !root.join("BUILT").exists() {
        eprintln!("{} is not built: run `cargo xtask fetch-assets` first", root.display());
        std::process::exit(2);
    }
    let split = data::jsonl::load(&root, "emoji", SplitName::Train, LoadOptions::default())?;
    let samples = Arc::new(split.samples);
    let cache = std::env::temp_dir().join(format!("mope-loader-cache-{}", std::process::id()));
    let preprocess = ImagePreprocess::imagenet();
    println!("{} samples, 64x64 PNG -> 3x224x224 f32, batch 32", samples.len());
    println!("{:<28} {:>12}", "configuration", "samples/s");
    for (label, workers, cached) in [("1 worker, no cache", 1, false), ("2 workers, no cache", 2, false), ("2 workers, warm cache", 2, true)] {
        let prepare = Arc::new(ImageCache::new(preprocess, cached.then(|| cache.clone())));
        if cached {
            // Fill the cache once, untimed.
            for batch in batches(samples.clone(), prepare.clone(), &LoaderConfig { workers, ..LoaderConfig::new(32) }, 0) {
                batch?;
            }
        }
        let mut rates = Vec::new();
        for epoch in 0..3 {
            let config = LoaderConfig { workers, shuffle: Some(1), ..LoaderConfig::new(32) };
            let mut it = batches(samples.clone(), prepare.clone(), &config, epoch);
            for batch in it.by_ref() {
                batch?;
            }
            rates.push(it.throughput().per_second());
        }
        rates.sort_by(f64::total_cmp);
        println!("{label:<28} {:>12.0}", rates[1]);
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
