//! Paired samples: each sample prepared for the main and the complementary encoder in loader
//! workers, then collated into encoder inputs on the training thread.

use std::path::PathBuf;

use backbones::{AnyInput, BackboneError, InputPreparer, PreparedInput};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use data::{DataError, ImageCache, Prepare, Sample, Target};

/// One sample prepared for both encoders.
#[derive(Debug, Clone)]
pub struct PreparedPair {
    /// Sample id (the key of the feature cache, with `inputs_stamp`).
    pub id: String,
    /// The stamp of the sample's inputs ([`data::Sample::inputs_stamp`]).
    pub inputs_stamp: u64,
    /// Input of the main encoder; `None` when its feature is already cached, or unread.
    pub main: Option<PreparedInput>,
    /// Input of the complementary encoder; `None` when its feature is already cached.
    pub complementary: Option<PreparedInput>,
    /// Target.
    pub target: Target,
    /// For segmentation: the label map at the main encoder's input size (`size × size` class
    /// ids, 255 = unlabelled).
    pub mask: Option<Vec<u8>>,
}

#[cfg(test)]
impl PreparedPair {
    /// A segmentation item of no pixels with the label map `mask`, for the tests of losses and
    /// metrics.
    pub(crate) fn of_mask(mask: Vec<u8>) -> Self {
        Self { id: "x".into(), inputs_stamp: 0, main: Some(PreparedInput::Pixels(Vec::new())), complementary: None, target: Target::Mask("x.png".into()), mask: Some(mask) }
    }
}

/// Prepares samples for an encoder pair (a [`Prepare`] for the data pipeline).
#[derive(Debug, Clone)]
pub struct PairPrepare {
    /// Preparation for the main encoder.
    pub main: InputPreparer,
    /// Preparation for the complementary encoder; `None` for models that read only the main
    /// input (pMoE).
    pub complementary: Option<InputPreparer>,
    main_images: Option<ImageCache>,
    complementary_images: Option<ImageCache>,
    skip: Skip,
}

/// Inputs a preparation leaves out, because their features are cached or unread (decoding them
/// would be wasted work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skip {
    /// The main encoder's input.
    pub main: bool,
    /// The complementary encoder's input.
    pub complementary: bool,
}

impl PairPrepare {
    /// Prepares for these encoders; images are cached under `cache` if given.
    pub fn new(main: InputPreparer, complementary: Option<InputPreparer>, cache: Option<PathBuf>) -> Self {
        let images = |p: &InputPreparer| match p {
            InputPreparer::Image(_, pre) => Some(ImageCache::new(*pre, cache.clone())),
            _ => None,
        };
        let complementary_images = complementary.as_ref().and_then(images);
        Self { main_images: images(&main), complementary_images, main, complementary, skip: Skip::default() }
    }

    /// The same preparation without the inputs `skip` names.
    pub fn skipping(&self, skip: Skip) -> Self {
        Self { skip, ..self.clone() }
    }

    /// The inputs this preparation leaves out.
    pub fn skip(&self) -> &Skip {
        &self.skip
    }

    /// Prepares one sample without the pipeline (for `mope predict`).
    pub fn prepare_one(&self, sample: &Sample) -> Result<PreparedPair, BackboneError> {
        let mask = match (&sample.target, &self.main) {
            (Target::Mask(path), InputPreparer::Image(_, pre)) => Some(data::load_mask(path, pre.size as u32)?),
            (Target::Mask(path), _) => {
                return Err(BackboneError::Data(DataError::Decode {
                    path: path.clone(),
                    message: "a label map needs an image main encoder".into(),
                }));
            }
            _ => None,
        };
        Ok(PreparedPair {
            mask,
            id: sample.id.clone(),
            inputs_stamp: sample.inputs_stamp(),
            main: if self.skip.main { None } else { Some(self.main.prepare(sample, self.main_images.as_ref())?) },
            complementary: match (&self.complementary, self.skip.complementary) {
                (Some(preparer), false) => Some(preparer.prepare(sample, self.complementary_images.as_ref())?),
                _ => None,
            },
            target: sample.target.clone(),
        })
    }

    /// Collates the main encoder's inputs of a batch.
    ///
    /// # Panics
    /// If an item was prepared without its main input ([`skipping`](Self::skipping)).
    pub fn main_batch<'a, B: Backend>(&self, items: impl IntoIterator<Item = &'a PreparedPair>, device: &B::Device) -> Result<AnyInput<B>, BackboneError> {
        let inputs: Vec<&PreparedInput> = items.into_iter().map(|i| i.main.as_ref().expect("main input prepared (its feature is not cached)")).collect();
        self.main.collate(&inputs, device)
    }

    /// Collates the complementary encoder's inputs of a batch.
    ///
    /// # Panics
    /// If there is no complementary encoder, or an item was prepared without its complementary
    /// input ([`skipping`](Self::skipping)).
    pub fn complementary_batch<'a, B: Backend>(&self, items: impl IntoIterator<Item = &'a PreparedPair>, device: &B::Device) -> Result<AnyInput<B>, BackboneError> {
        let inputs: Vec<&PreparedInput> =
            items.into_iter().map(|i| i.complementary.as_ref().expect("complementary input prepared (its feature is not cached)")).collect();
        self.complementary.as_ref().expect("a complementary encoder").collate(&inputs, device)
    }
}

impl Prepare for PairPrepare {
    type Item = PreparedPair;

    fn prepare(&self, sample: &Sample) -> Result<PreparedPair, DataError> {
        self.prepare_one(sample).map_err(|e| match e {
            BackboneError::Data(e) => e,
            other => DataError::Decode { path: PathBuf::from(&sample.id), message: other.to_string() },
        })
    }
}

/// Class targets of a batch.
///
/// # Shapes
/// - output: `[items.len()]`
///
/// # Panics
/// If a target is not a single class.
pub fn class_targets<B: Backend>(items: &[PreparedPair], device: &B::Device) -> Tensor<B, 1, Int> {
    let classes: Vec<i64> = items.iter().map(|i| class_of(&i.target) as i64).collect();
    Tensor::from_data(TensorData::new(classes, [items.len()]), device)
}

/// Multi-hot targets of a batch.
///
/// # Shapes
/// - output: `[items.len(), num_labels]`
pub fn multi_hot_targets<B: Backend>(items: &[PreparedPair], num_labels: usize, device: &B::Device) -> Tensor<B, 2> {
    let hot: Vec<f32> = items.iter().flat_map(|i| multi_hot(&i.target, num_labels)).collect();
    Tensor::from_data(TensorData::new(hot, [items.len(), num_labels]), device)
}

/// The class of a single-label target.
///
/// # Panics
/// If the target is not a single class.
pub fn class_of(target: &Target) -> usize {
    match target {
        Target::Class(c) => *c,
        other => panic!("expected a class target, got {other:?}"),
    }
}

/// A multi-label target as `num_labels` zeros and ones.
///
/// # Panics
/// If the target is not multi-label.
pub fn multi_hot(target: &Target, num_labels: usize) -> Vec<f32> {
    let Target::MultiLabel(labels) = target else { panic!("expected a multi-label target, got {target:?}") };
    let mut hot = vec![0.0; num_labels];
    for &l in labels {
        hot[l] = 1.0;
    }
    hot
}
