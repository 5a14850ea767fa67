//! Training and evaluation of MoPE and its baselines, metrics, run directories, and the `mope`
//! command line. This is the only crate that picks a burn backend: `flex` (CPU, default), `wgpu`
//! or `cuda`, as cargo features.
//!
//! Present so far: [`metrics`], the task metrics of the paper, and [`schedule`], the learning-rate
//! schedules. The training loop, the CLI and
//! `cargo xtask reproduce` come with the training issue; the quick start example
//! (`examples/quickstart.rs`) trains with a plain loop meanwhile.

pub mod metrics;
pub mod schedule;
