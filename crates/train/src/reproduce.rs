//! `mope reproduce` (what `cargo xtask reproduce` runs after the set-up): runs the experiments
//! under `experiments/<dataset>/<method>/`, each as a `mope train` child process, and prints and
//! saves one table: method, metric (ours and the paper's), trainable parameters, adapter size and
//! time, and for each dataset whether MoPE beats vanilla prompt tuning, and at what parameter cost.
//!
//! ```text
//! mope reproduce                 # the experiments tagged "default" (shipped data)
//! mope reproduce emoji food101/mope
//! mope reproduce --list | --dry-run | --smoke | --force | --device cuda
//! ```
//! A result newer than its experiment file is reused unless `--force`; an experiment interrupted
//! after an epoch resumes from its last checkpoint. The table so far is printed after each
//! experiment, with the time left estimated from the experiments run so far. `--smoke` runs every
//! selected experiment for seconds (one epoch on a few samples) into `runs/smoke/`: what CI runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use mope_core::human_bytes;
use mope_core::thousands;

use crate::RunResult;
use crate::spec::{ExperimentSpec, Method};

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

    /// A pMoE-family experiment (it names `model.experts`).
    fn over_experts(&self) -> bool {
        self.spec.model.is_pmoe()
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

fn select<'a>(all: &'a [Experiment], names: &[String]) -> Result<Vec<&'a Experiment>> {
    if names.is_empty() {
        return Ok(all.iter().filter(|e| e.spec.tags.iter().any(|t| t == "default")).collect());
    }
    let mut chosen = Vec::new();
    for name in names {
        let matched: Vec<&Experiment> = all.iter().filter(|e| e.name() == name || e.name().starts_with(&format!("{name}/"))).collect();
        if matched.is_empty() {
            bail!("no experiment named `{name}`; `cargo xtask reproduce --list` lists them");
        }
        chosen.extend(matched);
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
    let chosen = select(&all, &options.names)?;
    let runs = if options.smoke { root.join("runs/smoke") } else { root.join("runs") };
    if options.list {
        list(&all, &runs);
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut trained_seconds = 0.0;
    let mut trained = 0usize;
    for (index, &e) in chosen.iter().enumerate() {
        let position = format!("[{}/{}]", index + 1, chosen.len());
        let run_dir = runs.join(e.name());
        let result_path = run_dir.join("result.json");
        let reusable = !options.force && !options.smoke && !options.dry_run;
        if reusable && newer(&result_path, &e.path) {
            match read_result(&result_path) {
                Ok(Some(result)) => {
                    eprintln!("\n== {position} {}: result newer than the experiment, reused ({})", e.name(), result_path.display());
                    rows.push((e, result));
                    continue;
                }
                Ok(None) => {}
                Err(error) => eprintln!("== {position} {}: the previous result is unreadable, running again: {error:#}", e.name()),
            }
        }
        if !e.data_root.exists() {
            failures.push(format!("{}: data not found at {} (see datasets/README.md; `cargo xtask setup` builds the shipped ones)", e.name(), e.data_root.display()));
            continue;
        }
        // An interrupted experiment goes on from its last epoch, unless the experiment changed since.
        let resume = reusable && newer(&run_dir.join("last"), &e.path);
        eprintln!("\n== {position} {}{}", e.name(), if resume { " (resuming from its last checkpoint)" } else { "" });
        let mut command = Command::new(mope);
        command.current_dir(root).arg("train").arg(&e.path).arg("--run-dir").arg(&run_dir).arg("--plain");
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
            failures.push(format!("{}: `mope train` failed ({status})", e.name()));
            continue;
        }
        if options.dry_run {
            continue;
        }
        trained_seconds += start.elapsed().as_secs_f64();
        trained += 1;
        match read_result(&result_path) {
            Ok(Some(result)) => rows.push((e, result)),
            Ok(None) => failures.push(format!("{}: no result.json after {:.0} s", e.name(), start.elapsed().as_secs_f64())),
            Err(error) => failures.push(format!("{}: {error:#}", e.name())),
        }
        let left = chosen.len() - index - 1;
        if left > 0 && !rows.is_empty() {
            let eta = trained_seconds / trained as f64 * left as f64;
            eprintln!("\n== the table so far ({} of {} experiments; about {:.0} min left at the mean so far):\n{}", rows.len(), chosen.len(), eta / 60.0, table(&rows));
        }
    }
    if !rows.is_empty() {
        let table = table(&rows);
        println!("\n{table}");
        let claims = claims(&rows);
        println!("{claims}");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let markdown = runs.join("reproduce.md");
        let json_path = runs.join("reproduce.json");
        std::fs::write(&markdown, format!("{table}\n{claims}")).with_context(|| format!("writing {}", markdown.display()))?;
        let json: Vec<&RunResult> = rows.iter().map(|(_, r)| r).collect();
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", json_path.display()))?;
        println!("results: the runs in {}, the table in {} and {}", runs.display(), markdown.display(), json_path.display());
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("failed: {f}");
        }
        bail!("{} of {} experiments failed", failures.len(), chosen.len());
    }
    Ok(())
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
        let result = match read_result(&runs.join(e.name()).join("result.json")) {
            Ok(Some(r)) => format!("{:.2}", r.value),
            Ok(None) => "-".into(),
            Err(error) => {
                eprintln!("warning: {error:#}");
                "unreadable".into()
            }
        };
        let data = if e.data_root.exists() { "present" } else { "missing" };
        println!("{:<name_width$} {:<method_width$} {:<10} {:<8} {:>10}", e.name(), e.method().name(), e.spec.tags.join(","), data, result);
    }
}

/// The result table, in Markdown.
fn table(rows: &[(&Experiment, RunResult)]) -> String {
    let mut out = String::from(
        "| experiment | metric | ours | paper | trainable params | trainable % | adapter | train time | wall time |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (e, r) in rows {
        let trainable = r.trainable_params;
        let total = r.total_params.max(1);
        let paper = e.paper_value().map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
        out.push_str(&format!(
            "| {} | {} ({}) | {:.2} | {} | {} | {:.3} | {} | {:.0} s | {:.0} s |\n",
            e.name(),
            r.metric,
            r.split,
            r.value,
            paper,
            thousands(trainable),
            100.0 * trainable as f64 / total as f64,
            human_bytes(r.adapter_bytes),
            r.train_seconds,
            r.wall_seconds,
        ));
    }
    out
}


/// For each dataset with both, whether MoPE beats vanilla prompt tuning, and at what parameter
/// cost; and where fine-tuning ran, how close MoPE comes to it. For each dataset with pMoE runs,
/// whether combining the experts beats the best single expert and the mean of experts.
fn claims(rows: &[(&Experiment, RunResult)]) -> String {
    let mut out = String::new();
    let datasets: std::collections::BTreeSet<&str> = rows.iter().filter_map(|(e, _)| e.name().split('/').next()).collect();
    for dataset in datasets {
        // (MoPE's prompt tuning and single-expert prompt tuning share the method name.)
        let in_dataset = |method: Method, over_experts: bool| {
            rows.iter().filter(move |(e, _)| e.name().starts_with(&format!("{dataset}/")) && e.method() == method && e.over_experts() == over_experts)
        };
        let find = |method: Method, over_experts: bool| in_dataset(method, over_experts).next().map(|(_, r)| r);
        if let Some(pmoe) = find(Method::Pmoe, true) {
            out.push_str(&pmoe_claims(dataset, pmoe, in_dataset(Method::PromptTuning, true).collect(), find(Method::MeanOfExperts, true)));
        }
        let (Some(mope), Some(vpt)) = (find(Method::Mope, false), find(Method::PromptTuning, false)) else { continue };
        let (m, v) = (mope.value, vpt.value);
        let verdict = if m > v { "MoPE beats vanilla prompt tuning" } else { "MoPE does NOT beat vanilla prompt tuning" };
        let cost = if mope.trainable_params <= vpt.trainable_params {
            "with equal or fewer trainable params".to_string()
        } else {
            let joint = if m > v { "but" } else { "and" };
            format!("{joint} trains {:.1}x the params", mope.trainable_params as f64 / vpt.trainable_params.max(1) as f64)
        };
        out.push_str(&format!(
            "{dataset}: {verdict} ({m:.2} vs {v:.2}; {} vs {} trainable params), {cost}.\n",
            thousands(mope.trainable_params),
            thousands(vpt.trainable_params)
        ));
        if let Some(full) = find(Method::FineTuning, false) {
            out.push_str(&format!(
                "{dataset}: MoPE reaches {:.2} against fine-tuning's {:.2}, training {:.2}% of its parameters.\n",
                m,
                full.value,
                100.0 * mope.trainable_params as f64 / full.trainable_params.max(1) as f64
            ));
        }
    }
    out
}

/// pMoE against the best single expert (prompt-tuned alone) and the mean of experts.
fn pmoe_claims(dataset: &str, pmoe: &RunResult, singles: Vec<&(&Experiment, RunResult)>, mean: Option<&RunResult>) -> String {
    let mut out = String::new();
    let p = pmoe.value;
    if let Some((best, r)) = singles.into_iter().max_by(|a, b| a.1.value.total_cmp(&b.1.value)) {
        let verdict = if p > r.value { "pMoE beats the best single expert" } else { "pMoE does NOT beat the best single expert" };
        out.push_str(&format!(
            "{dataset}: {verdict} ({p:.2} vs {:.2}, {}; {} vs {} trainable params, {:.0} s vs {:.0} s of training).\n",
            r.value,
            best.name(),
            thousands(pmoe.trainable_params),
            thousands(r.trainable_params),
            pmoe.train_seconds,
            r.train_seconds,
        ));
    }
    if let Some(mean) = mean {
        let verdict = if p > mean.value { "beats" } else { "does NOT beat" };
        out.push_str(&format!(
            "{dataset}: pMoE {verdict} the mean of its experts ({p:.2} vs {:.2}; {} vs {} trainable params).\n",
            mean.value,
            thousands(pmoe.trainable_params),
            thousands(mean.trainable_params)
        ));
    }
    out
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
