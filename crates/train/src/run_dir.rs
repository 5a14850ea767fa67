//! A run directory: everything one training run leaves behind.
//!
//! ```text
//! <run>/config.toml     the resolved experiment (every default written out)
//! <run>/task.json       the objective and the class names, indexed by class id
//! <run>/metrics.jsonl   one JSON object per line: "step", "epoch" (with validation and
//!                       routing statistics) and "test" events
//! <run>/best/           adapter of the best validation epoch (adapter contract)
//! <run>/last/           adapter, optimiser state and counters of the last epoch (resume)
//! <run>/.pending-best/  a new best epoch's adapter, between its epoch's end and its checkpoint
//! <run>/result.json     the result: metrics, trainable params, adapter bytes, times, environment
//! <run>/.lock           while training: the process that writes here ([`crate::run_lock`])
//! ```
//!
//! Every file is written whole and `best/` and `last/` are replaced whole ([`crate::durable`]),
//! so a kill at any instant leaves each as it was or as it became. A new best adapter waits in
//! `.pending-best/` until its epoch's checkpoint is in `last/`, and only then becomes `best/`: a run
//! killed between the two resumes from a checkpoint whose best epoch is the adapter in `best/`
//! ([`RunDir::recover`] promotes or drops what waits). Training into a directory that holds a
//! run needs `--resume` or `--overwrite` ([`RunDir::refuse_unasked_overwrite`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use mope_core::ParamSummary;
use serde::{Deserialize, Serialize};

use crate::checkpoint::LoopState;
use data::Task;

use crate::evaluation::EvalReport;
use crate::objective::Objective;
use crate::predictions::predictions_file;
use crate::spec::{ExperimentSpec, PaperResult};

const TASK_FILE: &str = "task.json";
/// The epoch of the adapter in `.pending-best/`.
const PENDING_EPOCH_FILE: &str = "epoch.json";

/// What a run's model predicts: the objective and the names of its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTask {
    /// Loss and metrics.
    pub objective: Task,
    /// Class (label) names, indexed by output.
    pub labels: Vec<String>,
}

impl RunTask {
    /// Reads `<run>/task.json`.
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join(TASK_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read (is this a run directory?)", path.display()))?;
        let task: Self = serde_json::from_str(&text).with_context(|| format!("{}: not a task description", path.display()))?;
        anyhow::ensure!(
            task.labels.len() == task.objective.num_outputs(),
            "{}: {} labels for {} outputs",
            path.display(),
            task.labels.len(),
            task.objective.num_outputs()
        );
        Ok(task)
    }
}

/// Paths and writers of a run directory.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    opened: Instant,
}

impl RunDir {
    /// The run directory at `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("{}: cannot create the run directory", path.display()))?;
        Ok(Self { path: path.to_path_buf(), opened: Instant::now() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adapter of the best epoch.
    pub fn best(&self) -> PathBuf {
        self.path.join("best")
    }

    /// Checkpoint of the last epoch.
    pub fn last(&self) -> PathBuf {
        self.path.join("last")
    }

    /// A new best epoch's adapter, until its epoch's checkpoint is saved.
    fn pending_best(&self) -> PathBuf {
        self.path.join(".pending-best")
    }

    /// Writes the adapter of `epoch`, a new best, with what `fill` writes (the adapter and the
    /// validation predictions) to wait until [`promote_best`](Self::promote_best).
    pub fn save_best(&self, epoch: usize, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        crate::durable::replace_dir(&self.pending_best(), |dir| {
            fill(dir)?;
            write(&dir.join(PENDING_EPOCH_FILE), &serde_json::json!({ "epoch": epoch }).to_string())
        })
    }

    /// Makes the waiting best adapter `best/` and its validation predictions the run's, once its
    /// epoch's checkpoint is saved. Nothing waiting: nothing to do.
    pub fn promote_best(&self) -> Result<()> {
        let pending = self.pending_best();
        if !pending.exists() {
            return Ok(());
        }
        let predictions = predictions_file("val");
        if pending.join(&predictions).exists() {
            let to = self.path.join(&predictions);
            std::fs::rename(pending.join(&predictions), &to).with_context(|| format!("{}: cannot move into place", to.display()))?;
        }
        crate::durable::swap_in(&pending, &self.best())
    }

    /// Mends what a kill left half-done, before a resumed run reads its checkpoint
    /// (`best_epoch: None`) and again after (`Some(its best epoch)`): a replacement of `best/` or
    /// `last/` cut between its renames is completed or undone, temporaries are removed, and a
    /// waiting best adapter becomes `best/` if the checkpoint counts its epoch as the best, and
    /// is dropped otherwise (the resumed run trains that epoch again).
    pub fn recover(&self, best_epoch: Option<usize>) -> Result<()> {
        for dir in [self.last(), self.best(), self.pending_best()] {
            if crate::durable::recover_dir(&dir)? {
                eprintln!("{}: completed what an interrupted save left", dir.display());
            }
        }
        let Some(best_epoch) = best_epoch else { return Ok(()) };
        let pending = self.pending_best();
        if !pending.exists() {
            return Ok(());
        }
        let marker = pending.join(PENDING_EPOCH_FILE);
        let epoch = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v["epoch"].as_u64());
        if epoch == Some(best_epoch as u64) {
            self.promote_best()
        } else {
            std::fs::remove_dir_all(&pending).with_context(|| format!("{}: cannot remove", pending.display()))
        }
    }

    /// Refuses to start a run in `dir` when it holds one, unless `resume` continues it or
    /// `overwrite` replaces it; says what the directory holds.
    pub fn refuse_unasked_overwrite(dir: &Path, resume: bool, overwrite: bool) -> Result<()> {
        if resume || overwrite {
            return Ok(());
        }
        let holds = |name: &str| dir.join(name).exists() || dir.join(format!(".{name}.previous")).exists();
        let what = if holds("result.json") {
            "a finished run (result.json)".to_string()
        } else if holds("last") {
            let state = std::fs::read_to_string(crate::durable::readable_dir(&dir.join("last")).join("state.json")).unwrap_or_default();
            let epochs = serde_json::from_str::<serde_json::Value>(&state).ok().and_then(|v| v["epochs_done"].as_u64());
            format!("a run with a checkpoint after epoch {}", epochs.map_or("?".into(), |e| e.to_string()))
        } else if ["config.toml", "metrics.jsonl", TASK_FILE, "best"].iter().any(|name| holds(name)) {
            "the start of a run (no checkpoint yet)".to_string()
        } else {
            return Ok(());
        };
        anyhow::bail!(
            "{} holds {what}: --resume continues it, --overwrite replaces it, or choose another --run-dir",
            dir.display()
        )
    }

    /// The metrics log.
    pub fn metrics(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    /// The result file.
    pub fn result(&self) -> PathBuf {
        self.path.join("result.json")
    }

    /// Starts a fresh run: writes the resolved config and labels, empties the metrics log and
    /// removes checkpoints, results and predictions of an earlier run.
    pub fn start(&self, spec: &ExperimentSpec, task: &RunTask) -> Result<()> {
        self.recover(None)?;
        for dir in [self.best(), self.last(), self.pending_best()] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
            }
        }
        for file in [self.result(), self.path.join(predictions_file("val")), self.path.join(predictions_file("test"))] {
            let _ = std::fs::remove_file(file);
        }
        self.write_config(spec)?;
        write(&self.path.join(TASK_FILE), &serde_json::to_string_pretty(task)?)?;
        write(&self.metrics(), "")
    }

    /// Writes the resolved experiment (a resumed run rewrites it: it may train more epochs).
    pub fn write_config(&self, spec: &ExperimentSpec) -> Result<()> {
        write(&self.path.join("config.toml"), &spec.to_toml())
    }

    /// Appends one event to `metrics.jsonl`.
    pub fn log(&self, event: &serde_json::Value) -> Result<()> {
        let path = self.metrics();
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
        writeln!(file, "{event}").with_context(|| format!("{}: cannot write", path.display()))
    }

    /// Drops the events of epochs after `epochs_done` (a resumed run repeats them), the test
    /// event, and a line a kill cut short.
    pub fn truncate_metrics_after(&self, epochs_done: usize) -> Result<()> {
        let path = self.metrics();
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            read => read.with_context(|| format!("{}: cannot read the run's metrics to resume them (nothing was changed)", path.display()))?,
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { return false };
                event["event"] != "test" && event["epoch"].as_u64().is_some_and(|e| e as usize <= epochs_done)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        write(&path, &kept)
    }

    /// Writes `result.json`.
    pub fn write_result(&self, result: &RunResult) -> Result<()> {
        write(&self.result(), &serde_json::to_string_pretty(result)?)
    }

    /// Seconds since the directory was opened.
    pub fn elapsed(&self) -> f64 {
        self.opened.elapsed().as_secs_f64()
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    crate::durable::write_file(path, text.as_bytes())
}

/// Where a result was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// burn backend and device.
    pub backend: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Operating system and architecture.
    pub os: String,
    /// `git rev-parse HEAD` of the working directory, if it is a repository.
    pub git_commit: Option<String>,
    /// Version of this crate.
    pub version: String,
    /// Seconds since the Unix epoch at which the result was written.
    pub unix_time: u64,
    /// glibc allocator settings in the process's environment (`MALLOC_…_=value`, sorted): the
    /// ones `mope` sets for itself ([`crate::malloc`]) unless the user set their own.
    #[serde(default)]
    pub allocator: Vec<String>,
}

impl Environment {
    /// The environment of this process, on `device`.
    pub fn here<B: Backend>(device: &B::Device) -> Self {
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Self {
            backend: format!("{} {device:?}", B::name(device)),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            git_commit,
            version: env!("CARGO_PKG_VERSION").to_string(),
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            allocator: {
                let mut settings: Vec<String> = std::env::vars()
                    .filter(|(name, _)| name.starts_with("MALLOC_") && name.ends_with('_'))
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                settings.sort();
                settings
            },
        }
    }
}

/// The result of a run, as written to `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Experiment name.
    pub name: String,
    /// Fusion method.
    pub method: String,
    /// Main and complementary encoders.
    pub encoders: [String; 2],
    /// The primary metric.
    pub metric: String,
    /// Its value on the evaluated split, in percent.
    pub value: f64,
    /// Split the value is measured on (`test`, or `val` where the dataset has no test split).
    pub split: String,
    /// Its best validation value, and the epoch of the best adapter.
    pub best_val: f64,
    /// Epoch (1-based) whose adapter is evaluated.
    pub best_epoch: usize,
    /// What the paper reports.
    pub paper: Option<PaperResult>,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// Size of the best adapter's weights file.
    pub adapter_bytes: u64,
    /// Epochs trained: `train.epochs`, or fewer where validation stopped improving
    /// (`train.patience`).
    pub epochs: usize,
    /// The seed of initialisation, shuffling and routing noise.
    pub seed: u64,
    /// Optimisation steps.
    pub steps: usize,
    /// Seconds in training loops (without evaluation).
    pub train_seconds: f64,
    /// Seconds of this invocation, loading and evaluation included.
    pub wall_seconds: f64,
    /// The full evaluation report.
    pub report: EvalReport,
    /// Where it ran.
    pub environment: Environment,
}

impl RunResult {
    /// Assembles the result of a finished run.
    #[allow(clippy::too_many_arguments)]
    pub fn new<B: Backend>(
        spec: &ExperimentSpec,
        objective: Task,
        summary: &ParamSummary,
        run: &RunDir,
        best_epoch: usize,
        best_val: f64,
        split: &str,
        report: EvalReport,
        state: &LoopState,
        device: &B::Device,
    ) -> Result<Self> {
        let metric = objective.primary_metric().to_string();
        let weights = run.best().join(mope_core::ADAPTER_WEIGHTS_FILE);
        let adapter_bytes = std::fs::metadata(&weights).with_context(|| format!("{}: missing", weights.display()))?.len();
        Ok(Self {
            name: spec.name.clone(),
            method: spec.model.method.name().to_string(),
            encoders: [spec.model.main.clone(), spec.model.complementary.clone()],
            value: report.metric(&metric).expect("the primary metric is always reported"),
            metric,
            split: split.to_string(),
            best_val,
            best_epoch,
            paper: spec.paper.clone(),
            trainable_params: summary.trainable,
            total_params: summary.total,
            adapter_bytes,
            epochs: state.epochs_done,
            seed: spec.train.seed,
            steps: state.step,
            train_seconds: state.seconds,
            wall_seconds: run.elapsed(),
            report,
            environment: Environment::here::<B>(device),
        })
    }
}
