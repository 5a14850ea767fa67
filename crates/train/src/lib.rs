//! Training and evaluation of MoPE, pMoE and their baselines, run directories, plots, and the `mope`
//! command line (`src/bin/mope.rs`). This is the only crate that picks a burn backend: `flex`
//! (CPU, default), `wgpu` or `cuda`, as cargo features, chosen with `--device`.
//!
//! | module | owns |
//! |---|---|
//! | [`spec`] | [`ExperimentSpec`]: the TOML experiment file, official flag names as aliases, `--set` |
//! | [`dataset`] | loading the splits a spec names; the loader settings and the samples of an epoch |
//! | [`pair`] | preparing each sample for the encoders in loader workers, and collating |
//! | [`model`] | [`Model`]: MoPE-family over two encoders or pMoE-family over image experts; its forward passes and routing sites |
//! | [`model_config`] | the model configuration a spec asks for, where its weights and caches are |
//! | [`setup`] | [`Setup`]: the encoders loaded and checked, the model built from the seed |
//! | [`objective`] | [`Objective`]: a task's forward pass, loss and primary metric |
//! | [`evaluation`] | [`evaluate`]: a split's loss, metrics and routing statistics per layer and class |
//! | [`metrics`] | accuracy, multi-label F1, segmentation scores |
//! | [`predictions`] | each sample's class probabilities (validation, test), and their mean over runs (the mean of experts) |
//! | [`schedule`] | learning-rate schedules |
//! | [`optim`] | global-norm gradient clipping |
//! | [`trainer`] | [`train`]: the training loop |
//! | [`feature_cache`] | constant frozen features (complementary; late fusion's main) kept across epochs and runs |
//! | [`checkpoint`] | resumable checkpoints (adapter + optimiser state) |
//! | [`run_dir`] | the files a run writes, and its result |
//! | [`run_lock`] | one writer per run directory |
//! | [`progress`] | progress bars or plain lines |
//! | [`reproduce`] | `mope reproduce`: the experiments of `experiments/` run once per seed |
//! | [`claims`] | the result table over seeds and each dataset's claims, with the verdict rule |
//! | [`routing_report`] | MoPE's routers and pMoE's dispatchers in a reproduction, per layer and class |
//! | [`plot`] | training curves, expert-usage and per-class routing heatmaps (PNG and SVG) |
//! | [`device`] | the backends and devices `--device` selects |
//! | [`malloc`] | glibc's allocator set up for tensor work (the binaries re-execute themselves with it) |

pub mod checkpoint;
pub mod claims;
pub mod dataset;
pub mod device;
pub mod durable;
pub mod evaluation;
pub mod feature_cache;
pub mod keys;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod model_config;
pub mod objective;
pub mod optim;
pub mod pair;
pub mod plot;
pub mod predictions;
pub mod progress;
pub mod reproduce;
pub mod routing_report;
pub mod run_dir;
pub mod run_lock;
pub mod schedule;
pub mod setup;
pub mod spec;
pub mod trainer;

pub use checkpoint::TrainOptimizer;
pub use dataset::{Splits, epoch_samples, load_split, load_splits, loader_config};
pub use device::{BackendJob, DeviceChoice, TrainBackend, run_on};
pub use evaluation::{EvalReport, evaluate};
pub use feature_cache::{BatchInputs, FeatureCache, FeatureStores, MainInput};
pub use malloc::{MALLOC_SETTINGS, tune_glibc_malloc};
pub use model::{LearningRateGroup, MainUse, Model, Site};
pub use objective::{Logits, Objective};
pub use optim::clip_global_norm;
pub use plot::plot_run;
pub use progress::ProgressMode;
pub use reproduce::{ReproduceOptions, SEEDS, run_experiments};
pub use run_dir::{RunDir, RunResult, RunTask};
pub use setup::Setup;
pub use spec::ExperimentSpec;
pub use trainer::{TrainOptions, train};
