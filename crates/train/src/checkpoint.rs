//! Resumable checkpoints: the adapter of the last completed epoch, the optimiser's state and the
//! loop's counters, in `<run>/last/`.
//!
//! burn keys optimiser state by parameter id, and ids are drawn afresh whenever a model is built,
//! so the state is saved with the module path of each id and re-keyed to the new model's ids on
//! resume. The best checkpoint (`<run>/best/`) is an adapter only. A checkpoint is replaced whole
//! ([`crate::durable::replace_dir`]): a kill while saving leaves the previous one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::ParamId;
use burn::optim::{AdamW, Optimizer, adaptor::OptimizerAdaptor};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use mope_core::float_params;

use crate::device::TrainBackend;
use crate::model::Model;
use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.json";
const OPTIMIZER_FILE: &str = "optimizer";

/// Counters of the training loop at the end of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimisation steps taken.
    pub step: usize,
    /// Best validation value of the primary metric so far, and its epoch (1-based).
    pub best: Option<(f64, usize)>,
    /// Training seconds so far.
    pub seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    #[serde(flatten)]
    state: LoopState,
    /// Module path of each trainable parameter → its id in the saved optimiser record.
    param_ids: BTreeMap<String, u64>,
}

fn trainable_ids<B: TrainBackend>(model: &Model<B>) -> BTreeMap<String, ParamId> {
    float_params::<B, Model<B>>(model, |_, _| false).into_iter().filter(|p| p.trainable).map(|p| (p.path, p.id)).collect()
}

/// The optimiser of the training loop.
pub type TrainOptimizer<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// Saves the model's adapter, the optimiser state and `state` as the directory `dir`, replacing
/// the checkpoint it held only once the new one is whole.
pub fn save<B: TrainBackend>(
    dir: &Path,
    model: &Model<B>,
    optimizer: &TrainOptimizer<Model<B>, B>,
    state: &LoopState,
    base_model: serde_json::Value,
    model_config: serde_json::Value,
    method: &str,
) -> Result<()> {
    crate::durable::replace_dir(dir, |partial| {
        model.save_adapter(partial, method, base_model, model_config)?;
        BinFileRecorder::<FullPrecisionSettings>::new()
            .record(optimizer.to_record(), partial.join(OPTIMIZER_FILE))
            .with_context(|| format!("{}: cannot write the optimiser state", partial.display()))?;
        let saved = SavedState {
            state: state.clone(),
            param_ids: trainable_ids(model).into_iter().map(|(k, v)| (k, v.val())).collect(),
        };
        let path = partial.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&saved)?).with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    })
}

/// What to do about a checkpoint in `dir` that cannot be read.
fn damaged(dir: &Path) -> String {
    format!(
        "the checkpoint in {} is damaged (was it changed by hand, or its disk full?); train again with --overwrite \
         instead of --resume, or into a new --run-dir to keep this one",
        dir.display()
    )
}

/// Whether `dir` holds a checkpoint to resume from.
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// A model, its optimiser and the loop's counters, as a checkpoint restores them.
pub type Restored<B> = (Model<B>, TrainOptimizer<Model<B>, B>, LoopState);

/// Loads the checkpoint in `dir` into `model` and `optimizer`.
pub fn load<B: TrainBackend>(dir: &Path, model: Model<B>, optimizer: TrainOptimizer<Model<B>, B>) -> Result<Restored<B>> {
    let path: PathBuf = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read; {}", path.display(), damaged(dir)))?;
    let saved: SavedState = serde_json::from_str(&text).with_context(|| format!("{}: not a checkpoint state; {}", path.display(), damaged(dir)))?;
    let (model, _) = model.load_adapter(dir).with_context(|| damaged(dir))?;
    let now = trainable_ids(&model);
    let mut rekey: HashMap<ParamId, ParamId> = HashMap::new();
    for (path_key, old) in &saved.param_ids {
        let Some(new) = now.get(path_key) else {
            bail!(
                "{}: parameter `{path_key}` is not trainable in this model: the checkpoint is of another experiment; \
                 train again with --overwrite instead of --resume, or into a new --run-dir",
                path.display()
            )
        };
        rekey.insert(ParamId::from(*old), *new);
    }
    let record: <TrainOptimizer<Model<B>, B> as Optimizer<Model<B>, B>>::Record = BinFileRecorder::<FullPrecisionSettings>::new()
        .load(dir.join(OPTIMIZER_FILE), &Default::default())
        .map_err(|e| {
            // burn's error nests its reader's in debug strings: say what it means where known.
            let cause = format!("{e:?}");
            let cause = if cause.contains("UnexpectedEof") { "it ends early".to_string() } else { cause.chars().take(200).collect() };
            anyhow::anyhow!("{}: the optimiser state cannot be read ({cause}); {}", dir.join(OPTIMIZER_FILE).with_extension("bin").display(), damaged(dir))
        })?;
    let record = record.into_iter().map(|(id, state)| (rekey.get(&id).copied().unwrap_or(id), state)).collect();
    Ok((model, optimizer.load_record(record), saved.state))
}
