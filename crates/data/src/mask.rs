//! Segmentation targets: a label image read as class ids at the encoder's square input size,
//! by nearest neighbour, so that no class id is interpolated and 255 keeps marking unlabelled
//! pixels.

use std::path::Path;

use image::imageops::FilterType;

use crate::error::DataError;
use crate::image::open_image;

/// A label image as `size × size` class ids, resized by nearest neighbour (255 stays unlabelled).
pub fn load_mask(path: &Path, size: u32) -> Result<Vec<u8>, DataError> {
    let mask = open_image(path)?;
    if mask.color().channel_count() != 1 {
        return Err(DataError::Decode { path: path.to_path_buf(), message: "masks must be single-channel class ids".into() });
    }
    Ok(image::imageops::resize(&mask.to_luma8(), size, size, FilterType::Nearest).into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImagePreprocess;
    use crate::sample::{LoadOptions, SplitName, Target};
    use crate::segmentation::{RgbdDataset, load};

    #[test]
    fn reads_the_nyudv2_fixture() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/nyudv2");
        let split = load(&root, RgbdDataset::NyuDv2, SplitName::Train, LoadOptions::default()).unwrap();
        let sample = &split.samples[0];
        // 8×6 fixture images to 8×8: columns map one to one, so the unlabelled corner survives.
        let Target::Mask(path) = &sample.target else { panic!("a mask target") };
        let mask = load_mask(path, 8).unwrap();
        assert_eq!(mask.len(), 64);
        assert_eq!(mask[0], 255, "nearest neighbour keeps the ignore label");
        assert!(mask[1..].iter().all(|&c| c == 1 || c == 255), "no interpolated class ids");
        // Fixture sample 1: depth grey 40, read like an RGB image, tiled to three channels.
        let depth = ImagePreprocess { resize: 8, size: 8, mean: [0.0; 3], std: [1.0; 3] }.load(sample.depth.as_ref().unwrap()).unwrap();
        assert_eq!(depth.len(), 192);
        assert!(depth.iter().all(|&v| (v - 40.0 / 255.0).abs() < 1e-3), "{:?}", &depth[..4]);
    }

    #[test]
    fn a_colour_mask_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.png");
        image::RgbImage::from_pixel(2, 2, image::Rgb([1, 1, 1])).save(&path).unwrap();
        let err = load_mask(&path, 2).unwrap_err().to_string();
        assert!(err.contains("mask.png") && err.contains("single-channel"), "{err}");
    }
}
