//! Training and evaluation of MoPE and its baselines, metrics, run directories, and the `mope`
//! command line. This is the only crate that picks a burn backend: `flex` (CPU, default), `wgpu`
//! or `cuda`, as cargo features.
//!
//! It is filled by the training issue; nothing here is usable yet.
