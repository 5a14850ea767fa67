//! `cargo run -p fuzzing --bin seed_corpus [DIR]`: writes each target's seed inputs to
//! `DIR/<target>/seed-<n>` (default `fuzz/corpus`), the corpus cargo-fuzz starts from.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let corpus = std::env::args_os().nth(1).map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    for (target, _) in fuzzing::TARGETS {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (n, seed) in fuzzing::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n}")), seed)?;
        }
        println!("{}: {} seeds", dir.display(), fuzzing::seeds(target).len());
    }
    Ok(())
}
