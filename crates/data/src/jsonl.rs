//! The JSON-lines layout of MoPE's own preprocessing (and of the datasets this project builds):
//! ```text
//! <root>/{train,val,test}.jsonl   {"id": .., "img": "<path relative to root>", "text": .., "label": "<name>"}
//!                                 (`img`, `text` and `audio` are each optional)
//! <root>/labels.txt               one label per line; the order defines the class ids
//! ```
//! `dev.jsonl` is accepted for `val` (the official preprocessing writes `dev.jsonl`, its loader
//! reads `val.jsonl`).

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read_labels};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    id: serde_json::Value,
    #[serde(default)]
    img: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    audio: Option<String>,
    label: String,
}

/// Loads a split of a JSON-lines dataset; `dataset` names it in reports.
pub fn load(root: &Path, dataset: &str, split: SplitName, options: LoadOptions) -> Result<Split, DataError> {
    let labels_path = root.join("labels.txt");
    let labels = read_labels(&labels_path)?;
    let mut path = root.join(format!("{split}.jsonl"));
    if split == SplitName::Val && !path.exists() && root.join("dev.jsonl").exists() {
        path = root.join("dev.jsonl");
    }
    let mut collector = Collector::new(options);
    collector.take_json_lines(&path, |row: Row, line_no| {
        let class = labels.iter().position(|l| *l == row.label).ok_or_else(|| DataError::unknown_label(&path, line_no, &row.label, &labels))?;
        let image = row.img.map(|img| existing(root.join(img), "image", &path, line_no)).transpose()?;
        let audio = row.audio.map(|audio| existing(root.join(audio), "audio", &path, line_no)).transpose()?;
        let id = match row.id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(Some(Sample { id, image, depth: None, audio, text: row.text, target: Target::Class(class) }))
    })?;
    Ok(Split { dataset: dataset.to_string(), split, task: Task::Classification { num_classes: labels.len() }, labels, samples: collector.samples, skipped: collector.skipped })
}
