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

/// The most pixels an image may have once resized ([`ImagePreprocess::load`]): 16 M, an aspect
/// ratio up to 256 : 1 at the ImageNet resize of 256.
pub const MAX_RESIZED_PIXELS: u64 = 1 << 24;

/// ImageNet's channel statistics.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel statistics.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ImagePreprocess {
    /// torchvision's ImageNet evaluation transform: resize 256, centre-crop 224.
    pub fn imagenet() -> Self {
        Self { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }

    /// Reads an image file (PNG, JPEG) and prepares it. An image whose shorter side resized to
    /// `resize` would have more than [`MAX_RESIZED_PIXELS`] (an extreme aspect ratio: a 1 × 100,000
    /// strip becomes 256 × 25,600,000) is refused, naming its size.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        let image = open_image(path)?;
        let (w, h) = (image.width(), image.height());
        let (nw, nh) = self.resized(w, h);
        if u64::from(nw) * u64::from(nh) > MAX_RESIZED_PIXELS {
            let message = format!("a {w}×{h} image: its shorter side resized to {} makes it {nw}×{nh}, more than {MAX_RESIZED_PIXELS} pixels", self.resize);
            return Err(DataError::Decode { path: path.to_path_buf(), message });
        }
        Ok(self.apply(&image))
    }

    /// The size of a `w × h` image once its shorter side is `resize`.
    fn resized(&self, w: u32, h: u32) -> (u32, u32) {
        let scale = self.resize as f64 / w.min(h).max(1) as f64;
        (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1))
    }

    /// A stable description of the transform, for cache keys.
    pub fn fingerprint(&self) -> String {
        format!("resize{}-crop{}-mean{:?}-std{:?}", self.resize, self.size, self.mean, self.std)
    }

    /// Prepares a decoded image: `3 × size × size` values, channel-major.
    pub fn apply(&self, image: &DynamicImage) -> Vec<f32> {
        let rgb: RgbImage = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let (nw, nh) = self.resized(w, h);
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

    /// A strip of extreme aspect ratio is refused before it is resized (it would hold 256 ×
    /// 256,000 pixels), naming the file and its size; a wide but sane image is prepared.
    #[test]
    fn an_extreme_aspect_ratio_is_refused_before_resizing() {
        let dir = tempfile::tempdir().unwrap();
        let strip = dir.path().join("strip.png");
        RgbImage::new(1000, 1).save(&strip).unwrap();
        let error = ImagePreprocess::imagenet().load(&strip).unwrap_err().to_string();
        assert!(error.contains("strip.png") && error.contains("a 1000×1 image") && error.contains("256000×256"), "{error}");
        let wide = dir.path().join("wide.png");
        RgbImage::new(200, 10).save(&wide).unwrap();
        assert_eq!(ImagePreprocess::imagenet().load(&wide).unwrap().len(), 3 * 224 * 224);
    }
}
