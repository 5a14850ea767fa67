//! The adapter contract: save only the trainable parameters of a model, as PEFT does, and load
//! them onto a freshly built model whose frozen parts come from the pretrained weights.
//!
//! A saved adapter is a directory with two files:
//!
//! - `adapter_model.safetensors`: one `F32` tensor per trainable parameter, keyed by its module
//!   path (e.g. `prompts.layers.3.experts.experts`);
//! - `adapter_config.json`: the method, the model configuration needed to rebuild the model, the
//!   base (frozen) model description, and a manifest of tensor names and shapes.
//!
//! Loading checks everything before touching the model: every tensor of the manifest is in the
//! file, every tensor of the file is a parameter of the model with the same shape (and, on an
//! autodiff backend, a trainable one), and every trainable parameter of the model is in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{TensorData, backend::AutodiffBackend, backend::Backend};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::format::{human_bytes, thousands};
use crate::params::{FloatParam, ParamSummary, float_params, replace_float_params};
use crate::strict::{StrictError, from_value_strict};

/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter configuration.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// Version of the adapter format written by this crate.
pub const ADAPTER_FORMAT_VERSION: u32 = 1;

/// Contents of `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Adapter format version.
    pub format_version: u32,
    /// Method that produced the adapter (`mope`, `prompt-tuning`, `sequential`, `late-fusion`).
    pub method: String,
    /// The frozen base model(s): names or paths of the pretrained weights.
    pub base_model: serde_json::Value,
    /// The configuration that rebuilds the model the adapter belongs to.
    pub model_config: serde_json::Value,
    /// Trainable parameters at save time.
    pub trainable_params: usize,
    /// All parameters at save time.
    pub total_params: usize,
    /// Name and shape of every tensor in `adapter_model.safetensors`.
    pub tensors: BTreeMap<String, Vec<usize>>,
    /// Version of the library that wrote the adapter.
    pub library_version: String,
}

impl AdapterConfig {
    /// Reads and validates the configuration of the adapter in `dir`.
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| AdapterError::Io { path: path.clone(), cause: source })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| AdapterError::Config { path: path.clone(), cause: source })?;
        let config: Self = from_value_strict(value).map_err(|source| match source {
            StrictError::Invalid(source) => AdapterError::Config { path: path.clone(), cause: source },
            unknown => AdapterError::UnknownConfigKey { path: path.clone(), cause: unknown },
        })?;
        if config.format_version != ADAPTER_FORMAT_VERSION {
            return Err(AdapterError::Version { path, found: config.format_version });
        }
        Ok(config)
    }
}

/// Errors reading or writing an adapter. Each one names the file, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error (shown in the message, so not also chained as a source).
        cause: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON or misses a field.
    #[error("{path}: invalid adapter config: {cause}")]
    Config {
        /// File concerned.
        path: PathBuf,
        /// Parse error, with line and column.
        cause: serde_json::Error,
    },
    /// `adapter_config.json` has a key this version does not know.
    #[error("{path}: {cause}")]
    UnknownConfigKey {
        /// File concerned.
        path: PathBuf,
        /// The key, with a hint.
        cause: StrictError,
    },
    /// The adapter was written by an incompatible format version.
    #[error("{path}: adapter format version {found} is not supported (this build reads version {ADAPTER_FORMAT_VERSION})")]
    Version {
        /// File concerned.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// `adapter_model.safetensors` is not a valid safetensors file (truncated, corrupted).
    #[error("{path}: not a valid safetensors file: {cause}")]
    Weights {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        cause: safetensors::SafeTensorError,
    },
    /// A tensor the model trains (or the manifest lists) is missing from the weights file.
    #[error("{path}: missing tensor `{key}` ({why})")]
    MissingKey {
        /// Weights file.
        path: PathBuf,
        /// Parameter path.
        key: String,
        /// Who expected it.
        why: &'static str,
    },
    /// The weights file holds a tensor that is not a trainable parameter of the model.
    #[error("{path}: tensor `{key}` {why}")]
    ForeignKey {
        /// Weights file.
        path: PathBuf,
        /// Tensor name.
        key: String,
        /// Why it does not belong.
        why: &'static str,
    },
    /// A tensor has another shape than the model's parameter.
    #[error("{path}: tensor `{key}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// Weights file.
        path: PathBuf,
        /// Tensor name.
        key: String,
        /// Shape of the model's parameter.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is not stored as `F32`.
    #[error("{path}: tensor `{key}` is {dtype:?}, expected F32")]
    Dtype {
        /// Weights file.
        path: PathBuf,
        /// Tensor name.
        key: String,
        /// Stored type.
        dtype: Dtype,
    },
    /// A model without trainable parameters cannot be saved as an adapter.
    #[error("the model has no trainable parameter: nothing to save")]
    NothingToSave,
}

/// What [`save_adapter`] wrote.
#[derive(Debug, Clone)]
pub struct AdapterSaveReport {
    /// Directory of the adapter.
    pub dir: PathBuf,
    /// Number of tensors saved.
    pub tensors: usize,
    /// Number of parameters saved.
    pub params: usize,
    /// Size of `adapter_model.safetensors` in bytes.
    pub bytes: u64,
}

impl fmt::Display for AdapterSaveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saved adapter: {} tensors, {} params, {} to {}",
            self.tensors,
            thousands(self.params),
            human_bytes(self.bytes),
            self.dir.join(ADAPTER_WEIGHTS_FILE).display()
        )
    }
}

/// Saves the trainable parameters of `model` to `dir` (created if needed), with
/// `adapter_config.json` beside them. Files are written to temporary names first and renamed,
/// so an interrupted save never leaves a half-written adapter under the final names.
pub fn save_adapter<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
    model: &M,
    dir: &Path,
    method: &str,
    base_model: serde_json::Value,
    model_config: serde_json::Value,
) -> Result<AdapterSaveReport, AdapterError> {
    let summary = ParamSummary::of(model);
    let trainable: Vec<FloatParam> = float_params::<B, M>(model, |_, trainable| trainable)
        .into_iter()
        .filter(|p| p.trainable)
        .collect();
    if trainable.is_empty() {
        return Err(AdapterError::NothingToSave);
    }
    std::fs::create_dir_all(dir).map_err(|source| AdapterError::Io { path: dir.to_path_buf(), cause: source })?;

    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = trainable
        .iter()
        .map(|p| {
            let values: Vec<f32> = p
                .data
                .clone()
                .expect("data was requested for trainable parameters")
                .convert::<f32>()
                .to_vec()
                .expect("float parameter data converts to f32");
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (p.path.clone(), p.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches byte length");
            (name.clone(), view)
        })
        .collect();
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let weights_tmp = dir.join(format!("{ADAPTER_WEIGHTS_FILE}.tmp"));
    let metadata = Some([("format".to_string(), "mope-adapter".to_string()), ("method".to_string(), method.to_string())].into());
    safetensors::serialize_to_file(views, metadata, &weights_tmp)
        .map_err(|source| AdapterError::Weights { path: weights_tmp.clone(), cause: source })?;

    let config = AdapterConfig {
        format_version: ADAPTER_FORMAT_VERSION,
        method: method.to_string(),
        base_model,
        model_config,
        trainable_params: summary.trainable,
        total_params: summary.total,
        tensors: trainable.iter().map(|p| (p.path.clone(), p.shape.clone())).collect(),
        library_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let config_tmp = dir.join(format!("{ADAPTER_CONFIG_FILE}.tmp"));
    let json = serde_json::to_string_pretty(&config).expect("adapter config serialises");
    std::fs::write(&config_tmp, json + "\n").map_err(|source| AdapterError::Io { path: config_tmp.clone(), cause: source })?;
    for (tmp, path) in [(&weights_tmp, &weights_path), (&config_tmp, &config_path)] {
        std::fs::rename(tmp, path).map_err(|source| AdapterError::Io { path: path.clone(), cause: source })?;
    }
    let bytes = std::fs::metadata(&weights_path)
        .map_err(|source| AdapterError::Io { path: weights_path.clone(), cause: source })?
        .len();
    Ok(AdapterSaveReport {
        dir: dir.to_path_buf(),
        tensors: trainable.len(),
        params: summary.trainable,
        bytes,
    })
}

/// Loads the adapter in `dir` onto `model`, replacing the values of the parameters it holds
/// (which keep their trainable or frozen state). Returns the model and the adapter's configuration.
///
/// # Errors
/// See [`AdapterError`]: nothing is changed unless the whole adapter fits the model.
pub fn load_adapter<B: Backend, M: Module<B>>(model: M, dir: &Path) -> Result<(M, AdapterConfig), AdapterError> {
    let config = AdapterConfig::read(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|source| AdapterError::Io { path: path.clone(), cause: source })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|source| AdapterError::Weights { path: path.clone(), cause: source })?;

    for key in config.tensors.keys() {
        if file.tensor(key).is_err() {
            return Err(AdapterError::MissingKey { path, key: key.clone(), why: "listed in adapter_config.json" });
        }
    }
    let params = float_params::<B, M>(&model, |_, _| false);
    let autodiff = params.iter().any(|p| p.trainable);
    let mut tensors: BTreeMap<String, TensorData> = BTreeMap::new();
    // Sorted, so that a bad file always reports the same first problem.
    let mut entries = file.tensors();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, view) in entries {
        if !config.tensors.contains_key(&key) {
            return Err(AdapterError::ForeignKey { path, key, why: "is not listed in adapter_config.json" });
        }
        let Some(param) = params.iter().find(|p| p.path == key) else {
            return Err(AdapterError::ForeignKey { path, key, why: "is not a parameter of this model" });
        };
        if autodiff && !param.trainable {
            return Err(AdapterError::ForeignKey { path, key, why: "is a frozen parameter of this model" });
        }
        if view.shape() != param.shape.as_slice() {
            return Err(AdapterError::ShapeMismatch {
                path,
                key,
                expected: param.shape.clone(),
                found: view.shape().to_vec(),
            });
        }
        if view.dtype() != Dtype::F32 {
            return Err(AdapterError::Dtype { path, key, dtype: view.dtype() });
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(key, TensorData::new(values, view.shape().to_vec()));
    }
    if let Some(missing) = params.iter().find(|p| p.trainable && !tensors.contains_key(&p.path)) {
        return Err(AdapterError::MissingKey { path, key: missing.path.clone(), why: "the model trains it" });
    }

    let trainable: BTreeMap<&str, bool> = params.iter().map(|p| (p.path.as_str(), p.trainable)).collect();
    let model = replace_float_params(model, |path, _shape| {
        // Shapes were checked above; the loaded value keeps the parameter's trainability.
        tensors.remove(path).map(|data| (data, trainable[path]))
    });
    debug_assert!(tensors.is_empty(), "every checked tensor was applied");
    Ok((model, config))
}
