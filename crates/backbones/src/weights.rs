//! Loading pretrained weights from a safetensors file into a burn module, tensor by tensor, through
//! a key map (burn module path → checkpoint key). Every problem is reported with the file and the
//! key: a missing tensor, a shape that differs, an unsupported dtype, a truncated file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{TensorData, backend::Backend};
use mope_core::replace_float_params;
use safetensors::{Dtype, SafeTensors};

/// How a checkpoint tensor becomes a burn parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Copy the tensor as it is.
    Copy(String),
    /// Transpose a 2-D tensor: PyTorch `Linear` weights are `[out, in]`, burn's are `[in, out]`.
    Transpose(String),
    /// Rows `start..start + len` of the tensor (first dimension), e.g. the key part of a fused
    /// query-key-value projection; transposed afterwards if `transpose`.
    Rows {
        /// Checkpoint key.
        key: String,
        /// First row.
        start: usize,
        /// Number of rows.
        len: usize,
        /// Transpose the 2-D slice.
        transpose: bool,
    },
}

/// Where burn's [`Linear`](burn::nn::Linear) parameter `leaf` comes from in a checkpoint that
/// keeps the layer under `base` (prefix included) and joins names with `separator`: the weight
/// transposed (PyTorch's is `[out, in]`, burn's `[in, out]`), the bias copied.
pub fn linear_source(base: &str, separator: &str, leaf: &str) -> Option<Source> {
    match leaf {
        "weight" => Some(Source::Transpose(format!("{base}{separator}weight"))),
        "bias" => Some(Source::Copy(format!("{base}{separator}bias"))),
        _ => None,
    }
}

/// Where burn's [`LayerNorm`](burn::nn::LayerNorm) parameter `leaf` (`gamma`, `beta`) comes from
/// in a checkpoint that keeps the norm under `base` (prefix included), names them `names` and
/// joins names with `separator`.
pub fn layer_norm_source(base: &str, separator: &str, leaf: &str, names: (&str, &str)) -> Option<Source> {
    let name = match leaf {
        "gamma" => names.0,
        "beta" => names.1,
        _ => return None,
    };
    Some(Source::Copy(format!("{base}{separator}{name}")))
}

impl Source {
    /// The checkpoint key.
    pub fn key(&self) -> &str {
        match self {
            Self::Copy(k) | Self::Transpose(k) | Self::Rows { key: k, .. } => k,
        }
    }

    /// Shape of the checkpoint tensor this source expects for a parameter of shape `param`.
    fn stored_shape(&self, param: &[usize], stored: &[usize]) -> Vec<usize> {
        match self {
            Self::Copy(_) => param.to_vec(),
            Self::Transpose(_) => param.iter().rev().copied().collect(),
            Self::Rows { transpose, .. } => {
                let mut shape: Vec<usize> = if *transpose { param.iter().rev().copied().collect() } else { param.to_vec() };
                if let (Some(first), Some(&rows)) = (shape.first_mut(), stored.first()) {
                    *first = rows;
                }
                shape
            }
        }
    }
}

/// A tensor read into host memory: its values as f32 and its shape.
pub type HostTensor = (Vec<f32>, Vec<usize>);

/// Where checkpoint tensors are read from: a safetensors file, a CTranslate2 model, …
pub trait TensorSource {
    /// The tensor `key` as f32 values and its shape, or `None` if absent.
    fn tensor(&self, key: &str) -> Result<Option<HostTensor>, WeightsError>;
    /// Every key.
    fn keys(&self) -> Vec<String>;
    /// The file, for error messages.
    fn path(&self) -> &Path;
}

/// A safetensors file held in memory.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    /// Reads and validates `path`.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), cause: source })?;
        SafeTensors::deserialize(&bytes).map_err(|source| WeightsError::Invalid { path: path.to_path_buf(), cause: source })?;
        Ok(Self { path: path.to_path_buf(), bytes })
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated at open")
    }
}

impl TensorSource for SafetensorsFile {
    fn tensor(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let file = self.view();
        if file.tensor(key).is_err() {
            return Ok(None);
        }
        read_f32(&file, &self.path, key).map(Some)
    }

    fn keys(&self) -> Vec<String> {
        self.view().names().into_iter().map(str::to_string).collect()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Errors of [`load_safetensors`]; each names the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error (shown in the message, so not also chained as a source).
        cause: std::io::Error,
    },
    /// Not a valid safetensors file (truncated or corrupted).
    #[error("{path}: not a valid safetensors file: {cause}")]
    Invalid {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        cause: safetensors::SafeTensorError,
    },
    /// A parameter of the model has no tensor in the file.
    #[error("{path}: missing tensor `{key}` (for parameter `{param}`)")]
    MissingKey {
        /// File concerned.
        path: PathBuf,
        /// Checkpoint key looked for.
        key: String,
        /// Module path of the parameter.
        param: String,
    },
    /// The tensor's shape differs from the parameter's.
    #[error("{path}: tensor `{key}` has shape {found:?}, parameter `{param}` expects {expected:?}{transposed}")]
    ShapeMismatch {
        /// File concerned.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// Module path of the parameter.
        param: String,
        /// Expected shape, in the checkpoint's layout.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
        /// Note that the expected shape is given in the checkpoint's (transposed) layout.
        transposed: &'static str,
    },
    /// The tensor is stored in a type other than F32, F16 or BF16.
    #[error("{path}: tensor `{key}` is {dtype:?}; F32, F16 or BF16 expected")]
    Dtype {
        /// File concerned.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// Stored type.
        dtype: Dtype,
    },
    /// A file that is not in the expected format.
    #[error("{path}: {message}")]
    Format {
        /// File concerned.
        path: PathBuf,
        /// What is wrong, with the byte offset where known.
        message: String,
    },
    /// A frozen weight holds NaN or infinite values (a damaged or diverged checkpoint): every
    /// output it touches would be NaN, or a finite-looking wrong number.
    #[error("{path}: tensor `{key}`: {count} of its {total} values are NaN or infinite; the checkpoint is damaged")]
    NonFinite {
        /// File concerned.
        path: PathBuf,
        /// Checkpoint key.
        key: String,
        /// Values that are NaN or infinite.
        count: usize,
        /// Values of the stored tensor.
        total: usize,
    },
    /// A parameter that the key map does not cover.
    #[error("{path}: no checkpoint key is known for parameter `{param}`")]
    Unmapped {
        /// File concerned.
        path: PathBuf,
        /// Module path of the parameter.
        param: String,
    },
}

/// What [`load_safetensors`] did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Parameters loaded.
    pub loaded: usize,
    /// Keys of the file that no parameter used (e.g. a pooler or a pre-training head).
    pub unused: Vec<String>,
}

/// The tensor `key` of `file` as f32 values and its shape.
pub fn read_f32(file: &SafeTensors<'_>, path: &Path, key: &str) -> Result<HostTensor, WeightsError> {
    let view = file.tensor(key).map_err(|_| WeightsError::MissingKey {
        path: path.to_path_buf(),
        key: key.to_string(),
        param: key.to_string(),
    })?;
    let float = match view.dtype() {
        Dtype::F32 => FloatFormat::F32,
        Dtype::F16 => FloatFormat::F16,
        Dtype::BF16 => FloatFormat::BF16,
        dtype => return Err(WeightsError::Dtype { path: path.to_path_buf(), key: key.to_string(), dtype }),
    };
    Ok((decode_floats(view.data(), float), view.shape().to_vec()))
}

/// A little-endian floating-point storage format of checkpoint files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatFormat {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

/// Decodes little-endian `bytes` of `format` to f32 (shared by the safetensors and CTranslate2
/// readers).
pub fn decode_floats(bytes: &[u8], format: FloatFormat) -> Vec<f32> {
    match format {
        FloatFormat::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        FloatFormat::F16 => bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        FloatFormat::BF16 => bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect(),
    }
}

/// IEEE half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Names of the tensors in a safetensors file, read from its header alone.
pub fn tensor_names(path: &Path) -> Result<Vec<String>, WeightsError> {
    use std::io::Read;
    let io = |source| WeightsError::Io { path: path.to_path_buf(), cause: source };
    let invalid = || WeightsError::Invalid { path: path.to_path_buf(), cause: safetensors::SafeTensorError::InvalidHeaderLength };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| invalid())?;
    let len = u64::from_le_bytes(len);
    // The header is read up to its claimed length only as far as the file goes: a length beyond
    // the file is refused after reading what is there, not allocated first.
    if len > 100 * 1024 * 1024 {
        return Err(invalid());
    }
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).map_err(io)?;
    if header.len() as u64 != len {
        return Err(invalid());
    }
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|_| invalid())?;
    Ok(header.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect())
}

/// Reads `path` and loads every float parameter of `module` from it, using `key_map` to find the
/// checkpoint key of each parameter (`None`: the parameter is not covered, an error). Loaded
/// parameters require gradients, as freshly built ones do; freeze the module afterwards if needed.
pub fn load_safetensors<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    key_map: impl Fn(&str) -> Option<Source>,
) -> Result<(M, LoadReport), WeightsError> {
    load_tensors(module, &SafetensorsFile::open(path)?, key_map)
}

/// Loads every float parameter of `module` from `source` through `key_map`. Loaded parameters
/// require gradients, as freshly built ones do.
pub fn load_tensors<B: Backend, M: Module<B>>(
    module: M,
    source: &dyn TensorSource,
    key_map: impl Fn(&str) -> Option<Source>,
) -> Result<(M, LoadReport), WeightsError> {
    let mut used = BTreeSet::new();
    let mut loaded = 0;
    let mut error = None;
    let module = replace_float_params(module, |param, shape| {
        if error.is_some() {
            return None;
        }
        match fetch(source, &key_map, param, shape) {
            Ok((data, key)) => {
                used.insert(key);
                loaded += 1;
                Some((data, true))
            }
            Err(e) => {
                error = Some(e);
                None
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let mut unused: Vec<String> = source.keys().into_iter().filter(|k| !used.contains(k)).collect();
    unused.sort();
    Ok((module, LoadReport { loaded, unused }))
}

/// The values of parameter `param` (of shape `expected`) from `source`, and the key they came from.
fn fetch(
    source: &dyn TensorSource,
    key_map: &impl Fn(&str) -> Option<Source>,
    param: &str,
    expected: &[usize],
) -> Result<(TensorData, String), WeightsError> {
    let path = source.path().to_path_buf();
    let map = key_map(param).ok_or_else(|| WeightsError::Unmapped { path: path.clone(), param: param.to_string() })?;
    let key = map.key().to_string();
    let (values, shape) = source.tensor(&key)?.ok_or_else(|| WeightsError::MissingKey {
        path: path.clone(),
        key: key.clone(),
        param: param.to_string(),
    })?;
    let stored_expected = map.stored_shape(expected, &shape);
    let transposed = match &map {
        Source::Transpose(_) | Source::Rows { transpose: true, .. } => " (PyTorch layout, transposed on load)",
        _ => "",
    };
    let rows_fit = match &map {
        Source::Rows { start, len, .. } => shape.first().is_some_and(|&rows| start + len <= rows) && expected.len() == shape.len(),
        _ => true,
    };
    let slice_ok = match &map {
        Source::Rows { len, transpose, .. } => {
            let rows_dim = if *transpose { expected.last() } else { expected.first() };
            rows_dim == Some(len)
        }
        _ => true,
    };
    if shape != stored_expected || !rows_fit || !slice_ok {
        return Err(WeightsError::ShapeMismatch {
            path,
            key,
            param: param.to_string(),
            expected: stored_expected,
            found: shape,
            transposed,
        });
    }
    let non_finite = values.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Err(WeightsError::NonFinite { path, key, count: non_finite, total: values.len() });
    }
    let (values, rows, cols) = match &map {
        Source::Rows { start, len, .. } => {
            let row_len: usize = shape[1..].iter().product();
            (values[start * row_len..(start + len) * row_len].to_vec(), *len, row_len)
        }
        _ => (values, shape.first().copied().unwrap_or(1), shape.iter().skip(1).product()),
    };
    let values = match map {
        Source::Transpose(_) | Source::Rows { transpose: true, .. } => transpose(&values, rows, cols),
        _ => values,
    };
    Ok((TensorData::new(values, expected.to_vec()), key))
}

/// Transposes a row-major `rows × cols` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x8000), -0.0);
    }
}
