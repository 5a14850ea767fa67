//! Prepared images cached on disk between epochs and runs: each image decoded, resized and
//! normalised per the backbone preset once, then read back as it was written.
//!
//! The cache stores each prepared image as little-endian `f32`s under
//! `<cache>/<transform hash>/<file hash>.f32`, written atomically, so an interrupted run never
//! leaves a truncated entry; the file hash covers the image's path, size and modification time
//! ([`crate::stamp`]), so neither a change of preprocessing nor a replaced image reads stale pixels.

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::image::ImagePreprocess;
use crate::pipeline::Prepare;
use crate::sample::Sample;

/// Prepares images with one preprocessing, through an optional on-disk cache.
#[derive(Debug, Clone)]
pub struct ImageCache {
    preprocess: ImagePreprocess,
    cache: Option<PathBuf>,
}

/// A stable 16-hex-digit name for `text` (FNV-1a), for cache files keyed by paths and settings.
pub fn cache_key(text: &str) -> String {
    format!("{:016x}", crate::stratify::fnv1a(text))
}

impl ImageCache {
    /// Prepares with `preprocess`; caches under `cache` if given.
    pub fn new(preprocess: ImagePreprocess, cache: Option<PathBuf>) -> Self {
        Self { preprocess, cache }
    }

    fn cache_path(&self, image: &Path) -> Option<PathBuf> {
        let dir = self.cache.as_ref()?;
        Some(dir.join(cache_key(&self.preprocess.fingerprint())).join(format!("{}.f32", cache_key(&crate::stamp::file_stamp(image)))))
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

/// A sample's prepared image, for the batch pipeline.
impl Prepare for ImageCache {
    type Item = Vec<f32>;

    fn prepare(&self, sample: &Sample) -> Result<Vec<f32>, DataError> {
        self.pixels(sample.image.as_ref().ok_or_else(|| DataError::missing_input(sample, "image"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_image(dir: &Path, name: &str, colour: [u8; 3]) -> PathBuf {
        let path = dir.join(name);
        image::RgbImage::from_pixel(4, 4, image::Rgb(colour)).save(&path).unwrap();
        path
    }

    #[test]
    fn cache_returns_the_same_pixels_and_reads_a_replaced_image_again() {
        let dir = tempfile::tempdir().unwrap();
        let pre = ImagePreprocess { resize: 2, size: 2, mean: [0.0; 3], std: [1.0; 3] };
        let images = ImageCache::new(pre, Some(dir.path().join("cache")));
        let red = write_image(dir.path(), "red.png", [255, 0, 0]);
        let first = images.pixels(&red).unwrap();
        assert_eq!(first, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let entry = images.cache_path(&red).unwrap();
        std::fs::write(&entry, [0u8; 48]).unwrap();
        assert_eq!(images.pixels(&red).unwrap(), [0.0; 12], "served from the cache");
        // The same path, another picture: read again, not the cached entry.
        std::thread::sleep(std::time::Duration::from_millis(10));
        write_image(dir.path(), "red.png", [0, 0, 255]);
        assert_eq!(images.pixels(&red).unwrap()[8..], [1.0; 4]);
        let other = ImageCache::new(ImagePreprocess { mean: [0.5; 3], ..pre }, Some(dir.path().join("cache")));
        assert_eq!(other.pixels(&red).unwrap()[8..], [0.5; 4], "another transform does not read pixels cached by this one");
    }

    #[test]
    fn without_a_cache_every_call_reads_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let pre = ImagePreprocess { resize: 2, size: 2, mean: [0.0; 3], std: [1.0; 3] };
        let images = ImageCache::new(pre, None);
        let green = write_image(dir.path(), "green.png", [0, 255, 0]);
        assert_eq!(images.pixels(&green).unwrap()[4..8], [1.0; 4]);
        std::fs::remove_file(&green).unwrap();
        assert!(images.pixels(&green).is_err());
    }
}
