//! SNLI-VE: does a Flickr30k image entail, contradict or leave neutral a hypothesis sentence?
//!
//! Layout (the files written by the official generator, `necla-ml/SNLI-VE`):
//! ```text
//! <root>/snli_ve_{train,dev,test}.jsonl    one JSON object per line: gold_label, sentence2 (the
//!                                         hypothesis, the only text used), Flickr30K_ID, …
//! <root>/flickr30k_images/<Flickr30K_ID>.jpg
//! <root>/labels.txt                        optional: one label per line, its order defines the ids
//! ```
//! Rows whose `gold_label` is `-` (no consensus) are dropped, as the generator does.

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read_labels};

/// Label order when no `labels.txt` is given.
pub const DEFAULT_LABELS: [&str; 3] = ["entailment", "neutral", "contradiction"];

#[derive(Deserialize)]
struct Row {
    gold_label: String,
    sentence2: String,
    #[serde(rename = "Flickr30K_ID")]
    flickr30k_id: String,
    #[serde(rename = "pairID", default)]
    pair_id: Option<String>,
}

/// Loads a split of SNLI-VE from `root`.
pub fn load(root: &Path, split: SplitName, options: LoadOptions) -> Result<Split, DataError> {
    let labels_path = root.join("labels.txt");
    let labels: Vec<String> = if labels_path.exists() {
        read_labels(&labels_path)?
    } else {
        DEFAULT_LABELS.iter().map(|l| l.to_string()).collect()
    };
    let name = match split {
        SplitName::Train => "train",
        SplitName::Val => "dev",
        SplitName::Test => "test",
    };
    let path = root.join(format!("snli_ve_{name}.jsonl"));
    let mut collector = Collector::new(options);
    collector.take_json_lines(&path, |row: Row, line_no| {
        if row.gold_label == "-" {
            return Ok(None);
        }
        let class =
            labels.iter().position(|l| *l == row.gold_label).ok_or_else(|| DataError::unknown_label(&path, line_no, &row.gold_label, &labels))?;
        let image = existing(root.join("flickr30k_images").join(format!("{}.jpg", row.flickr30k_id)), "image", &path, line_no)?;
        let id = row.pair_id.unwrap_or_else(|| format!("{}#{line_no}", row.flickr30k_id));
        Ok(Some(Sample { id, image: Some(image), depth: None, audio: None, text: Some(row.sentence2), target: Target::Class(class) }))
    })?;
    Ok(Split { dataset: "snli-ve".into(), split, task: Task::Classification { num_classes: labels.len() }, labels, samples: collector.samples, skipped: collector.skipped })
}
