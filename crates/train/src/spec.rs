//! Experiment specifications: one TOML file says which data, which encoders, which fusion
//! method, its prompts and how to train, and (for the paper's experiments) what the paper reports.
//!
//! Unknown keys are errors naming the file and the key. The official MoPE code's flag names are
//! accepted as aliases of ours ([`ALIASES`]), and `--set section.key=value` overrides any value
//! after the file is read (aliases apply to overrides too).
//!
//! ```toml
//! [data]
//! dataset = "jsonl"
//! root = ".assets/datasets/emoji"
//!
//! [model]
//! method = "mope"
//! main = "mobilenet-v2+all-minilm-l6-v2"
//! complementary = "all-minilm-l6-v2"
//!
//! [prompts]
//! moe_n_experts = 4     # alias of num_experts
//! prompt_length = 6     # alias: static_len and expert_len
//!
//! [train]
//! epochs = 10
//! w_imp = 0.01          # alias of importance_weight
//! ```

use std::path::{Path, PathBuf};

use mope_core::{FusionMethod, HeadInput};
use pmoe::Combine;
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// A complete experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Name of the experiment (`<dataset>/<method>` for the shipped ones).
    #[serde(default)]
    pub name: String,
    /// One line on what it shows.
    #[serde(default)]
    pub description: String,
    /// Sets the experiment belongs to; `cargo xtask reproduce` runs those tagged `default` when
    /// given no name.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Data.
    pub data: DataSpec,
    /// Encoders and fusion method.
    pub model: ModelSpec,
    /// Prompts of the main encoder (MoPE and its baselines).
    #[serde(default)]
    pub prompts: PromptSpec,
    /// Expert prompts and dispatchers (pMoE and its baselines).
    #[serde(default)]
    pub pmoe: PmoeSpec,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainSpec,
    /// What the paper reports for this experiment, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper: Option<PaperResult>,
}

/// Which dataset, where, and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Loader: `jsonl` (MoPE's layout: emoji, digits, any `{train,val,test}.jsonl` + `labels.txt`),
    /// `food101`, `mmimdb`, `snli-ve`, `mustard`, `nyudv2`, `sunrgbd`, or `image-folder` (images
    /// only: VTAB-1k lists, FGVC JSON, or a folder per class; see `data::image_folder`).
    pub dataset: DatasetKind,
    /// Dataset root, in the dataset's official layout (see `datasets/README.md`).
    pub root: PathBuf,
    /// Use at most this many training samples (the first of a seeded shuffle); 0: all.
    #[serde(default)]
    pub max_train_samples: usize,
    /// Evaluate on at most this many validation/test samples (the first in file order); 0: all.
    #[serde(default)]
    pub max_eval_samples: usize,
    /// Skip malformed rows and missing files (counted and reported) instead of failing.
    #[serde(default)]
    pub skip_bad: bool,
    /// Food-101: size of the stratified validation hold-out from train.
    #[serde(default = "default_food101_val")]
    pub food101_val_size: usize,
    /// MUStARD: `mope` (first `mustard_train_items` keys train) or `speaker-independent`.
    #[serde(default)]
    pub mustard_split: MustardSplitKind,
    /// MUStARD: training items of the `mope` split.
    #[serde(default = "default_mustard_train")]
    pub mustard_train_items: usize,
    /// Loader worker threads; 0: one per core.
    #[serde(default)]
    pub workers: usize,
    /// Cache prepared images (`images/`) and frozen complementary features (`features/`) here,
    /// between epochs and runs; empty: no cache.
    #[serde(default = "default_cache")]
    pub cache_dir: PathBuf,
}

fn default_food101_val() -> usize {
    5000
}
fn default_mustard_train() -> usize {
    334
}
fn default_cache() -> PathBuf {
    PathBuf::from(".cache")
}

/// Dataset loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// `{train,val,test}.jsonl` + `labels.txt`.
    Jsonl,
    /// UPMC Food-101.
    Food101,
    /// MM-IMDB.
    Mmimdb,
    /// SNLI-VE.
    SnliVe,
    /// MUStARD.
    Mustard,
    /// NYUDv2.
    Nyudv2,
    /// SUN RGB-D.
    Sunrgbd,
    /// Image classification: VTAB-1k, FGVC or folder-per-class layouts.
    ImageFolder,
}

/// MUStARD split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MustardSplitKind {
    /// The official MoPE code's split.
    #[default]
    Mope,
    /// Speaker-independent.
    SpeakerIndependent,
}

/// The method: MoPE and its baselines over a main and a complementary encoder, or pMoE and its
/// baselines over several experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Mixture of prompt experts.
    Mope,
    /// Static and mapped prompts, no experts.
    Sequential,
    /// Deep prompt tuning: of the main encoder (the complementary feature joins at the head),
    /// or, with `model.experts = [one]`, of that single expert.
    PromptTuning,
    /// A linear head on the concatenated frozen features (of the two encoders, or of
    /// `model.experts`).
    LateFusion,
    /// The main encoder trains entirely.
    FineTuning,
    /// pMoE: prompt tokens dispatched across `model.experts`.
    Pmoe,
    /// Each of `model.experts` prompt-tuned on its own, class scores averaged.
    MeanOfExperts,
}

impl Method {
    /// Name in adapter files, result tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pmoe => "pmoe",
            Self::MeanOfExperts => "mean-of-experts",
            other => other.fusion().expect("the other methods are fusion methods").name(),
        }
    }

    /// The two-encoder fusion method, for MoPE and its baselines.
    pub fn fusion(self) -> Option<FusionMethod> {
        Some(match self {
            Self::Mope => FusionMethod::Mope,
            Self::Sequential => FusionMethod::Sequential,
            Self::PromptTuning => FusionMethod::PromptTuning,
            Self::LateFusion => FusionMethod::LateFusion,
            Self::FineTuning => FusionMethod::FineTuning,
            Self::Pmoe | Self::MeanOfExperts => return None,
        })
    }

    /// How experts are combined, for pMoE and its baselines (prompt tuning of one expert is the
    /// mean of one expert; late fusion over experts concatenates their frozen pooled outputs).
    pub fn combine(self) -> Option<Combine> {
        match self {
            Self::Pmoe => Some(Combine::Dispatch),
            Self::MeanOfExperts | Self::PromptTuning => Some(Combine::Mean),
            Self::LateFusion => Some(Combine::Concat),
            _ => None,
        }
    }
}

/// Encoders and the method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `mope`, `sequential`, `prompt-tuning`, `late-fusion`, `fine-tuning` (over `main` and
    /// `complementary`); `pmoe`, `mean-of-experts`, `late-fusion`, or `prompt-tuning` of one
    /// expert (over `experts`).
    pub method: Method,
    /// Main (prompted) encoder of the two-encoder methods (which require it): a preset name,
    /// `<preset>=<dir>` (a snapshot of that family in a folder of yours) or `<cnn>+<transformer>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub main: String,
    /// Complementary encoder of the two-encoder methods (which require it), whose representation
    /// routes the experts; names as for `main`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub complementary: String,
    /// pMoE's frozen image experts (which the pMoE methods require; names as for `main`), all
    /// reading the same image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experts: Vec<String>,
    /// The main encoder reads depth instead of RGB (image encoders only).
    #[serde(default)]
    pub main_reads_depth: bool,
    /// The complementary encoder reads depth instead of RGB (image encoders only).
    #[serde(default)]
    pub complementary_reads_depth: bool,
    /// Audio clips are padded or trimmed to this many seconds.
    #[serde(default = "default_audio_seconds")]
    pub audio_seconds: f64,
    /// Side of the square image crop of image encoders; 0: the encoder's (a ViT's or Swin's
    /// `config.json` `image_size`, which they require; 224 for the CNNs, which take any size).
    #[serde(default)]
    pub image_size: usize,
    /// Longest text in tokens, special tokens included; longer texts are truncated as Hugging
    /// Face tokenizers truncate. 0: the preset's length (128 for `all-minilm-l6-v2`, as
    /// sentence-transformers trained it; 512 for BERT) capped at the text encoder's positions
    /// (its `config.json`'s `max_position_embeddings`); more than those is refused before training.
    #[serde(default)]
    pub max_text_tokens: usize,
    /// Static deep prompt tokens per layer of the complementary encoder (official
    /// `--t_prompt_length`); 0 keeps it frozen and its features cached.
    #[serde(default)]
    pub complementary_prompt_len: usize,
    /// What the head reads: `main`, `both` (concatenated) or `complementary` (late fusion only);
    /// absent: the method's own (`main` for mope and sequential, `both` for the others).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub head: Option<HeadInput>,
    /// Weights directory; empty: `$MOPE_WEIGHTS_DIR`, else `.assets/models`.
    #[serde(default)]
    pub weights_dir: PathBuf,
}

impl ModelSpec {
    /// What the head of a two-encoder method reads: `head`, or the method's default.
    ///
    /// # Panics
    /// For a pMoE-family method (its head reads its experts).
    pub fn head_input(&self) -> HeadInput {
        self.head.unwrap_or_else(|| self.method.fusion().expect("a two-encoder method").default_head())
    }

    /// Whether this is a pMoE-family experiment (it names `experts`).
    pub fn is_pmoe(&self) -> bool {
        !self.experts.is_empty()
    }
}

/// pMoE's expert prompts and dispatchers (see `pmoe::PmoeConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PmoeSpec {
    /// Expert-specific prompt tokens per expert per prompted layer.
    pub prompt_len: usize,
    /// Prompted layers, from the top of each expert; 0: every layer of the shallowest expert.
    pub depth: usize,
    /// The dispatcher also mixes in the prompts an expert carried out of its previous layer.
    pub carry: bool,
    /// Dispatcher softmax temperature.
    pub temperature: f64,
}

impl Default for PmoeSpec {
    fn default() -> Self {
        Self { prompt_len: 10, depth: 0, carry: true, temperature: 1.0 }
    }
}

fn default_audio_seconds() -> f64 {
    30.0
}

/// Prompts of the main encoder (the method switches parts off: see `mope_core::classifier`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PromptSpec {
    /// Static prompt tokens per layer.
    pub static_len: usize,
    /// Prompt experts per layer.
    pub num_experts: usize,
    /// Tokens per expert.
    pub expert_len: usize,
    /// Mapped prompt tokens.
    pub mapped_len: usize,
    /// Prompted layers; empty: the encoder's default.
    pub prompted_layers: Vec<usize>,
    /// Hidden width of the mapper.
    pub mapper_hidden: usize,
    /// Routing temperature.
    pub temperature: f64,
    /// Standard deviation of the routing noise in training.
    pub noise_std: f64,
    /// Keep only the `top_k` largest routing weights; 0: dense routing.
    pub top_k: usize,
    /// Router self-projection width.
    pub d_inter: usize,
    /// Router cross-projection width.
    pub d_cross: usize,
}

impl Default for PromptSpec {
    fn default() -> Self {
        Self {
            static_len: 6,
            num_experts: 4,
            expert_len: 6,
            mapped_len: 1,
            prompted_layers: Vec::new(),
            mapper_hidden: 384,
            temperature: 0.1,
            noise_std: 1.0 / 256.0,
            top_k: 0,
            d_inter: 2,
            d_cross: 8,
        }
    }
}

/// Optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Epochs: the most a run trains.
    pub epochs: usize,
    /// Stop after this many epochs without a new best validation value; 0: train every epoch.
    pub patience: usize,
    /// Epochs trained whatever validation does, before `patience` may stop a run: a task whose
    /// runs sit at chance for several epochs before they start learning is not stopped as if
    /// it had converged.
    pub min_epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Learning rate of the main encoder's prompts, the head and any trainable encoder part.
    pub lr: f64,
    /// Learning rate of the complementary encoder's prompts.
    pub complementary_lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this; 0: no clipping.
    pub grad_clip: f64,
    /// Seed of initialisation, shuffling and routing noise.
    pub seed: u64,
    /// Weight of the importance loss.
    pub importance_weight: f64,
    /// Importance values at or below this are zeroed.
    pub importance_threshold: f64,
    /// Drop the last incomplete training batch.
    pub drop_last: bool,
    /// Write a `step` line to `metrics.jsonl` every this many steps; 0: only per epoch.
    pub log_every: usize,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: 10,
            patience: 0,
            min_epochs: 0,
            batch_size: 32,
            eval_batch_size: 64,
            lr: 4e-4,
            complementary_lr: 5e-4,
            weight_decay: 1e-3,
            schedule: Schedule::official(),
            grad_clip: 1.0,
            seed: 42,
            importance_weight: 0.01,
            importance_threshold: 0.1,
            drop_last: true,
            log_every: 10,
        }
    }
}

/// A number the paper reports, so that results print as ours vs paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaperResult {
    /// Metric name, as our evaluation reports it (`accuracy`, `f1_macro`, …).
    pub metric: String,
    /// The paper's value, in percent; absent where it could not be read (see `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Where the number comes from, or why it is missing.
    pub source: String,
}

/// Official MoPE flag names and the keys they stand for (`section.alias` → `section.key`s).
pub const ALIASES: &[(&str, &[&str])] = &[
    ("prompts.moe_n_experts", &["prompts.num_experts"]),
    ("prompts.prompt_length", &["prompts.static_len", "prompts.expert_len"]),
    ("model.t_prompt_length", &["model.complementary_prompt_len"]),
    ("model.fuse_method", &["model.method"]),
    ("train.w_imp", &["train.importance_weight"]),
    ("train.lr_vis", &["train.lr"]),
    ("train.lr_text", &["train.complementary_lr"]),
    ("train.max_epoch", &["train.epochs"]),
    ("train.clip", &["train.grad_clip"]),
    ("train.batch-size", &["train.batch_size"]),
];

/// Errors in a specification, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause (shown in the message, so not also chained as a source).
        cause: std::io::Error,
    },
    /// TOML syntax error (the message gives line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A key that does not exist, a wrong type or value.
    #[error("{path}: `{key}`: {message}")]
    Key {
        /// File (or `--set`).
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ExperimentSpec {
    /// The resolved experiment as TOML with, after each value, where it came from: `# file`,
    /// `# --set <assignment>` or `# default` (what `mope train --dry-run` prints). `path` and
    /// `overrides` are those the experiment was loaded from.
    pub fn to_toml_with_sources(&self, path: &Path, overrides: &[String]) -> Result<String, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: path.into(), cause: source })?;
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| SpecError::Syntax { path: path.into(), message: e.to_string() })?;
        resolve_aliases(&mut table, path)?;
        let mut sources: Vec<(String, String)> = Vec::new();
        fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
            for (key, value) in table {
                let dotted = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match value {
                    toml::Value::Table(inner) => leaves(inner, &dotted, out),
                    _ => out.push((dotted, "file".into())),
                }
            }
        }
        leaves(&table, "", &mut sources);
        for assignment in overrides {
            for key in apply_override(&mut table, assignment)? {
                sources.push((key, format!("--set {assignment}")));
            }
        }
        // The last word on a key, or on a table holding it (`train.schedule = { … }`).
        let source = |key: &str| {
            sources.iter().rev().find(|(k, _)| key == k || key.starts_with(&format!("{k}."))).map_or("default", |(_, s)| s.as_str())
        };
        let mut section = String::new();
        let mut out = String::new();
        // Inside a multi-line string nothing is a key, and a comment would become text.
        let mut in_string = false;
        for line in self.to_toml().lines() {
            let trimmed = line.trim();
            let quotes = line.matches("\"\"\"").count() + line.matches("\'\'\'").count();
            let was_in_string = in_string;
            in_string ^= quotes % 2 == 1;
            if was_in_string || in_string {
                out.push_str(line);
            } else if trimmed.starts_with('[') && trimmed.ends_with(']') && !trimmed.contains('=') {
                section = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
                out.push_str(line);
            } else if let Some((key, _)) = trimmed.split_once(" = ") {
                let key = key.trim_matches('"');
                let dotted = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
                out.push_str(&format!("{line}  # {}", source(&dotted)));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// Reads `path`, applies the aliases and the `key=value` overrides, and checks every key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: path.into(), cause: source })?;
        let mut spec = Self::parse(&text, path, overrides)?;
        if spec.name.is_empty() {
            spec.name = default_name(path);
        }
        Ok(spec)
    }

    /// Parses TOML text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Self, SpecError> {
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| SpecError::Syntax { path: path.into(), message: e.to_string() })?;
        resolve_aliases(&mut table, path)?;
        // Which keys each `--set` wrote: an error about one of them names the `--set`.
        let mut set_by: Vec<(String, &str)> = Vec::new();
        for assignment in overrides {
            for key in apply_override(&mut table, assignment)? {
                set_by.push((key, assignment));
            }
        }
        let source = |key: &str| -> PathBuf {
            // The key itself, or one inside a table the `--set` wrote (`train.schedule={…}`).
            let within = |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}.")) || inner.starts_with(&format!("{outer}["));
            match set_by.iter().rev().find(|(set, _)| within(set, key)) {
                Some((_, assignment)) => PathBuf::from(format!("--set {assignment}")),
                None => path.into(),
            }
        };
        let spec: Self = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            SpecError::Key { path: source(&key), key, message: e.inner().to_string() }
        })?;
        spec.validate(&source)?;
        Ok(spec)
    }

    /// Checks the values serde cannot; `source` names where a key was given (the file or a `--set`).
    fn validate(&self, source: &dyn Fn(&str) -> PathBuf) -> Result<(), SpecError> {
        let bad = |key: &str, message: &str| Err(SpecError::Key { path: source(key), key: key.into(), message: message.into() });
        if let Some(key) = non_finite_key(&toml::Value::try_from(self).expect("a spec always serialises"), "") {
            return bad(&key, "must be a finite number (not NaN or infinite)");
        }
        if self.train.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1");
        }
        if self.train.eval_batch_size == 0 {
            return bad("train.eval_batch_size", "must be at least 1");
        }
        if self.train.epochs == 0 {
            return bad("train.epochs", "must be at least 1");
        }
        if self.train.min_epochs > self.train.epochs {
            return bad("train.min_epochs", "is larger than train.epochs");
        }
        if self.model.audio_seconds.is_nan() || self.model.audio_seconds <= 0.0 {
            return bad("model.audio_seconds", "must be positive");
        }
        if self.prompts.top_k > self.prompts.num_experts {
            return bad("prompts.top_k", "is larger than prompts.num_experts");
        }
        if self.prompts.temperature <= 0.0 {
            return bad("prompts.temperature", "must be positive");
        }
        let m = &self.model;
        if m.is_pmoe() {
            if m.method.combine().is_none() {
                return bad("model.method", "is a two-encoder method; with `model.experts` use pmoe, mean-of-experts, prompt-tuning or late-fusion");
            }
            if m.method == Method::PromptTuning && m.experts.len() != 1 {
                return bad("model.experts", "prompt-tuning over experts takes exactly one (use mean-of-experts or pmoe for several)");
            }
            for (key, value) in [("model.main", &m.main), ("model.complementary", &m.complementary)] {
                if !value.is_empty() {
                    return bad(key, "is not used with `model.experts` (pMoE experiments read one image with every expert)");
                }
            }
            if self.pmoe.prompt_len == 0 {
                return bad("pmoe.prompt_len", "must be at least 1");
            }
            if self.pmoe.temperature.is_nan() || self.pmoe.temperature <= 0.0 {
                return bad("pmoe.temperature", "must be positive");
            }
        } else {
            if m.method.fusion().is_none() {
                return bad("model.method", "needs `model.experts` (the frozen experts to combine)");
            }
            if m.head == Some(HeadInput::Complementary) && m.method != Method::LateFusion {
                return bad("model.head", "`complementary` (a probe of that modality alone) needs method late-fusion: the other methods train the main encoder's side");
            }
            for (key, value) in [("model.main", &m.main), ("model.complementary", &m.complementary)] {
                if value.is_empty() {
                    return bad(key, "is missing (or name `model.experts` for a pMoE experiment)");
                }
            }
        }
        Ok(())
    }

    /// The resolved specification as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serialises")
    }
}

/// The dotted key of the first float in `value` that is NaN or infinite.
fn non_finite_key(value: &toml::Value, key: &str) -> Option<String> {
    let at = |inner: &str| if key.is_empty() { inner.to_string() } else { format!("{key}.{inner}") };
    match value {
        toml::Value::Float(f) if !f.is_finite() => Some(key.to_string()),
        toml::Value::Table(table) => table.iter().find_map(|(k, v)| non_finite_key(v, &at(k))),
        toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| non_finite_key(v, &format!("{key}[{i}]"))),
        _ => None,
    }
}

/// `experiments/emoji/mope/experiment.toml` → `emoji/mope`; otherwise the file stem.
fn default_name(path: &Path) -> String {
    let parts: Vec<String> = path.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [.., dataset, method, file] if file == "experiment.toml" => format!("{dataset}/{method}"),
        _ => path.file_stem().map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned()),
    }
}

fn resolve_aliases(table: &mut toml::Table, path: &Path) -> Result<(), SpecError> {
    for (alias, targets) in ALIASES {
        let (section, key) = alias.split_once('.').expect("aliases are dotted");
        let Some(toml::Value::Table(inner)) = table.get_mut(section) else { continue };
        let Some(value) = inner.remove(key) else { continue };
        for target in *targets {
            let (_, target_key) = target.split_once('.').expect("aliases are dotted");
            if inner.contains_key(target_key) {
                return Err(SpecError::Key {
                    path: path.into(),
                    key: (*target).into(),
                    message: format!("set twice: directly and through its alias `{alias}`"),
                });
            }
            inner.insert(target_key.into(), value.clone());
        }
    }
    Ok(())
}

/// Applies one `section.key=value` to `table`; the value is read as TOML (`4`, `1e-3`, `true`,
/// `[1, 2]`, `"text"`), and as a plain string if it is not TOML. Returns the keys it wrote (an
/// official flag name, dotted or bare, writes the keys it stands for).
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<Vec<String>, SpecError> {
    let set = || PathBuf::from(format!("--set {assignment}"));
    let (key, raw) = assignment.split_once('=').ok_or_else(|| SpecError::Key {
        path: set(),
        key: assignment.into(),
        message: "expected section.key=value".into(),
    })?;
    let key = key.trim();
    let value: toml::Value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let is_alias = |alias: &str| alias == key || alias.split_once('.').is_some_and(|(_, bare)| bare == key);
    let keys: Vec<String> = match ALIASES.iter().find(|(alias, _)| is_alias(alias)) {
        Some((_, targets)) => targets.iter().map(|t| t.to_string()).collect(),
        None => vec![key.to_string()],
    };
    for key in &keys {
        let mut node = &mut *table;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("split yields one part");
        for part in parts {
            let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| SpecError::Key {
                path: set(),
                key: key.clone(),
                message: format!("`{part}` is not a section"),
            })?;
        }
        node.insert(last.to_string(), value.clone());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [data]
        dataset = "jsonl"
        root = "data/emoji"
        [model]
        method = "mope"
        main = "mobilenet-v2+all-minilm-l6-v2"
        complementary = "all-minilm-l6-v2"
    "#;

    fn parse(text: &str, overrides: &[&str]) -> Result<ExperimentSpec, SpecError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        ExperimentSpec::parse(text, Path::new("exp.toml"), &overrides)
    }

    const PMOE: &str = r#"
        [data]
        dataset = "jsonl"
        root = "data/emoji"
        [model]
        method = "pmoe"
        experts = ["mobilenet-v2+all-minilm-l6-v2", "mobilenet-v2@18+all-minilm-l6-v2"]
    "#;

    #[test]
    fn pmoe_experiments_name_experts_and_only_the_methods_over_them() {
        let spec = parse(PMOE, &["pmoe.depth=3"]).unwrap();
        assert!(spec.model.is_pmoe());
        assert_eq!(spec.pmoe, PmoeSpec { depth: 3, ..PmoeSpec::default() });
        assert_eq!(spec.model.method.combine(), Some(Combine::Dispatch));
        assert!(parse(PMOE, &["model.method=mean-of-experts"]).is_ok());
        let single = parse(PMOE, &["model.method=prompt-tuning", "model.experts=[\"vit-base-patch16-224\"]"]).unwrap();
        assert_eq!(single.model.method.combine(), Some(Combine::Mean));
        assert_eq!(parse(PMOE, &["model.method=late-fusion"]).unwrap().model.method.combine(), Some(Combine::Concat));
        let error = |text: &str, overrides: &[&str]| parse(text, overrides).unwrap_err().to_string();
        assert_eq!(error(PMOE, &["model.method=mope"]), "--set model.method=mope: `model.method`: is a two-encoder method; with `model.experts` use pmoe, mean-of-experts, prompt-tuning or late-fusion");
        assert!(error(PMOE, &["model.method=prompt-tuning"]).starts_with("exp.toml: `model.experts`: prompt-tuning over experts takes exactly one"));
        assert!(error(PMOE, &["model.main=all-minilm-l6-v2"]).starts_with("--set model.main=all-minilm-l6-v2: `model.main`: is not used with `model.experts`"));
        assert!(error(PMOE, &["pmoe.prompt_len=0"]).starts_with("--set pmoe.prompt_len=0: `pmoe.prompt_len`: must be at least 1"));
        assert!(error(PMOE, &["pmoe.dispatch=1"]).starts_with("--set pmoe.dispatch=1: `pmoe.dispatch`: unknown field"));
        assert!(error(MINIMAL, &["model.method=pmoe"]).starts_with("--set model.method=pmoe: `model.method`: needs `model.experts`"));
        assert!(error(&MINIMAL.replace("complementary = \"all-minilm-l6-v2\"", ""), &[]).starts_with("exp.toml: `model.complementary`: is missing"));
        // The resolved file reads back, without the unused encoder keys.
        let text = spec.to_toml();
        assert!(!text.contains("main =") && text.contains("experts = ["), "{text}");
        assert_eq!(parse(&text, &[]).unwrap(), spec);
    }

    /// NaN and infinities are refused for every float key (TOML writes them `nan` and `inf`),
    /// with the key: an infinite clip length once reached the audio preparation as a capacity
    /// overflow, a NaN temperature the routing.
    #[test]
    fn non_finite_numbers_are_refused_with_their_key() {
        let error = |overrides: &[&str]| parse(MINIMAL, overrides).unwrap_err().to_string();
        assert_eq!(error(&["model.audio_seconds=inf"]), "--set model.audio_seconds=inf: `model.audio_seconds`: must be a finite number (not NaN or infinite)");
        assert_eq!(error(&["prompts.temperature=nan"]), "--set prompts.temperature=nan: `prompts.temperature`: must be a finite number (not NaN or infinite)");
        assert_eq!(error(&["train.lr=-inf"]), "--set train.lr=-inf: `train.lr`: must be a finite number (not NaN or infinite)");
        assert!(parse(MINIMAL, &["train.lr=1e-3", "model.audio_seconds=5"]).is_ok());
    }

    #[test]
    fn defaults_are_the_official_hyperparameters() {
        let spec = parse(MINIMAL, &[]).unwrap();
        assert_eq!((spec.prompts.static_len, spec.prompts.num_experts, spec.prompts.expert_len), (6, 4, 6));
        assert_eq!((spec.train.lr, spec.train.complementary_lr, spec.train.weight_decay), (4e-4, 5e-4, 1e-3));
        assert_eq!((spec.train.epochs, spec.train.grad_clip, spec.train.seed), (10, 1.0, 42));
        assert_eq!(spec.train.schedule, Schedule::official());
        assert_eq!(spec.data.dataset, DatasetKind::Jsonl);
    }

    #[test]
    fn official_flag_names_are_aliases() {
        let text = format!("{MINIMAL}\n[prompts]\nmoe_n_experts = 16\nprompt_length = 3\n[train]\nw_imp = 0.05\nlr_vis = 1e-3\n");
        let spec = parse(&text, &["model.t_prompt_length=4"]).unwrap();
        assert_eq!((spec.prompts.num_experts, spec.prompts.static_len, spec.prompts.expert_len), (16, 3, 3));
        assert_eq!((spec.train.importance_weight, spec.train.lr), (0.05, 1e-3));
        assert_eq!(spec.model.complementary_prompt_len, 4);
    }

    /// The official flag names work bare in `--set` (`moe_n_experts=2`, as the official code's
    /// command line), and an error in a key or value given by `--set` names that `--set`, not the
    /// file.
    #[test]
    fn official_names_work_bare_in_set_and_set_errors_name_the_set() {
        let spec = parse(MINIMAL, &["moe_n_experts=2", "prompt_length=3", "w_imp=0.5"]).unwrap();
        assert_eq!((spec.prompts.num_experts, spec.prompts.static_len, spec.prompts.expert_len, spec.train.importance_weight), (2, 3, 3, 0.5));
        let error = |text: &str, overrides: &[&str]| parse(text, overrides).unwrap_err().to_string();
        assert!(error(MINIMAL, &["train.lrr=1"]).starts_with("--set train.lrr=1: `train.lrr`: unknown field `lrr`"), "{}", error(MINIMAL, &["train.lrr=1"]));
        assert_eq!(error(MINIMAL, &["train.epochs=0"]), "--set train.epochs=0: `train.epochs`: must be at least 1");
        assert!(error(MINIMAL, &["moe_n_experts=many"]).starts_with("--set moe_n_experts=many: `prompts.num_experts`: invalid type"), "{}", error(MINIMAL, &["moe_n_experts=many"]));
        assert!(error(MINIMAL, &["train.epochs"]).starts_with("--set train.epochs: `train.epochs`: expected section.key=value"));
        // The same mistakes in the file name the file.
        assert!(error(&format!("{MINIMAL}\n[train]\nepochs = 0\n"), &[]).starts_with("exp.toml: `train.epochs`"));
        assert!(error(&format!("{MINIMAL}\n[train]\nlrr = 1\n"), &["train.lr=1e-3"]).starts_with("exp.toml: `train.lrr`"));
    }

    /// The dry run's resolved experiment says where each value came from.
    #[test]
    fn each_resolved_value_names_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, format!("{MINIMAL}\n[train]\nlr = 1e-3\nschedule = {{ kind = \"constant\" }}\n")).unwrap();
        let overrides = vec!["moe_n_experts=2".to_string(), "train.lr=2e-3".to_string()];
        let spec = ExperimentSpec::load(&path, &overrides).unwrap();
        let text = spec.to_toml_with_sources(&path, &overrides).unwrap();
        for line in ["num_experts = 2  # --set moe_n_experts=2", "lr = 0.002  # --set train.lr=2e-3", "epochs = 10  # default", "root = \"data/emoji\"  # file", "kind = \"constant\"  # file"] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // Without its comments it is the resolved experiment.
        let stripped: String = text.lines().map(|l| format!("{}\n", l.split("  # ").next().unwrap())).collect();
        assert_eq!(ExperimentSpec::parse(&stripped, &path, &[]).unwrap(), ExperimentSpec { name: spec.name.clone(), ..spec });
    }

    #[test]
    fn overrides_are_typed_and_win() {
        let spec = parse(MINIMAL, &["train.epochs=3", "prompts.prompted_layers=[1, 2]", "model.method=late-fusion", "data.root=x y"]).unwrap();
        assert_eq!(spec.train.epochs, 3);
        assert_eq!(spec.prompts.prompted_layers, [1, 2]);
        assert_eq!(spec.model.method, Method::LateFusion);
        assert_eq!(spec.data.root, Path::new("x y"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_and_key() {
        let err = parse(&format!("{MINIMAL}\n[train]\nlearning_rate = 1\n"), &[]).unwrap_err().to_string();
        assert!(err.starts_with("exp.toml: `train.learning_rate`: unknown field `learning_rate`"), "{err}");
        let err = parse(MINIMAL, &["prompts.num_expert=3"]).unwrap_err().to_string();
        assert!(err.contains("`prompts.num_expert`"), "{err}");
        let err = parse(MINIMAL, &["train.epochs=many"]).unwrap_err().to_string();
        assert!(err.contains("`train.epochs`") && err.contains("invalid type"), "{err}");
        let err = parse(MINIMAL, &["train.batch_size=0"]).unwrap_err().to_string();
        assert_eq!(err, "--set train.batch_size=0: `train.batch_size`: must be at least 1");
        let err = parse(MINIMAL, &["train.min_epochs=11"]).unwrap_err().to_string();
        assert_eq!(err, "--set train.min_epochs=11: `train.min_epochs`: is larger than train.epochs");
        let err = parse(&format!("{MINIMAL}\n[prompts]\nnum_experts = 2\nmoe_n_experts = 3\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("set twice"), "{err}");
        let err = parse(MINIMAL, &["model.head=\"complementary\""]).unwrap_err().to_string();
        assert!(err.starts_with("--set model.head=\"complementary\": `model.head`: `complementary` (a probe of that modality alone) needs method late-fusion"), "{err}");
        let spec = parse(MINIMAL, &["model.method=late-fusion", "model.head=\"complementary\""]).unwrap();
        assert_eq!(spec.model.head, Some(HeadInput::Complementary));
        let err = parse("[data\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("exp.toml: ") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn resolved_toml_reads_back_identically() {
        let spec = parse(MINIMAL, &["train.schedule={kind=\"warmup-cosine\", warmup_steps=5, min_ratio=0.1}"]).unwrap();
        assert_eq!(parse(&spec.to_toml(), &[]).unwrap(), spec);
    }

    #[test]
    fn names_come_from_the_experiment_path() {
        assert_eq!(default_name(Path::new("experiments/emoji/mope/experiment.toml")), "emoji/mope");
        assert_eq!(default_name(Path::new("mine.toml")), "mine");
    }
}
