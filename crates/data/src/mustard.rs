//! MUStARD: is an utterance from a TV show sarcastic? Text and audio.
//!
//! Layout (the official `sarcasm_data.json` and the WAV files MoPE extracts from the videos):
//! ```text
//! <root>/sarcasm_data.json            {"<id>": {"utterance", "speaker", "context", "context_speakers",
//!                                               "show", "sarcasm": bool}, …}  (key order matters)
//! <root>/utterances_final/<id>.wav    16 kHz audio of the utterance
//! ```
//! The text is `"SPEAKER: utterance"`, as the official code. Splits ([`MustardSplit`]):
//! the official MoPE code takes the **first 334 keys in file order** as train and the rest as
//! test (also used as validation); the original speaker-independent split takes the FRIENDS
//! utterances as test and the rest as train.

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read};

/// Training items of the official MoPE split.
pub const MOPE_TRAIN_ITEMS: usize = 334;

/// Which train/test split of MUStARD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MustardSplit {
    /// The official MoPE code's: the first `train_items` keys are train, the rest test (= val).
    #[default]
    MoPE,
    /// Speaker-independent (Castro et al. 2019): FRIENDS is test (= val), the other shows train.
    SpeakerIndependent,
}

#[derive(Deserialize)]
struct Item {
    utterance: String,
    speaker: String,
    show: String,
    sarcasm: bool,
}

/// Loads a split of MUStARD from `root`. `train_items` is the size of the MoPE split's training
/// part ([`MOPE_TRAIN_ITEMS`] for the real data).
pub fn load(root: &Path, split: SplitName, which: MustardSplit, train_items: usize, options: LoadOptions) -> Result<Split, DataError> {
    let path = root.join("sarcasm_data.json");
    let items: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&read(&path)?).map_err(|e| DataError::malformed(&path, e.line(), e.to_string()))?;
    let labels = vec!["not sarcastic".to_string(), "sarcastic".to_string()];
    let mut collector = Collector::new(options);
    for (index, (key, value)) in items.into_iter().enumerate() {
        collector.take((|| {
            let item: Item = serde_json::from_value(value).map_err(|e| DataError::malformed(&path, 0, format!("item `{key}`: {e}")))?;
            let in_train = match which {
                MustardSplit::MoPE => index < train_items,
                MustardSplit::SpeakerIndependent => item.show != "FRIENDS",
            };
            if in_train != (split == SplitName::Train) {
                return Ok(None);
            }
            let audio = existing(root.join("utterances_final").join(format!("{key}.wav")), "audio", &path, 0)?;
            Ok(Some(Sample {
                id: key.clone(),
                image: None,
                depth: None,
                audio: Some(audio),
                text: Some(format!("{}: {}", item.speaker, item.utterance)),
                target: Target::Class(usize::from(item.sarcasm)),
            }))
        })())?;
    }
    Ok(Split { dataset: "mustard".into(), split, task: Task::Classification { num_classes: 2 }, labels, samples: collector.samples, skipped: collector.skipped })
}
