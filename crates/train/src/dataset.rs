//! Loading the splits an experiment names, with the size limits it sets.

use data::mustard::MustardSplit;
use data::segmentation::RgbdDataset;
use data::{LoadOptions, Split, SplitName, Task};

use crate::spec::{DataSpec, DatasetKind, ExperimentSpec, MustardSplitKind};

/// The splits of an experiment.
#[derive(Debug)]
pub struct Splits {
    /// Training samples.
    pub train: Split,
    /// Validation samples (selects the best epoch).
    pub val: Split,
    /// Test samples, where the dataset has them.
    pub test: Option<Split>,
}

/// Loads the train, val and (where the dataset has one) test splits of `spec`, printing each
/// one's summary; returns them with the task and the labels of the training split.
pub fn load_splits(spec: &ExperimentSpec) -> anyhow::Result<(Splits, Task, Vec<String>)> {
    let train = load_split(&spec.data, SplitName::Train, spec.train.seed)?;
    let val = load_split(&spec.data, SplitName::Val, spec.train.seed)?;
    let test = match load_split(&spec.data, SplitName::Test, spec.train.seed) {
        Ok(test) => Some(test),
        Err(data::DataError::NoSuchSplit { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    for split in [Some(&train), Some(&val), test.as_ref()].into_iter().flatten() {
        eprintln!("{}", split.summary());
    }
    let objective = train.task;
    let labels = train.labels.clone();
    Ok((Splits { train, val, test }, objective, labels))
}

/// Loads `split` of the dataset `spec` names, cut to the spec's size limit (training samples:
/// the first of a seeded shuffle, so a small cut still covers the classes; evaluation samples:
/// the first in file order).
pub fn load_split(spec: &DataSpec, split: SplitName, seed: u64) -> Result<Split, data::DataError> {
    let options = LoadOptions { skip_bad: spec.skip_bad };
    let root = spec.root.as_path();
    let mut loaded = match spec.dataset {
        DatasetKind::Jsonl => {
            let name = root.file_name().map_or_else(|| "jsonl".into(), |n| n.to_string_lossy());
            data::jsonl::load(root, &name, split, options)?
        }
        DatasetKind::Food101 => data::food101::load(root, split, spec.food101_val_size, options)?,
        DatasetKind::Mmimdb => data::mmimdb::load(root, split, options)?,
        DatasetKind::SnliVe => data::snli_ve::load(root, split, options)?,
        DatasetKind::Mustard => {
            let which = match spec.mustard_split {
                MustardSplitKind::Mope => MustardSplit::MoPE,
                MustardSplitKind::SpeakerIndependent => MustardSplit::SpeakerIndependent,
            };
            data::mustard::load(root, split, which, spec.mustard_train_items, options)?
        }
        DatasetKind::Nyudv2 => data::segmentation::load(root, RgbdDataset::NyuDv2, split, options)?,
        DatasetKind::Sunrgbd => data::segmentation::load(root, RgbdDataset::SunRgbd, split, options)?,
        DatasetKind::ImageFolder => data::image_folder::load(root, split, options)?,
    };
    let limit = if split == SplitName::Train { spec.max_train_samples } else { spec.max_eval_samples };
    if limit > 0 && loaded.samples.len() > limit {
        if split == SplitName::Train {
            let config = data::LoaderConfig { shuffle: Some(seed), ..data::LoaderConfig::new(loaded.samples.len()) };
            let order = data::pipeline::batch_indices(loaded.samples.len(), &config, u64::MAX).concat();
            let mut kept: Vec<usize> = order.into_iter().take(limit).collect();
            kept.sort_unstable();
            loaded.samples = kept.into_iter().map(|i| loaded.samples[i].clone()).collect();
        } else {
            loaded.samples.truncate(limit);
        }
    }
    Ok(loaded)
}
