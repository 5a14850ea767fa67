//! Loading the splits an experiment names, with the size limits it sets.

use data::{LoadOptions, LoaderConfig, MustardSplit, RgbdDataset, Sample, Split, SplitName, Task};

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
        if split.samples.is_empty() {
            anyhow::bail!("the {} split of {} has no samples{}", split.split, spec.data.root.display(), split_size_hint(&spec.data, split.split));
        }
    }
    let objective = train.task;
    let labels = train.labels.clone();
    Ok((Splits { train, val, test }, objective, labels))
}

/// What sets the size of `split` of the dataset `spec` names, for a message about a split that
/// is empty or too small (empty where nothing but the files decide).
pub fn split_size_hint(spec: &DataSpec, split: SplitName) -> String {
    match (spec.dataset, split) {
        (DatasetKind::Food101, SplitName::Train | SplitName::Val) => {
            format!(": data.food101_val_size = {} training titles are held out for validation", spec.food101_val_size)
        }
        (DatasetKind::Mustard, SplitName::Train | SplitName::Val | SplitName::Test) if spec.mustard_split == MustardSplitKind::Mope => {
            format!(": data.mustard_train_items = {} of sarcasm_data.json's items are training, the rest val and test", spec.mustard_train_items)
        }
        (_, SplitName::Train) if spec.max_train_samples > 0 => format!(": data.max_train_samples = {}", spec.max_train_samples),
        (_, SplitName::Val | SplitName::Test) if spec.max_eval_samples > 0 => format!(": data.max_eval_samples = {}", spec.max_eval_samples),
        _ => String::new(),
    }
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
            let order = data::batch_indices(loaded.samples.len(), &config, u64::MAX).concat();
            let mut kept: Vec<usize> = order.into_iter().take(limit).collect();
            kept.sort_unstable();
            loaded.samples = kept.into_iter().map(|i| loaded.samples[i].clone()).collect();
        } else {
            loaded.samples.truncate(limit);
        }
    }
    Ok(loaded)
}

/// The loader settings of a pass: batches of `batch_size`, `workers` threads (0: one per core),
/// shuffled by `shuffle`'s seed if given, the last partial batch dropped if `drop_last`.
pub fn loader_config(batch_size: usize, workers: usize, shuffle: Option<u64>, drop_last: bool) -> LoaderConfig {
    let mut config = LoaderConfig::new(batch_size);
    if workers > 0 {
        config.workers = workers;
        config.prefetch = 2 * workers;
    }
    config.shuffle = shuffle;
    config.drop_last = drop_last;
    config
}

/// The samples of one epoch's batches, in batch order: with `drop_last`, the shuffled remainder
/// that makes no full batch is not among them (so the feature cache need not hold it).
pub fn epoch_samples(samples: &[Sample], loader: &LoaderConfig, epoch: u64) -> Vec<Sample> {
    data::batch_indices(samples.len(), loader, epoch).concat().into_iter().map(|i| samples[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_leaves_out_the_remainder_that_makes_no_full_batch() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample { id: format!("s{i}"), image: None, depth: None, audio: None, text: None, target: data::Target::Class(0) })
            .collect();
        let ids = |loader: &LoaderConfig, epoch| epoch_samples(&samples, loader, epoch).into_iter().map(|s| s.id).collect::<Vec<_>>();
        let dropping = loader_config(2, 0, Some(7), true);
        let (first, second) = (ids(&dropping, 0), ids(&dropping, 1));
        assert_eq!((first.len(), second.len()), (4, 4));
        let mut all = first.clone();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "each sample at most once");
        let keeping = ids(&loader_config(2, 0, Some(7), false), 0);
        assert_eq!(keeping.len(), 5);
        assert_eq!(keeping[..4], first[..], "the same shuffle, the remainder last");
    }
}
