//! MM-IMDB: movie posters and plots, 23 genres, multi-label.
//!
//! Layout (the official `mmimdb.tar.gz`):
//! ```text
//! <root>/split.json            {"train": [ids], "dev": [ids], "test": [ids]}
//! <root>/dataset/<id>.json     IMDbPY dump: "genres": [..], "plot": [..], …
//! <root>/dataset/<id>.jpeg     poster
//! ```
//! As the official MoPE preprocessing: the text is the **longest** plot; movies tagged News,
//! Reality-TV or Talk-Show are dropped; genre names are trimmed (the shipped `labels.txt` has
//! trailing spaces). The 23 genres are in the fixed order of the missing-aware-prompts code.

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read};

/// The 23 genres, in the order used by the MoPE-family code.
pub const GENRES: [&str; 23] = [
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary", "Mystery", "Sci-Fi",
    "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation", "Musical", "Western", "Sport", "Short",
    "Film-Noir",
];

/// Genres whose movies the official preprocessing drops.
pub const DROPPED_GENRES: [&str; 3] = ["News", "Reality-TV", "Talk-Show"];

#[derive(Deserialize)]
struct Movie {
    #[serde(default)]
    genres: Vec<String>,
    #[serde(default)]
    plot: Vec<String>,
}

/// Loads a split of MM-IMDB from `root`.
pub fn load(root: &Path, split: SplitName, options: LoadOptions) -> Result<Split, DataError> {
    let split_path = root.join("split.json");
    let splits: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&read(&split_path)?).map_err(|e| DataError::malformed(&split_path, e.line(), e.to_string()))?;
    let key = match split {
        SplitName::Train => "train",
        SplitName::Val => "dev",
        SplitName::Test => "test",
    };
    let ids = splits
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| DataError::malformed(&split_path, 0, format!("no `{key}` list of ids")))?;
    let labels: Vec<String> = GENRES.iter().map(|g| g.to_string()).collect();
    let mut collector = Collector::new(options);
    for id in ids {
        let Some(id) = id.as_str() else {
            collector.take(Err(DataError::malformed(&split_path, 0, format!("`{key}` holds a non-string id {id}"))))?;
            continue;
        };
        let json = root.join("dataset").join(format!("{id}.json"));
        collector.take((|| {
            let text = read(&json)?;
            let movie: Movie = serde_json::from_str(&text).map_err(|e| DataError::malformed(&json, e.line(), e.to_string()))?;
            let genres: Vec<&str> = movie.genres.iter().map(|g| g.trim()).collect();
            if genres.iter().any(|g| DROPPED_GENRES.contains(g)) {
                return Ok(None);
            }
            let mut target = Vec::new();
            for genre in genres {
                let index = GENRES.iter().position(|g| *g == genre).ok_or_else(|| DataError::unknown_label(&json, 0, genre, &labels))?;
                if !target.contains(&index) {
                    target.push(index);
                }
            }
            target.sort_unstable();
            let plot = movie.plot.iter().max_by_key(|p| p.len()).cloned().ok_or_else(|| DataError::malformed(&json, 0, "no plot"))?;
            let image = existing(root.join("dataset").join(format!("{id}.jpeg")), "image", &split_path, 0)?;
            Ok(Some(Sample { id: id.to_string(), image: Some(image), depth: None, audio: None, text: Some(plot), target: Target::MultiLabel(target) }))
        })())?;
    }
    Ok(Split { dataset: "mmimdb".into(), split, task: Task::MultiLabel { num_labels: labels.len() }, labels, samples: collector.samples, skipped: collector.skipped })
}
