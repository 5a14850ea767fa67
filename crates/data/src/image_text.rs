//! Preparation and batching of image+text samples (Food-101, MM-IMDB, SNLI-VE, the emoji set):
//! images decoded, resized and normalised per the backbone preset, optionally cached on disk
//! between epochs; text passed through for the model's tokenizer; targets collated for burn.
//!
//! The cache stores each prepared image as little-endian `f32`s under
//! `<cache>/<transform hash>/<path hash>.f32`, written atomically, so an interrupted run never
//! leaves a truncated entry, and a change of preprocessing never reads stale pixels.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::DataError;
use crate::image::ImagePreprocess;
use crate::pipeline::Prepare;
use crate::sample::{Sample, Target};

/// A prepared image+text sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTextItem {
    /// `3 × size × size` normalised pixels, channel-major.
    pub pixels: Vec<f32>,
    /// Text (empty if the sample has none).
    pub text: String,
    /// Target.
    pub target: Target,
}

/// Prepares image+text samples, with an optional on-disk cache.
#[derive(Debug, Clone)]
pub struct ImageTextPrepare {
    preprocess: ImagePreprocess,
    cache: Option<PathBuf>,
}

/// A stable 16-hex-digit name for `text` (FNV-1a), for cache files keyed by paths and settings.
pub fn cache_key(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

impl ImageTextPrepare {
    /// Prepares with `preprocess`; caches under `cache` if given.
    pub fn new(preprocess: ImagePreprocess, cache: Option<PathBuf>) -> Self {
        Self { preprocess, cache }
    }

    fn cache_path(&self, image: &Path) -> Option<PathBuf> {
        let dir = self.cache.as_ref()?;
        Some(dir.join(cache_key(&self.preprocess.fingerprint())).join(format!("{}.f32", cache_key(&image.to_string_lossy()))))
    }

    /// The prepared pixels of `image` (`3 × size × size`, channel-major), from the cache if there.
    pub fn pixels(&self, image: &Path) -> Result<Vec<f32>, DataError> {
        let expected = 3 * self.preprocess.size * self.preprocess.size;
        let cached = self.cache_path(image);
        if let Some(path) = &cached
            && let Ok(bytes) = std::fs::read(path)
            && bytes.len() == 4 * expected
        {
            return Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
        }
        let pixels = self.preprocess.load(image)?;
        if let Some(path) = cached {
            let dir = path.parent().expect("cache paths have a parent");
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&tmp, bytes).map_err(|e| DataError::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
        }
        Ok(pixels)
    }
}

impl Prepare for ImageTextPrepare {
    type Item = ImageTextItem;

    fn prepare(&self, sample: &Sample) -> Result<ImageTextItem, DataError> {
        let image = sample.image.as_ref().ok_or_else(|| DataError::missing_input(sample, "image"))?;
        Ok(ImageTextItem { pixels: self.pixels(image)?, text: sample.text.clone().unwrap_or_default(), target: sample.target.clone() })
    }
}

/// The images of a batch.
///
/// # Shapes
/// - output: `[items.len(), 3, size, size]`
pub fn pixel_batch<B: Backend>(items: &[ImageTextItem], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let flat: Vec<f32> = items.iter().flat_map(|i| i.pixels.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [items.len(), 3, size, size]), device)
}

/// Class targets of a batch.
///
/// # Shapes
/// - output: `[items.len()]`
///
/// # Panics
/// If a target is not a single class.
pub fn class_batch<B: Backend>(items: &[ImageTextItem], device: &B::Device) -> Tensor<B, 1, Int> {
    let classes: Vec<i64> = items
        .iter()
        .map(|i| match i.target {
            Target::Class(c) => c as i64,
            ref other => panic!("expected a class target, got {other:?}"),
        })
        .collect();
    Tensor::from_data(TensorData::new(classes, [items.len()]), device)
}

/// Multi-hot targets of a batch.
///
/// # Shapes
/// - output: `[items.len(), num_labels]`
///
/// # Panics
/// If a target is not multi-label.
pub fn multi_hot_batch<B: Backend>(items: &[ImageTextItem], num_labels: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut hot = vec![0f32; items.len() * num_labels];
    for (row, item) in items.iter().enumerate() {
        let Target::MultiLabel(labels) = &item.target else { panic!("expected multi-label targets, got {:?}", item.target) };
        for &l in labels {
            hot[row * num_labels + l] = 1.0;
        }
    }
    Tensor::from_data(TensorData::new(hot, [items.len(), num_labels]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn sample(dir: &Path, name: &str, colour: [u8; 3], target: Target) -> Sample {
        let path = dir.join(name);
        image::RgbImage::from_pixel(4, 4, image::Rgb(colour)).save(&path).unwrap();
        Sample { id: name.into(), image: Some(path), depth: None, audio: None, text: Some("t".into()), target }
    }

    #[test]
    fn cache_returns_the_same_pixels_and_survives_source_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let pre = ImagePreprocess { resize: 2, size: 2, mean: [0.0; 3], std: [1.0; 3] };
        let prepare = ImageTextPrepare::new(pre, Some(dir.path().join("cache")));
        let s = sample(dir.path(), "red.png", [255, 0, 0], Target::Class(1));
        let first = prepare.prepare(&s).unwrap();
        assert_eq!(first.pixels, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        std::fs::remove_file(s.image.as_ref().unwrap()).unwrap();
        assert_eq!(prepare.prepare(&s).unwrap(), first, "served from the cache");
        let other = ImageTextPrepare::new(ImagePreprocess { mean: [0.5; 3], ..pre }, Some(dir.path().join("cache")));
        assert!(other.prepare(&s).is_err(), "another transform does not read stale pixels");
    }

    #[test]
    fn collates_pixels_classes_and_multi_hot() {
        let dir = tempfile::tempdir().unwrap();
        let pre = ImagePreprocess { resize: 2, size: 2, mean: [0.0; 3], std: [1.0; 3] };
        let prepare = ImageTextPrepare::new(pre, None);
        let items: Vec<ImageTextItem> = [("a.png", Target::Class(2)), ("b.png", Target::Class(0))]
            .into_iter()
            .map(|(n, t)| prepare.prepare(&sample(dir.path(), n, [0, 255, 0], t)).unwrap())
            .collect();
        let device = Default::default();
        assert_eq!(pixel_batch::<Flex>(&items, 2, &device).dims(), [2, 3, 2, 2]);
        assert_eq!(class_batch::<Flex>(&items, &device).into_data().convert::<i64>().to_vec::<i64>().unwrap(), [2, 0]);
        let multi = vec![ImageTextItem { pixels: vec![], text: String::new(), target: Target::MultiLabel(vec![0, 2]) }];
        assert_eq!(multi_hot_batch::<Flex>(&multi, 3, &device).into_data().to_vec::<f32>().unwrap(), [1.0, 0.0, 1.0]);
    }
}
