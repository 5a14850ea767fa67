//! Dataset loaders for the six datasets of the MoPE paper (UPMC Food-101, MM-IMDB, SNLI-VE,
//! MUStARD, NYUDv2, SUN RGB-D) in their official on-disk layouts, and the small real datasets that
//! can be assembled from package registries, batched for burn.
//!
//! This crate depends on no model crate. It is filled by the data issue; nothing here is usable yet.
