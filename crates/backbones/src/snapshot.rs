//! A Hugging Face snapshot directory (`config.json`, `model.safetensors`): reading and checking
//! the configuration, and finding the weights and their key prefix, with errors naming the file
//! and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::BackboneError;
use crate::weights::tensor_names;

/// The file is missing (with a hint about snapshots), or unreadable.
pub(crate) fn missing_or_io(path: &Path, e: std::io::Error) -> BackboneError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackboneError::MissingFile { path: path.to_path_buf(), hint: "The directory must hold a Hugging Face snapshot of the model.".into() }
    } else {
        BackboneError::Config { path: path.to_path_buf(), message: e.to_string() }
    }
}

/// Reads a JSON configuration; syntax and type errors carry line and column.
pub(crate) fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T, BackboneError> {
    let text = std::fs::read_to_string(path).map_err(|e| missing_or_io(path, e))?;
    serde_json::from_str(&text).map_err(|e| BackboneError::Config { path: path.to_path_buf(), message: e.to_string() })
}

/// An unsupported value of `key`.
pub(crate) fn unsupported(path: &Path, key: &str, value: impl std::fmt::Display, expected: &str) -> BackboneError {
    BackboneError::Unsupported { path: path.to_path_buf(), key: key.into(), value: value.to_string(), expected: expected.into() }
}

/// Checks `model_type` (when present) against the accepted ones.
pub(crate) fn check_model_type(path: &Path, model_type: Option<&str>, accepted: &[&str]) -> Result<(), BackboneError> {
    match model_type {
        Some(kind) if !accepted.contains(&kind) => {
            let expected = accepted.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(" or ");
            Err(unsupported(path, "model_type", format!("\"{kind}\""), &format!("expected {expected}")))
        }
        _ => Ok(()),
    }
}

/// Checks that the activation is the exact GELU the encoders implement.
pub(crate) fn check_gelu(path: &Path, hidden_act: &str) -> Result<(), BackboneError> {
    if hidden_act == "gelu" { Ok(()) } else { Err(unsupported(path, "hidden_act", format!("\"{hidden_act}\""), "only the exact \"gelu\"")) }
}

/// The snapshot's `model.safetensors`, the key prefix of its tensors (the first of `prefixes`,
/// e.g. `"bert."` for a task model, under which `<prefix>embeddings.` keys exist, else `""`), and
/// the tensor names.
pub(crate) fn weights<'a>(dir: &Path, prefixes: &[&'a str]) -> Result<(PathBuf, &'a str, Vec<String>), BackboneError> {
    let path = dir.join("model.safetensors");
    if !path.exists() {
        return Err(BackboneError::MissingFile {
            path,
            hint: "The directory must hold a Hugging Face snapshot of the model (safetensors weights).".into(),
        });
    }
    let names = tensor_names(&path)?;
    let prefix = prefixes.iter().find(|p| names.iter().any(|n| n.starts_with(&format!("{p}embeddings.")))).copied().unwrap_or("");
    Ok((path, prefix, names))
}
