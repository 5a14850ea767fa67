//! Frozen features kept across epochs, and across runs on disk, when they cannot change. The
//! complementary encoder is frozen and unprompted, so its pooled representation of a sample is a
//! constant; so is the main side's where nothing in front of the head trains (late fusion and its
//! probe of the main modality over encoders without a trainable part, late fusion over such
//! experts). Every method of an experiment family then encodes each sample's complementary input
//! once, and late fusion trains its head on features computed once.
//!
//! On disk: `<dir>/<key>.json` (`{"width": w, "ids": [...]}`) and `<dir>/<key>.f32` (rows of
//! little-endian `f32` in the order of `ids`), where the key hashes the encoder (with its role on
//! the main side), the stamps of its weights files, its input options and the dataset root
//! ([`store_path`]), and each id carries its sample's inputs' stamp. Both are written atomically;
//! a file that does not match is ignored and rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use backbones::AnyInput;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use ops::Kernels;
use serde::{Deserialize, Serialize};

use crate::model::{MainUse, Model};
use crate::pair::{PairPrepare, PreparedPair, Skip};
use crate::spec::ExperimentSpec;

/// Where the features of `encoder` (an encoder name, prefixed by its role where the role
/// changes what is kept), read from the weights in `weights`, reading depth images if
/// `reads_depth`, for the experiment's data are kept under `cache_dir`: a key over the encoder,
/// the stamps of its weights files (path, size, modification time: new weights in the same folder
/// are a new store), its input options (image size, clip length, text length, depth input) and
/// the dataset root. Each row is keyed by its sample's
/// inputs too ([`data::Sample::inputs_stamp`]).
pub fn store_path(cache_dir: &Path, spec: &ExperimentSpec, encoder: &str, weights: &[PathBuf], reads_depth: bool) -> PathBuf {
    let m = &spec.model;
    let weights: Vec<String> = weights.iter().map(|dir| data::tree_stamp(dir)).collect();
    let key = format!("{encoder}|{}|{}|{}|{reads_depth}|{}|{}", m.image_size, m.audio_seconds, m.max_text_tokens, spec.data.root.display(), weights.join("\n"));
    cache_dir.join("features").join(data::cache_key(&key))
}

/// Where an experiment's constant features are kept between runs (paths without extension).
#[derive(Debug, Clone, Default)]
pub struct FeatureStores {
    /// The main side's: the main encoder's pooled representation, or the experts' concatenated.
    pub main: Option<PathBuf>,
    /// The complementary encoder's.
    pub complementary: Option<PathBuf>,
}

/// A batch's inputs as the model reads them.
#[derive(Debug)]
pub struct BatchInputs<B: Backend> {
    /// The main side.
    pub main: MainInput<B>,
    /// The complementary representation, for models that read one. Shape `[batch, d_complementary]`.
    pub complementary: Option<Tensor<B, 2>>,
}

/// The main side of a batch.
#[derive(Debug)]
pub enum MainInput<B: Backend> {
    /// The encoder's input: the encoder runs on it.
    Encoder(AnyInput<B>),
    /// The constant pooled representation ([`MainUse::Constant`]). Shape `[batch, width]`.
    Pooled(Tensor<B, 2>),
    /// Nothing: the head does not read the main side.
    Unread,
}

/// Rows of one side's constant features by `split/id`, and the store they are kept in.
#[derive(Debug, Default)]
struct Rows {
    rows: HashMap<String, Vec<f32>>,
    store: Option<PathBuf>,
    dirty: bool,
    /// What computes them, for the announcement (`main encoder`, `experts`, ...).
    source: &'static str,
}

/// How one side's features are had.
#[derive(Debug)]
enum Side {
    /// The model does not read it.
    Unused,
    /// Computed at every step (the encoder is prompted, or part of it trains).
    EveryStep,
    /// Constant: computed once per sample and kept.
    Cached(Rows),
}

/// The constant features of a model's two sides, by `split/id`.
#[derive(Debug)]
pub struct FeatureCache {
    main: Side,
    complementary: Side,
}

#[derive(Serialize, Deserialize)]
struct Index {
    width: usize,
    ids: Vec<String>,
    /// FNV-1a of the `.f32` file written with this index: runs side by side may write the same
    /// store, and a `.f32` of one writer beside the index of another is refused, not misread.
    #[serde(default)]
    checksum: u64,
}

impl FeatureCache {
    /// A cache for `model`, which keeps each side whose features are constant, on disk in its
    /// store if given. `dense` (segmentation) reads the main encoder's every position, which
    /// no pooled representation replaces.
    pub fn for_model<B: Kernels>(model: &Model<B>, stores: FeatureStores, dense: bool) -> Self {
        let main_source = if matches!(model, Model::Experts(_)) { "experts" } else { "main encoder" };
        let main = match model.main_use() {
            MainUse::Unread if !dense => Side::Unused,
            MainUse::Constant if !dense => Side::Cached(Rows::open(stores.main, main_source)),
            _ => Side::EveryStep,
        };
        let complementary = match (model.reads_complementary(), model.complementary_prompts()) {
            (false, _) => Side::Unused,
            (true, Some(_)) => Side::EveryStep,
            (true, None) => Side::Cached(Rows::open(stores.complementary, "complementary encoder")),
        };
        Self { main, complementary }
    }

    /// A preparation of `samples` (of split `split`) that leaves out the inputs whose features
    /// are all cached, or unread.
    pub fn prepare_for(&self, prepare: &Arc<PairPrepare>, split: &str, samples: &[data::Sample]) -> Arc<PairPrepare> {
        let skipped = |side: &Side| match side {
            Side::Unused => true,
            Side::EveryStep => false,
            Side::Cached(rows) => rows.missing(split, samples) == 0,
        };
        let skip = Skip { main: skipped(&self.main), complementary: skipped(&self.complementary) };
        if skip == Skip::default() { prepare.clone() } else { Arc::new(prepare.skipping(skip)) }
    }

    /// Lines saying where the features of `samples` (of split `split`) will come from, announced
    /// before training: one per side that is cached or computed other than as usual.
    pub fn describe(&self, split: &str, samples: &[data::Sample]) -> Vec<String> {
        let mut lines = Vec::new();
        if let Side::Cached(rows) = &self.main {
            lines.push(rows.describe("main", split, samples));
        }
        match &self.complementary {
            Side::Cached(rows) => lines.push(rows.describe("complementary", split, samples)),
            Side::EveryStep => lines.push("complementary features: computed at every step (the complementary encoder is prompted)".into()),
            Side::Unused => {}
        }
        lines
    }

    /// The inputs of `items` (of split `split`): encoder inputs where the encoder runs, cached
    /// features (computed for the samples not seen yet) where they are constant.
    pub fn inputs<B: Kernels>(
        &mut self,
        model: &Model<B>,
        prepare: &PairPrepare,
        split: &str,
        items: &[PreparedPair],
        device: &B::Device,
    ) -> Result<BatchInputs<B>> {
        let main = match &mut self.main {
            Side::Unused => MainInput::Unread,
            Side::EveryStep => MainInput::Encoder(prepare.main_batch(items, device)?),
            Side::Cached(rows) => MainInput::Pooled(rows.get(split, items, device, |missing| {
                unchanged_since_planned(missing, |i| i.main.is_some())?;
                Ok(model.main_feature(&prepare.main_batch(missing.iter().copied(), device)?))
            })?),
        };
        Ok(BatchInputs { main, complementary: self.complementary(model, prepare, split, items, device)? })
    }

    /// The complementary representation of `items` (of split `split`), `None` for a model that
    /// reads none: [`inputs`](Self::inputs)' complementary side alone.
    ///
    /// # Shapes
    /// - output: `[items.len(), d_complementary]`
    pub fn complementary<B: Kernels>(
        &mut self,
        model: &Model<B>,
        prepare: &PairPrepare,
        split: &str,
        items: &[PreparedPair],
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 2>>> {
        Ok(match &mut self.complementary {
            Side::Unused => None,
            Side::EveryStep => Some(model.complementary_feature(&prepare.complementary_batch(items, device)?)),
            Side::Cached(rows) => Some(rows.get(split, items, device, |missing| {
                unchanged_since_planned(missing, |i| i.complementary.is_some())?;
                Ok(model.complementary_feature(&prepare.complementary_batch(missing.iter().copied(), device)?))
            })?),
        })
    }

    /// Writes new rows to the stores, if there are any.
    pub fn flush(&mut self) -> Result<()> {
        for side in [&mut self.main, &mut self.complementary] {
            if let Side::Cached(rows) = side {
                rows.flush()?;
            }
        }
        Ok(())
    }
}

/// Refuses to encode items whose input was left out because their feature was cached when the
/// epoch was planned, but whose files changed since (their stamp has no row any more).
fn unchanged_since_planned(missing: &[&PreparedPair], prepared: impl Fn(&PreparedPair) -> bool) -> Result<()> {
    match missing.iter().find(|i| !prepared(i)) {
        Some(item) => anyhow::bail!("sample `{}`: its files changed while the run was reading them; run again", item.id),
        None => Ok(()),
    }
}

impl Rows {
    /// The rows kept in `store` (none if it is missing or does not match), or none without a
    /// store; `source` computes them.
    fn open(store: Option<PathBuf>, source: &'static str) -> Self {
        let rows = store.as_deref().and_then(read_store).unwrap_or_default();
        Self { rows, store, dirty: false, source }
    }

    /// A row's key: the split, the sample's id and the stamp of its inputs (a sample whose text
    /// or files changed is encoded again).
    fn key(split: &str, id: &str, inputs_stamp: u64) -> String {
        format!("{split}/{id}/{inputs_stamp:016x}")
    }

    /// How many of `samples` (of split `split`) have no row yet.
    fn missing(&self, split: &str, samples: &[data::Sample]) -> usize {
        samples.iter().filter(|s| !self.rows.contains_key(&Self::key(split, &s.id, s.inputs_stamp()))).count()
    }

    /// One line saying where `side`'s features of `samples` will come from.
    fn describe(&self, side: &str, split: &str, samples: &[data::Sample]) -> String {
        let missing = self.missing(split, samples);
        let kept = self.store.as_ref().map_or_else(|| "kept for this run".to_string(), |store| format!("kept in {}.f32 for later runs", store.display()));
        if missing == 0 {
            format!("{side} features: all {} {split} samples cached ({kept})", samples.len())
        } else {
            format!(
                "{side} features: {missing} of {} {split} samples to encode during the first epoch, once (the frozen {}; {kept})",
                samples.len(),
                self.source
            )
        }
    }

    /// The rows of `items`, those not kept yet computed by `compute` (from the items missing).
    ///
    /// # Shapes
    /// - `compute`'s output: `[missing.len(), width]`; output `[items.len(), width]`
    fn get<B: Backend>(
        &mut self,
        split: &str,
        items: &[PreparedPair],
        device: &B::Device,
        compute: impl FnOnce(&[&PreparedPair]) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let missing: Vec<&PreparedPair> = items.iter().filter(|i| !self.rows.contains_key(&Self::key(split, &i.id, i.inputs_stamp))).collect();
        if !missing.is_empty() {
            let features = compute(&missing)?;
            let [_, width] = features.dims();
            let values: Vec<f32> = features.into_data().convert::<f32>().to_vec().expect("features are floats");
            for (row, item) in values.chunks(width).zip(&missing) {
                self.rows.insert(Self::key(split, &item.id, item.inputs_stamp), row.to_vec());
            }
            self.dirty = true;
        }
        let row = |i: &PreparedPair| &self.rows[&Self::key(split, &i.id, i.inputs_stamp)];
        let width = row(&items[0]).len();
        let flat: Vec<f32> = items.iter().flat_map(|i| row(i).iter().copied()).collect();
        Ok(Tensor::from_data(TensorData::new(flat, [items.len(), width]), device))
    }

    /// Writes new rows to the store, if there is one.
    fn flush(&mut self) -> Result<()> {
        let Some(store) = self.store.as_ref().filter(|_| self.dirty) else { return Ok(()) };
        let mut ids: Vec<&String> = self.rows.keys().collect();
        ids.sort();
        let width = ids.first().map_or(0, |id| self.rows[*id].len());
        let bytes: Vec<u8> = ids.iter().flat_map(|id| self.rows[*id].iter().flat_map(|v| v.to_le_bytes())).collect();
        let index = Index { width, ids: ids.into_iter().cloned().collect(), checksum: data::stratify::fnv1a_bytes(&bytes) };
        if let Some(dir) = store.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        crate::durable::write_file(&store.with_extension("f32"), &bytes)?;
        crate::durable::write_file(&store.with_extension("json"), serde_json::to_string(&index)?.as_bytes())?;
        self.dirty = false;
        Ok(())
    }
}

fn read_store(store: &Path) -> Option<HashMap<String, Vec<f32>>> {
    let index: Index = serde_json::from_slice(&std::fs::read(store.with_extension("json")).ok()?).ok()?;
    let bytes = std::fs::read(store.with_extension("f32")).ok()?;
    if index.width == 0 || bytes.len() != 4 * index.width * index.ids.len() || index.checksum != data::stratify::fnv1a_bytes(&bytes) {
        return None;
    }
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some(index.ids.into_iter().zip(values.chunks(index.width)).map(|(id, row)| (id, row.to_vec())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> data::Sample {
        data::Sample { id: id.into(), image: None, depth: None, audio: None, text: None, target: data::Target::Class(0) }
    }

    #[test]
    fn the_announcement_counts_what_is_left_to_encode_and_names_the_store() {
        let samples = [sample("a"), sample("b"), sample("c")];
        let key = |id: &str| Rows::key("train", id, sample(id).inputs_stamp());
        let mut rows = Rows { rows: HashMap::from([(key("a"), vec![1.0])]), store: Some(PathBuf::from("/c/key")), dirty: false, source: "complementary encoder" };
        let line = rows.describe("complementary", "train", &samples);
        assert_eq!(line, "complementary features: 2 of 3 train samples to encode during the first epoch, once (the frozen complementary encoder; kept in /c/key.f32 for later runs)");
        rows.rows.extend([(key("b"), vec![2.0]), (key("c"), vec![3.0])]);
        let mut cache = FeatureCache { main: Side::Cached(rows), complementary: Side::EveryStep };
        assert_eq!(
            cache.describe("train", &samples),
            ["main features: all 3 train samples cached (kept in /c/key.f32 for later runs)", "complementary features: computed at every step (the complementary encoder is prompted)"]
        );
        cache = FeatureCache { main: Side::EveryStep, complementary: Side::Unused };
        assert!(cache.describe("train", &samples).is_empty());
    }

    /// Each side's input is prepared only where the encoder runs on it, or where a sample's
    /// constant feature is not cached yet.
    #[test]
    fn only_inputs_whose_features_are_needed_are_prepared() {
        let pixels = data::ImagePreprocess { resize: 4, size: 4, mean: [0.0; 3], std: [1.0; 3] };
        let prepare = Arc::new(PairPrepare::new(backbones::InputPreparer::Image(backbones::Modality::Image, pixels), None, None));
        let samples = [sample("a"), sample("b")];
        let cached = |ids: &[&str]| Side::Cached(Rows { rows: ids.iter().map(|id| (Rows::key("train", id, sample(id).inputs_stamp()), vec![0.0])).collect(), ..Rows::default() });
        let skip = |main, complementary| *FeatureCache { main, complementary }.prepare_for(&prepare, "train", &samples).skip();
        assert_eq!(skip(Side::EveryStep, cached(&["a", "b"])), Skip { main: false, complementary: true });
        assert_eq!(skip(Side::EveryStep, cached(&["a"])), Skip { main: false, complementary: false });
        assert_eq!(skip(cached(&["a", "b"]), Side::Unused), Skip { main: true, complementary: true });
        assert_eq!(skip(Side::Unused, Side::EveryStep), Skip { main: true, complementary: false });
    }

    /// The store of an encoder's features moves with its weights files (a file replaced,
    /// added or touched in the snapshot) and its input options; not with anything else.
    #[test]
    fn a_store_is_keyed_by_the_weights_files_and_the_input_options() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("snapshot");
        std::fs::create_dir_all(&weights).unwrap();
        std::fs::write(weights.join("model.safetensors"), b"weights").unwrap();
        let spec = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            ExperimentSpec::parse("[data]\ndataset = \"jsonl\"\nroot = \"d\"\n[model]\nmethod = \"mope\"\nmain = \"a\"\ncomplementary = \"b\"\n", Path::new("x.toml"), &sets).unwrap()
        };
        let store = |spec: &ExperimentSpec, depth: bool| store_path(dir.path(), spec, "vit", std::slice::from_ref(&weights), depth);
        let base = spec(&[]);
        let first = store(&base, false);
        assert_eq!(store(&base, false), first, "the same key twice");
        assert_ne!(store(&base, true), first, "depth input");
        assert_ne!(store(&spec(&["model.image_size=64"]), false), first, "image size");
        assert_ne!(store(&spec(&["model.audio_seconds=5"]), false), first, "clip length");
        assert_ne!(store(&spec(&["data.root=e"]), false), first, "dataset");
        assert_eq!(store(&spec(&["train.lr=1"]), false), first, "the learning rate changes no feature");
        std::fs::File::options()
            .write(true)
            .open(weights.join("model.safetensors"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        let touched = store(&base, false);
        assert_ne!(touched, first, "weights touched");
        std::fs::write(weights.join("model.safetensors"), b"new weights").unwrap();
        assert_ne!(store(&base, false), touched, "weights replaced");
    }

    /// Two runs side by side write the same store: the rows of one beside the index of the
    /// other (same length, other ids) are refused, and read back when they belong together.
    #[test]
    fn a_store_whose_rows_and_index_come_from_different_writers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("key");
        let write = |rows: &[(&str, f32)]| {
            let mut kept = Rows { store: Some(store.clone()), dirty: true, ..Rows::default() };
            kept.rows.extend(rows.iter().map(|(id, v)| (id.to_string(), vec![*v, -v])));
            kept.flush().unwrap();
        };
        write(&[("train/a", 1.0), ("train/b", 2.0)]);
        let first = std::fs::read(store.with_extension("f32")).unwrap();
        assert_eq!(read_store(&store).unwrap()["train/b"], [2.0, -2.0]);
        write(&[("train/a", 1.0), ("train/c", 3.0)]);
        // The first writer's rows land after the second writer's index.
        std::fs::write(store.with_extension("f32"), first).unwrap();
        assert!(read_store(&store).is_none(), "train/c would have read train/b's row");
    }
}
