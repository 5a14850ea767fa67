//! Dataset loaders for the six datasets of the MoPE paper, in their official on-disk layouts
//! (described in `datasets/README.md`):
//!
//! | module | dataset | modalities | task |
//! |---|---|---|---|
//! | [`food101`] | UPMC Food-101 | image + text | 101-way classification |
//! | [`mmimdb`] | MM-IMDB | image + text | 23-genre multi-label |
//! | [`snli_ve`] | SNLI-VE | image + text | 3-way visual entailment |
//! | [`mustard`] | MUStARD | text + audio | sarcasm (binary) |
//! | [`segmentation`] | NYUDv2, SUN RGB-D | RGB + depth | 40- / 37-class segmentation |
//! | [`jsonl`] | MoPE's JSON-lines layout (the emoji, digits and digits-match datasets that `cargo xtask setup` builds are in it) | image, text, audio | classification |
//! | [`image_folder`] | any image dataset: VTAB-1k lists, FGVC JSON, a folder per class | image | classification (pMoE) |
//!
//! Each loader reads the metadata of one split into a [`Split`] of [`Sample`]s (paths to the media
//! files, text, target), checking that every referenced file exists. A malformed row, a missing
//! file or an unknown label is an error naming the file and line ([`DataError`]); with
//! [`LoadOptions::skip_bad`] such rows are skipped instead and counted in [`Split::skipped`].
//!
//! [`ImagePreprocess`] prepares images as a backbone preset says (resize, crop, normalise; depth
//! images the same way, tiled to three channels); [`image_cache`] keeps prepared images on disk
//! between epochs; [`audio`] decodes and resamples WAV to 16 kHz; [`mask`] reads segmentation
//! masks as class ids; [`pipeline`] prepares batches on worker threads, in a deterministic order;
//! [`stratify`] draws stratified hold-out splits.
//!
//! This crate depends on no model crate.

pub mod audio;
pub mod error;
pub mod food101;
pub mod image;
pub mod image_folder;
pub mod image_cache;
pub mod jsonl;
pub mod mask;
pub mod mmimdb;
pub mod mustard;
pub mod pipeline;
pub mod sample;
pub mod segmentation;
pub mod snli_ve;
pub mod stamp;
pub mod stratify;

pub use error::DataError;
pub use audio::{TARGET_RATE, read_wav, resample};
pub use image::{IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess};
pub use image_cache::{ImageCache, cache_key};
pub use mask::load_mask;
pub use mustard::MustardSplit;
pub use pipeline::{Batches, LoaderConfig, Prepare, Throughput, batch_indices, batches};
pub use segmentation::RgbdDataset;
pub use stamp::{file_stamp, tree_stamp};
pub use sample::{LoadOptions, Sample, Split, SplitName, Target, Task};
