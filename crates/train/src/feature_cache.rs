//! Complementary features kept across epochs, and across runs on disk, when they cannot change:
//! the complementary encoder is frozen and unprompted, so its pooled representation of a sample
//! is a constant. Every method of an experiment family then encodes each sample once.
//!
//! On disk: `<dir>/<key>.json` (`{"width": w, "ids": [...]}`) and `<dir>/<key>.f32` (rows of
//! little-endian `f32` in the order of `ids`), where the key hashes the encoder, its input options
//! and the dataset root. Both are written atomically; a file that does not match is ignored and
//! rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::{Tensor, TensorData};
use ops::Kernels;
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::pair::{PairPrepare, PreparedPair};
use crate::spec::ExperimentSpec;

/// Where the features of `complementary` (an encoder name) for the experiment's data are kept
/// under `cache_dir`: a key over the encoder, its input options and the dataset root.
pub fn store_path(cache_dir: &Path, spec: &ExperimentSpec, complementary: &str) -> PathBuf {
    let m = &spec.model;
    let key = format!("{complementary}|{}|{}|{}|{}", m.image_size, m.audio_seconds, m.complementary_reads_depth, spec.data.root.display());
    cache_dir.join("features").join(data::cache_key(&key))
}

/// Complementary features by `split/id`.
#[derive(Debug, Default)]
pub struct FeatureCache {
    enabled: bool,
    /// The model reads no complementary modality: nothing to compute or cache.
    unused: bool,
    rows: HashMap<String, Vec<f32>>,
    store: Option<PathBuf>,
    dirty: bool,
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
    /// A cache for `model`, active only when its complementary features are constant; kept on
    /// disk under `store` (a path without extension) if given.
    pub fn for_model<B: Kernels>(model: &Model<B>, store: Option<PathBuf>) -> Self {
        let unused = !model.reads_complementary();
        let enabled = !unused && model.complementary_prompts().is_none();
        let mut cache = Self { enabled, unused, rows: HashMap::new(), store: store.filter(|_| enabled), dirty: false };
        if let Some(store) = &cache.store {
            cache.rows = read_store(store).unwrap_or_default();
        }
        cache
    }

    /// Samples whose features are known.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no feature is known.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether the features of every sample in `samples` (of split `split`) are cached, so that
    /// their complementary inputs need not be prepared.
    pub fn covers(&self, split: &str, samples: &[data::Sample]) -> bool {
        self.unused || self.enabled && samples.iter().all(|s| self.rows.contains_key(&format!("{split}/{}", s.id)))
    }

    /// One line saying where the complementary features of `samples` (of split `split`) will
    /// come from, announced before training; `None` for a model that reads none.
    pub fn describe(&self, split: &str, samples: &[data::Sample]) -> Option<String> {
        if self.unused {
            return None;
        }
        if !self.enabled {
            return Some("complementary features: computed at every step (the complementary encoder is prompted)".into());
        }
        let missing = samples.iter().filter(|s| !self.rows.contains_key(&format!("{split}/{}", s.id))).count();
        let kept = self.store.as_ref().map_or_else(|| "kept for this run".to_string(), |store| format!("kept in {}.f32 for later runs", store.display()));
        Some(if missing == 0 {
            format!("complementary features: all {} {split} samples cached ({kept})", samples.len())
        } else {
            format!(
                "complementary features: {missing} of {} {split} samples to encode during the first epoch, once (the frozen complementary encoder; {kept})",
                samples.len()
            )
        })
    }

    /// Features of `items` (of split `split`); `None` for a model that reads none.
    ///
    /// # Shapes
    /// - output: `[items.len(), d_complementary]`
    pub fn features<B: Kernels>(
        &mut self,
        model: &Model<B>,
        prepare: &PairPrepare,
        split: &str,
        items: &[PreparedPair],
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 2>>> {
        if !model.reads_complementary() {
            return Ok(None);
        }
        if !self.enabled {
            let all: Vec<&PreparedPair> = items.iter().collect();
            return Ok(Some(model.complementary_feature(&prepare.complementary_batch(&all, device)?)));
        }
        let key = |item: &PreparedPair| format!("{split}/{}", item.id);
        let missing: Vec<&PreparedPair> = items.iter().filter(|i| !self.rows.contains_key(&key(i))).collect();
        if !missing.is_empty() {
            let features = model.complementary_feature(&prepare.complementary_batch(&missing, device)?);
            let [_, width] = features.dims();
            let values: Vec<f32> = features.into_data().convert::<f32>().to_vec().expect("features are floats");
            for (row, item) in values.chunks(width).zip(&missing) {
                self.rows.insert(key(item), row.to_vec());
            }
            self.dirty = true;
        }
        let width = self.rows[&key(&items[0])].len();
        let flat: Vec<f32> = items.iter().flat_map(|i| self.rows[&key(i)].iter().copied()).collect();
        Ok(Some(Tensor::from_data(TensorData::new(flat, [items.len(), width]), device)))
    }

    /// Writes new rows to the store, if there is one.
    pub fn flush(&mut self) -> Result<()> {
        let Some(store) = self.store.as_ref().filter(|_| self.dirty) else { return Ok(()) };
        let mut ids: Vec<&String> = self.rows.keys().collect();
        ids.sort();
        let width = ids.first().map_or(0, |id| self.rows[*id].len());
        let bytes: Vec<u8> = ids.iter().flat_map(|id| self.rows[*id].iter().flat_map(|v| v.to_le_bytes())).collect();
        let index = Index { width, ids: ids.into_iter().cloned().collect(), checksum: data::stratify::fnv1a_bytes(&bytes) };
        if let Some(dir) = store.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        atomic_write(&store.with_extension("f32"), &bytes)?;
        atomic_write(&store.with_extension("json"), serde_json::to_string(&index)?.as_bytes())?;
        self.dirty = false;
        Ok(())
    }
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
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
        let rows = HashMap::from([("train/a".to_string(), vec![1.0])]);
        let mut cache = FeatureCache { enabled: true, unused: false, rows, store: Some(PathBuf::from("/c/key")), dirty: false };
        let line = cache.describe("train", &samples).unwrap();
        assert_eq!(line, "complementary features: 2 of 3 train samples to encode during the first epoch, once (the frozen complementary encoder; kept in /c/key.f32 for later runs)");
        cache.rows.extend([("train/b".to_string(), vec![2.0]), ("train/c".to_string(), vec![3.0])]);
        assert_eq!(cache.describe("train", &samples).unwrap(), "complementary features: all 3 train samples cached (kept in /c/key.f32 for later runs)");
        cache.enabled = false;
        assert!(cache.describe("train", &samples).unwrap().contains("computed at every step"));
        cache.unused = true;
        assert_eq!(cache.describe("train", &samples), None);
    }

    /// Two runs side by side write the same store: the rows of one beside the index of the
    /// other (same length, other ids) are refused, and read back when they belong together.
    #[test]
    fn a_store_whose_rows_and_index_come_from_different_writers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("key");
        let write = |rows: &[(&str, f32)]| {
            let mut cache = FeatureCache { enabled: true, unused: false, rows: HashMap::new(), store: Some(store.clone()), dirty: true };
            cache.rows.extend(rows.iter().map(|(id, v)| (id.to_string(), vec![*v, -v])));
            cache.flush().unwrap();
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
