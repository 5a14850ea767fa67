//! Training and evaluation of MoPE, pMoE and their baselines, run directories, plots, and the `mope`
//! command line (`src/bin/mope.rs`). This is the only crate that picks a burn backend: `flex`
//! (CPU, default), `wgpu` or `cuda`, as cargo features, chosen with `--device`.
//!
//! | module | owns |
//! |---|---|
//! | [`spec`] | [`ExperimentSpec`]: the TOML experiment file, official flag names as aliases, `--set` |
//! | [`dataset`] | loading the splits a spec names |
//! | [`pair`] | preparing each sample for the encoders in loader workers, and collating |
//! | [`model`] | [`Model`]: MoPE-family over two encoders or pMoE-family over image experts; its forward passes and routing sites |
//! | [`evaluation`] | the loss of a task, its metrics and routing statistics per layer and class |
//! | [`metrics`] | accuracy, multi-label F1, segmentation scores |
//! | [`schedule`] | learning-rate schedules |
//! | [`optim`] | global-norm gradient clipping |
//! | [`trainer`] | the training loop and evaluation |
//! | [`feature_cache`] | frozen complementary features kept across epochs and runs |
//! | [`checkpoint`] | resumable checkpoints (adapter + optimiser state) |
//! | [`run_dir`] | the files a run writes, and its result |
//! | [`progress`] | progress bars or plain lines |
//! | [`reproduce`] | `mope reproduce`: the experiments of `experiments/` run one by one, the table of results and the claims |
//! | [`plot`] | training curves, expert-usage and per-class routing heatmaps (PNG and SVG) |
//! | [`device`] | the backends and devices `--device` selects |
//! | [`malloc`] | glibc's allocator set up for tensor work (the binaries re-execute themselves with it) |

pub mod checkpoint;
pub mod dataset;
pub mod device;
pub mod evaluation;
pub mod feature_cache;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pair;
pub mod plot;
pub mod progress;
pub mod reproduce;
pub mod run_dir;
pub mod run_lock;
pub mod schedule;
pub mod spec;
pub mod trainer;

pub use evaluation::{EvalReport, Objective};
pub use run_dir::{RunDir, RunResult};
pub use spec::ExperimentSpec;
pub use model::Model;
pub use dataset::{Splits, load_splits};
pub use trainer::{Setup, TrainOptions, evaluate, train};
