//! What a loader produces: samples with paths to their media, their text and their target.

use std::path::{Path, PathBuf};

use crate::error::DataError;

/// The prediction target of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One class index.
    Class(usize),
    /// Indices of the labels that apply.
    MultiLabel(Vec<usize>),
    /// A single-channel label image (class per pixel; `ignore_index` where unlabelled).
    Mask(PathBuf),
}

/// The task of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    /// Single-label classification.
    Classification {
        /// Classes.
        num_classes: usize,
    },
    /// Multi-label classification.
    MultiLabel {
        /// Labels.
        num_labels: usize,
    },
    /// Semantic segmentation.
    Segmentation {
        /// Classes.
        num_classes: usize,
        /// Label value of unlabelled pixels.
        ignore_index: u8,
    },
}

/// One sample. Which fields are set depends on the dataset's modalities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Identifier within the dataset (file stem, IMDb id, pair id, …).
    pub id: String,
    /// RGB image file.
    pub image: Option<PathBuf>,
    /// Depth image file.
    pub depth: Option<PathBuf>,
    /// Audio file (WAV).
    pub audio: Option<PathBuf>,
    /// Text.
    pub text: Option<String>,
    /// Target.
    pub target: Target,
}

/// A standard split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    /// Training data.
    Train,
    /// Validation (development) data.
    Val,
    /// Test data.
    Test,
}

impl std::fmt::Display for SplitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        })
    }
}

/// How strict loading is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip malformed rows, rows with missing files and unknown labels (they are counted in
    /// [`Split::skipped`]) instead of failing on the first.
    pub skip_bad: bool,
}

/// One split of a dataset.
#[derive(Debug)]
pub struct Split {
    /// Dataset name.
    pub dataset: String,
    /// Split.
    pub split: SplitName,
    /// Label names, indexed by class id.
    pub labels: Vec<String>,
    /// Task.
    pub task: Task,
    /// Samples, in file order.
    pub samples: Vec<Sample>,
    /// Rows skipped under [`LoadOptions::skip_bad`], with the reason.
    pub skipped: Vec<DataError>,
}

impl Split {
    /// `N samples (M skipped)`, for progress output.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {}: {} samples, {} labels", self.dataset, self.split, self.samples.len(), self.labels.len());
        if !self.skipped.is_empty() {
            s.push_str(&format!(", {} bad rows skipped (first: {})", self.skipped.len(), self.skipped[0]));
        }
        s
    }
}

/// Collects the samples of a split, failing on the first bad row or skipping it.
pub(crate) struct Collector {
    options: LoadOptions,
    pub samples: Vec<Sample>,
    pub skipped: Vec<DataError>,
}

impl Collector {
    pub fn new(options: LoadOptions) -> Self {
        Self { options, samples: Vec::new(), skipped: Vec::new() }
    }

    /// Reads `path` as JSON lines (blank lines skipped): each line is parsed as an `R` (a line
    /// that does not parse is a malformed row) and turned into a sample by `row(parsed, line)`,
    /// with 1-based line numbers.
    pub fn take_json_lines<R: serde::de::DeserializeOwned>(
        &mut self,
        path: &Path,
        mut row: impl FnMut(R, usize) -> Result<Option<Sample>, DataError>,
    ) -> Result<(), DataError> {
        let text = read(path)?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let line_no = i + 1;
            let parsed = serde_json::from_str(line).map_err(|e| DataError::malformed(path, line_no, e.to_string()));
            self.take(parsed.and_then(|parsed| row(parsed, line_no)))?;
        }
        Ok(())
    }

    /// Takes one row's result.
    pub fn take(&mut self, row: Result<Option<Sample>, DataError>) -> Result<(), DataError> {
        match row {
            Ok(Some(sample)) => self.samples.push(sample),
            Ok(None) => {}
            Err(e) if self.options.skip_bad => self.skipped.push(e),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// `path` if it exists, else a [`DataError::MissingFile`] naming the row.
pub(crate) fn existing(path: PathBuf, kind: &'static str, listed_in: &Path, line: usize) -> Result<PathBuf, DataError> {
    if path.is_file() { Ok(path) } else { Err(DataError::MissingFile { path, kind, listed_in: listed_in.to_path_buf(), line }) }
}

/// Reads a text file.
pub(crate) fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Reads a `labels.txt`: one label per line, trimmed (some official files have trailing spaces),
/// blank lines ignored.
pub(crate) fn read_labels(path: &Path) -> Result<Vec<String>, DataError> {
    Ok(read(path)?.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}
