//! RGB-D segmentation samples: the RGB image normalised per the preset, the depth image read as
//! grey levels and tiled to three channels (as the official loader feeds depth to an RGB encoder),
//! and the class mask, all resized to the encoder's square input (nearest neighbour for the mask,
//! whose 255 marks unlabelled pixels).

use std::path::Path;

use image::imageops::FilterType;

use crate::error::DataError;
use crate::image::{ImagePreprocess, open_image};
use crate::pipeline::Prepare;
use crate::sample::{Sample, Target};

/// A prepared RGB-D sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbdItem {
    /// `3 × size × size` normalised RGB.
    pub rgb: Vec<f32>,
    /// `3 × size × size` depth, scaled to `[0, 1]` then normalised like the RGB.
    pub depth: Vec<f32>,
    /// `size × size` class ids (255 = unlabelled).
    pub mask: Vec<u8>,
}

/// Prepares RGB-D samples at the preset's size.
#[derive(Debug, Clone)]
pub struct RgbdPrepare {
    /// RGB (and depth) preparation; images are resized to `size × size` directly.
    pub preprocess: ImagePreprocess,
}

impl Prepare for RgbdPrepare {
    type Item = RgbdItem;

    fn prepare(&self, sample: &Sample) -> Result<RgbdItem, DataError> {
        let missing = |what: &str| DataError::missing_input(sample, what);
        let size = self.preprocess.size as u32;
        let square = ImagePreprocess { resize: self.preprocess.size, ..self.preprocess };
        let rgb = open_image(sample.image.as_ref().ok_or_else(|| missing("image"))?)?.resize_exact(size, size, FilterType::Triangle);
        let depth = open_image(sample.depth.as_ref().ok_or_else(|| missing("depth"))?)?;
        // 16-bit depth keeps its range: scale by the maximum of its type, then to 8-bit grey.
        let grey = depth.to_luma16();
        let grey = image::DynamicImage::ImageLuma16(grey).to_rgb8();
        let depth = image::DynamicImage::ImageRgb8(grey).resize_exact(size, size, FilterType::Triangle);
        let Target::Mask(mask_path) = &sample.target else { return Err(missing("mask")) };
        Ok(RgbdItem { rgb: square.apply(&rgb), depth: square.apply(&depth), mask: load_mask(mask_path, size)? })
    }
}

/// A label image as `size × size` class ids, resized by nearest neighbour (255 stays unlabelled).
pub fn load_mask(path: &Path, size: u32) -> Result<Vec<u8>, DataError> {
    let mask = open_image(path)?;
    if mask.color().channel_count() != 1 {
        return Err(DataError::Decode { path: path.to_path_buf(), message: "masks must be single-channel class ids".into() });
    }
    Ok(image::imageops::resize(&mask.to_luma8(), size, size, FilterType::Nearest).into_raw())
}

/// RGB, depth and masks of a batch.
///
/// # Shapes
/// - output: RGB and depth `[items.len(), 3, size, size]`, masks `[items.len(), size, size]`
pub fn rgbd_batch<B: burn::tensor::backend::Backend>(
    items: &[RgbdItem],
    size: usize,
    device: &B::Device,
) -> (burn::tensor::Tensor<B, 4>, burn::tensor::Tensor<B, 4>, burn::tensor::Tensor<B, 3, burn::tensor::Int>) {
    use burn::tensor::{Tensor, TensorData};
    let n = items.len();
    let rgb: Vec<f32> = items.iter().flat_map(|i| i.rgb.iter().copied()).collect();
    let depth: Vec<f32> = items.iter().flat_map(|i| i.depth.iter().copied()).collect();
    let mask: Vec<i64> = items.iter().flat_map(|i| i.mask.iter().map(|&c| c as i64)).collect();
    (
        Tensor::from_data(TensorData::new(rgb, [n, 3, size, size]), device),
        Tensor::from_data(TensorData::new(depth, [n, 3, size, size]), device),
        Tensor::from_data(TensorData::new(mask, [n, size, size]), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{LoadOptions, SplitName};
    use crate::segmentation::{RgbdDataset, load};

    #[test]
    fn prepares_the_nyudv2_fixture() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/nyudv2");
        let split = load(&root, RgbdDataset::NyuDv2, SplitName::Train, LoadOptions::default()).unwrap();
        // 8×6 fixture images to 8×8: columns map one to one, so the unlabelled corner survives.
        let prepare = RgbdPrepare { preprocess: ImagePreprocess { resize: 8, size: 8, mean: [0.0; 3], std: [1.0; 3] } };
        let item = prepare.prepare(&split.samples[0]).unwrap();
        assert_eq!((item.rgb.len(), item.depth.len(), item.mask.len()), (192, 192, 64));
        // Fixture sample 1: depth grey 40, mask class 1 with the top-left pixel unlabelled.
        assert!(item.depth.iter().all(|&v| (v - 40.0 / 255.0).abs() < 1e-3), "{:?}", &item.depth[..4]);
        assert_eq!(item.mask[0], 255, "nearest neighbour keeps the ignore label");
        assert!(item.mask[1..].iter().all(|&c| c == 1 || c == 255), "no interpolated class ids");
        let (rgb, depth, mask) = rgbd_batch::<burn::backend::Flex>(&[item.clone(), item], 8, &Default::default());
        assert_eq!((rgb.dims(), depth.dims(), mask.dims()), ([2, 3, 8, 8], [2, 3, 8, 8], [2, 8, 8]));
    }
}
