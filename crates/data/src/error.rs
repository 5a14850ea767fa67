//! Errors of the loaders: each names the file, and the line (1-based) where there is one.

use std::path::PathBuf;

/// A dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error (shown in the message, so not also chained as a source).
        cause: std::io::Error,
    },
    /// A row or document that does not have the expected form.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// File concerned.
        path: PathBuf,
        /// Line, 1-based (0 for a whole-file problem).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A media file named by a row does not exist.
    #[error("{listed_in}:{line}: {kind} file {path} does not exist")]
    MissingFile {
        /// The file that is missing.
        path: PathBuf,
        /// The kind of file (image, audio, depth, mask).
        kind: &'static str,
        /// The metadata file that names it.
        listed_in: PathBuf,
        /// Line of the metadata file, 1-based (0 for a whole-file document).
        line: usize,
    },
    /// A label outside the dataset's label set.
    #[error("{path}:{line}: unknown label `{label}` (known: {known})")]
    UnknownLabel {
        /// File concerned.
        path: PathBuf,
        /// Line, 1-based (0 for a whole-file document).
        line: usize,
        /// The label.
        label: String,
        /// A few known labels.
        known: String,
    },
    /// A media file that cannot be decoded.
    #[error("{path}: cannot decode: {message}")]
    Decode {
        /// File concerned.
        path: PathBuf,
        /// Decoder's message.
        message: String,
    },
    /// A split this dataset does not have.
    #[error("{dataset} has no `{split}` split")]
    NoSuchSplit {
        /// Dataset.
        dataset: String,
        /// Split asked for.
        split: String,
    },
}

impl DataError {
    /// A sample without the input (`image`, `audio`, …) that is asked of it, named by its id.
    pub fn missing_input(sample: &crate::Sample, what: impl std::fmt::Display) -> Self {
        Self::Decode { path: PathBuf::from(&sample.id), message: format!("sample has no {what}") }
    }

    pub(crate) fn io(path: &std::path::Path, cause: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), cause }
    }

    pub(crate) fn malformed(path: &std::path::Path, line: usize, message: impl Into<String>) -> Self {
        Self::Malformed { path: path.to_path_buf(), line, message: message.into() }
    }

    pub(crate) fn unknown_label(path: &std::path::Path, line: usize, label: &str, labels: &[String]) -> Self {
        let mut known: Vec<&str> = labels.iter().take(8).map(String::as_str).collect();
        if labels.len() > 8 {
            known.push("…");
        }
        Self::UnknownLabel { path: path.to_path_buf(), line, label: label.to_string(), known: known.join(", ") }
    }
}
