//! `mope reproduce` (what `cargo xtask reproduce` runs after the set-up): runs the experiments
//! under `experiments/<dataset>/<method>/` once per seed, each as a `mope train` child process
//! into `runs/<dataset>/<method>/seed-<seed>/`, and prints and saves the table of results (mean ±
//! sd over the seeds, trainable parameters, adapter size, epochs and time), each seed's values,
//! and the claims of each dataset with their verdicts ([`crate::claims`]).
//!
//! ```text
//! mope reproduce                 # the experiments tagged "default", 3 seeds (42, 1, 2)
//! mope reproduce --quick         # the same, one seed
//! mope reproduce --all           # also the experiments tagged "all"
//! mope reproduce emoji food101/mope --seeds 5
//! mope reproduce --list | --dry-run | --smoke | --force | --device cuda
//! ```
//! A result newer than its experiment file is reused unless `--force`; a run interrupted after an
//! epoch resumes from its last checkpoint. The table so far is printed after each experiment, with
//! the time left estimated from the runs so far. `--smoke` runs every selected experiment for
//! seconds (one seed, one epoch on a few samples) into `runs/smoke/`: what CI runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use crate::RunResult;
use crate::claims::{Role, Runs, claims, routing_table, seed_table, table};
use crate::spec::{ExperimentSpec, Method};

/// The seeds of a reproduction, in order: `--seeds N` runs the first N.
pub const SEEDS: [u64; 5] = [42, 1, 2, 3, 4];

const SMOKE: &[&str] = &[
    "train.epochs=1",
    "data.max_train_samples=64",
    "data.max_eval_samples=48",
    "train.batch_size=16",
    "train.eval_batch_size=48",
    "train.log_every=1",
];

/// What to run and how.
#[derive(Debug, Default, Clone)]
pub struct ReproduceOptions {
    /// Experiments (`emoji/mope`) or datasets (`emoji`); none: those tagged `default`.
    pub names: Vec<String>,
    /// List the experiments with their data and results, and stop.
    pub list: bool,
    /// Resolve each experiment (`mope train --dry-run`) without training.
    pub dry_run: bool,
    /// One epoch on a few samples each, into `runs/smoke/`.
    pub smoke: bool,
    /// Train again even where a result is newer than its experiment.
    pub force: bool,
    /// The `--device` passed to `mope train`.
    pub device: Option<String>,
    /// How many of [`SEEDS`] each experiment runs with (at least 1).
    pub seeds: usize,
    /// Also the experiments tagged `all`.
    pub all: bool,
}

/// One experiment file, checked as `mope train` checks it.
#[derive(Debug)]
struct Experiment {
    spec: ExperimentSpec,
    path: PathBuf,
    /// `data.root`, resolved against the repository root.
    data_root: PathBuf,
}

impl Experiment {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn method(&self) -> Method {
        self.spec.model.method
    }

    fn paper_value(&self) -> Option<f64> {
        self.spec.paper.as_ref().and_then(|p| p.value)
    }
}

fn discover(root: &Path) -> Result<Vec<Experiment>> {
    let mut found = Vec::new();
    let dir = root.join("experiments");
    let mut datasets: Vec<PathBuf> = std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    datasets.sort();
    for dataset in datasets {
        let mut methods: Vec<PathBuf> = std::fs::read_dir(&dataset)?.filter_map(|e| e.ok().map(|e| e.path().join("experiment.toml"))).filter(|p| p.is_file()).collect();
        methods.sort();
        for path in methods {
            let spec = ExperimentSpec::load(&path, &[])?;
            found.push(Experiment { data_root: root.join(&spec.data.root), spec, path });
        }
    }
    Ok(found)
}

fn select<'a>(all: &'a [Experiment], names: &[String], everything: bool) -> Result<Vec<&'a Experiment>> {
    if names.is_empty() {
        let tagged = |e: &&Experiment| e.spec.tags.iter().any(|t| t == "default" || (everything && t == "all"));
        return Ok(all.iter().filter(tagged).collect());
    }
    let mut chosen = Vec::new();
    for name in names {
        let matched: Vec<&Experiment> = all.iter().filter(|e| e.name() == name || e.name().starts_with(&format!("{name}/"))).collect();
        if matched.is_empty() {
            bail!("no experiment named `{name}`; `cargo xtask reproduce --list` lists them");
        }
        for e in matched {
            if !chosen.iter().any(|c: &&Experiment| c.path == e.path) {
                chosen.push(e);
            }
        }
    }
    Ok(chosen)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A run's `result.json`: `None` where there is none; an error naming the file and the key where
/// it does not parse (a file from an older version, or a truncated one).
fn read_result(path: &Path) -> Result<Option<RunResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut json = serde_json::Deserializer::from_str(&text);
    let result = serde_path_to_error::deserialize(&mut json)
        .map_err(|e| anyhow!("{}: at `{}`: {}", path.display(), e.path(), e.inner()))?;
    Ok(Some(result))
}

/// Runs the selected experiments from the repository `root` with the `mope` binary `mope`.
pub fn run_experiments(root: &Path, mope: &Path, options: &ReproduceOptions) -> Result<()> {
    let all = discover(root)?;
    let chosen = select(&all, &options.names, options.all)?;
    let runs = if options.smoke { root.join("runs/smoke") } else { root.join("runs") };
    if options.list {
        list(&all, &runs);
        return Ok(());
    }
    // A smoke run and a dry run resolve each experiment once: their seeds would differ in nothing.
    let seeds = &SEEDS[..if options.smoke || options.dry_run { 1 } else { options.seeds.clamp(1, SEEDS.len()) }];
    let jobs: Vec<(&Experiment, u64)> = chosen.iter().flat_map(|&e| seeds.iter().map(move |&s| (e, s))).collect();
    let mut rows: Vec<Runs> = Vec::new();
    let mut failures = Vec::new();
    let (mut trained_seconds, mut trained) = (0.0, 0usize);
    for (index, &(e, seed)) in jobs.iter().enumerate() {
        let position = format!("[{}/{}]", index + 1, jobs.len());
        let run_dir = runs.join(e.name()).join(format!("seed-{seed}"));
        match run_one(mope, root, e, seed, &run_dir, &position, options) {
            Ok(Some((result, seconds))) => {
                if let Some(seconds) = seconds {
                    trained_seconds += seconds;
                    trained += 1;
                }
                match rows.iter_mut().find(|r| r.name == e.name()) {
                    Some(runs) => runs.results.push(result),
                    None => rows.push(Runs { name: e.name(), role: Role::of(&e.spec), paper: e.paper_value(), results: vec![result] }),
                }
            }
            Ok(None) => {}
            Err(error) => failures.push(format!("{} (seed {seed}): {error:#}", e.name())),
        }
        let left = jobs.len() - index - 1;
        if left > 0 && !rows.is_empty() && !options.dry_run {
            let eta = if trained > 0 { format!("; about {:.0} min left at the mean run so far", trained_seconds / trained as f64 * left as f64 / 60.0) } else { String::new() };
            eprintln!("\n== the table so far ({} of {} runs{eta}):\n{}", index + 1, jobs.len(), table(&rows));
        }
    }
    if !rows.is_empty() {
        let (table, seed_table, claims, routing) = (table(&rows), seed_table(&rows), claims(&rows), routing_table(&rows));
        println!("\n{table}\n{seed_table}\n{claims}\n{routing}");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let markdown = runs.join("reproduce.md");
        let json_path = runs.join("reproduce.json");
        std::fs::write(&markdown, format!("{table}\n{seed_table}\n```\n{claims}```\n\n{routing}")).with_context(|| format!("writing {}", markdown.display()))?;
        let json: Vec<&RunResult> = rows.iter().flat_map(|r| &r.results).collect();
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", json_path.display()))?;
        println!("results: the runs in {}, the table in {} and {}", runs.display(), markdown.display(), json_path.display());
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("failed: {f}");
        }
        bail!("{} of {} runs failed", failures.len(), jobs.len());
    }
    Ok(())
}

/// Runs experiment `e` with `seed` into `run_dir`, or reuses its result: the result and the
/// seconds it trained if it ran now; nothing for a dry run.
fn run_one(mope: &Path, root: &Path, e: &Experiment, seed: u64, run_dir: &Path, position: &str, options: &ReproduceOptions) -> Result<Option<(RunResult, Option<f64>)>> {
    let result_path = run_dir.join("result.json");
    let reusable = !options.force && !options.smoke && !options.dry_run;
    if reusable && newer(&result_path, &e.path) {
        match read_result(&result_path) {
            Ok(Some(result)) if result.seed != seed || result.name != e.name() => {
                eprintln!("== {position} {} seed {seed}: {} holds another run's result ({} seed {}), running again", e.name(), result_path.display(), result.name, result.seed);
            }
            Ok(Some(result)) => {
                eprintln!("\n== {position} {} seed {seed}: result newer than the experiment, reused ({})", e.name(), result_path.display());
                return Ok(Some((result, None)));
            }
            Ok(None) => {}
            Err(error) => eprintln!("== {position} {} seed {seed}: the previous result is unreadable, running again: {error:#}", e.name()),
        }
    }
    if !e.data_root.exists() {
        bail!("data not found at {} (see datasets/README.md; `cargo xtask setup` builds the shipped ones)", e.data_root.display());
    }
    // An interrupted run goes on from its last epoch, unless the experiment changed since.
    let resume = reusable && newer(&run_dir.join("last"), &e.path);
    eprintln!("\n== {position} {} seed {seed}{}", e.name(), if resume { " (resuming from its last checkpoint)" } else { "" });
    let mut command = Command::new(mope);
    command.current_dir(root).arg("train").arg(&e.path).arg("--run-dir").arg(run_dir).arg("--plain");
    command.args(["--set", &format!("train.seed={seed}")]);
    if let Some(device) = &options.device {
        command.args(["--device", device]);
    }
    if options.dry_run {
        command.arg("--dry-run");
    }
    if resume {
        command.arg("--resume");
    }
    if options.smoke {
        for set in SMOKE {
            command.args(["--set", set]);
        }
    }
    let start = Instant::now();
    let status = command.status().with_context(|| format!("cannot run {}", mope.display()))?;
    if !status.success() {
        bail!("`mope train` failed ({status})");
    }
    if options.dry_run {
        return Ok(None);
    }
    let seconds = start.elapsed().as_secs_f64();
    match read_result(&result_path)? {
        Some(result) => Ok(Some((result, Some(seconds)))),
        None => bail!("no result.json after {seconds:.0} s"),
    }
}

/// Whether `path` exists and was modified after `than`.
fn newer(path: &Path, than: &Path) -> bool {
    matches!((modified(path), modified(than)), (Some(a), Some(b)) if a > b)
}

/// Every experiment with its tags, whether its data is there, and its result.
fn list(all: &[Experiment], runs: &Path) {
    let name_width = all.iter().map(|e| e.name().len()).max().unwrap_or(0).max(10);
    let method_width = all.iter().map(|e| e.method().name().len()).max().unwrap_or(0).max(6);
    println!("{:<name_width$} {:<method_width$} {:<10} {:<8} {:>10}", "experiment", "method", "tags", "data", "result");
    for e in all {
        let mut values = Vec::new();
        for seed in SEEDS {
            match read_result(&runs.join(e.name()).join(format!("seed-{seed}")).join("result.json")) {
                Ok(Some(r)) => values.push(format!("{:.2}", r.value)),
                Ok(None) => {}
                Err(error) => {
                    eprintln!("warning: {error:#}");
                    values.push("unreadable".into());
                }
            }
        }
        let result = if values.is_empty() { "-".to_string() } else { values.join(" ") };
        let data = if e.data_root.exists() { "present" } else { "missing" };
        println!("{:<name_width$} {:<method_width$} {:<10} {:<8} {:>10}", e.name(), e.method().name(), e.spec.tags.join(","), data, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_result_is_none_and_a_malformed_one_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        assert!(read_result(&path).unwrap().is_none());

        std::fs::write(&path, r#"{"name": "emoji/mope", "method": "mope", "value": "high"}"#).unwrap();
        let message = format!("{:#}", read_result(&path).unwrap_err());
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("at `value`: invalid type: string \"high\", expected f64"), "{message}");
    }
}
