//! Image preprocessing that travels with a backbone preset: resize the shorter side, centre-crop,
//! scale to `[0, 1]`, normalise per channel (torchvision's ImageNet evaluation transform; with
//! `resize == size` it is the plain resize-and-normalise of Hugging Face's ViT processors up to
//! the aspect ratio).

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::DataError;

/// How an image is prepared for an encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagePreprocess {
    /// The shorter side is resized to this (bilinear).
    pub resize: usize,
    /// Side of the centre crop fed to the encoder.
    pub size: usize,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

/// Decodes an image file; a missing file is an I/O error and an undecodable one a decode error,
/// both naming the file.
pub fn open_image(path: &Path) -> Result<DynamicImage, DataError> {
    image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => DataError::io(path, io),
        other => DataError::Decode { path: path.to_path_buf(), message: other.to_string() },
    })
}

/// ImageNet's channel statistics.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel statistics.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ImagePreprocess {
    /// torchvision's ImageNet evaluation transform: resize 256, centre-crop 224.
    pub fn imagenet() -> Self {
        Self { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }

    /// Reads an image file (PNG, JPEG) and prepares it.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        Ok(self.apply(&open_image(path)?))
    }

    /// A stable description of the transform, for cache keys.
    pub fn fingerprint(&self) -> String {
        format!("resize{}-crop{}-mean{:?}-std{:?}", self.resize, self.size, self.mean, self.std)
    }

    /// Prepares a decoded image: `3 × size × size` values, channel-major.
    pub fn apply(&self, image: &DynamicImage) -> Vec<f32> {
        let rgb: RgbImage = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let scale = self.resize as f64 / w.min(h) as f64;
        let (nw, nh) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
        let resized = image::imageops::resize(&rgb, nw, nh, FilterType::Triangle);
        let size = self.size as u32;
        let (left, top) = (nw.saturating_sub(size) / 2, nh.saturating_sub(size) / 2);
        let mut out = vec![0f32; 3 * self.size * self.size];
        for y in 0..size.min(nh) {
            for x in 0..size.min(nw) {
                let pixel = resized.get_pixel(left + x, top + y);
                for c in 0..3 {
                    let value = pixel[c] as f32 / 255.0;
                    out[(c * self.size + y as usize) * self.size + x as usize] = (value - self.mean[c]) / self.std[c];
                }
            }
        }
        out
    }

    /// A batch of prepared images as a tensor.
    ///
    /// # Shapes
    /// - output: `[images.len(), 3, size, size]`
    pub fn batch<B: Backend>(&self, images: &[Vec<f32>], device: &B::Device) -> Tensor<B, 4> {
        let flat: Vec<f32> = images.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [images.len(), 3, self.size, self.size]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_the_centre_and_normalises() {
        // 4×2 image: left half black, right half white; resize shorter side to 2 (no change), crop 2.
        let mut img = RgbImage::new(4, 2);
        for y in 0..2 {
            for x in 2..4 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let pre = ImagePreprocess { resize: 2, size: 2, mean: [0.5; 3], std: [0.5; 3] };
        let out = pre.apply(&DynamicImage::ImageRgb8(img));
        // The centre crop holds columns 1 (black → -1) and 2 (white → 1), for every channel.
        assert_eq!(out, vec![-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn missing_file_is_named() {
        let err = ImagePreprocess::imagenet().load(Path::new("/nonexistent/cat.png")).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/cat.png: No such file"), "{err}");
    }
}
