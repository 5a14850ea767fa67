//! Errors of the backbones crate: each names the file, and the key or field where there is one.

use std::path::PathBuf;

use crate::weights::WeightsError;

/// An encoder could not be built from local files.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// Reading or mapping the weights failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A file the encoder needs is absent.
    #[error("{path}: not found. {hint}")]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("{path}: {message}")]
    Config {
        /// File concerned.
        path: PathBuf,
        /// What is wrong, with line and column for syntax errors.
        message: String,
    },
    /// A configuration value this implementation does not support.
    #[error("{path}: `{key}` = {value} is not supported ({expected})")]
    Unsupported {
        /// File concerned.
        path: PathBuf,
        /// Field.
        key: String,
        /// Value found.
        value: String,
        /// What is supported.
        expected: String,
    },
    /// The tokenizer file could not be loaded.
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        message: String,
    },
    /// A backbone name that names presets that cannot be combined or prompted.
    #[error("backbone `{name}`: {reason}")]
    InvalidName {
        /// Name asked for.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A sample lacks the input the encoder reads, or its file cannot be prepared.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// An unknown preset name.
    #[error("unknown backbone `{name}`; known: {known}")]
    UnknownPreset {
        /// Name asked for.
        name: String,
        /// Known names.
        known: String,
    },
}
