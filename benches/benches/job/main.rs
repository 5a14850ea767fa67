//! The real training job, ours against an independent PyTorch implementation of it
//! (`benches/reference/mope_job.py`), side by side in one run: one training epoch and one
//! validation pass of the emoji experiment at the paper's prompt configuration, for deep prompt
//! tuning, sequential fusion and MoPE.
//!
//! ```sh
//! MOPE_TORCH_PYTHON=venv/bin/python cargo bench -p mope-benches --bench job
//! cargo bench -p mope-benches --bench job -- --methods mope,sequential --threads 2 --runs 3
//! ```
//!
//! Ours runs the code `mope train` runs (`train::load_splits`, `Setup::load`, `train::train`:
//! loader workers, tokenisation, the feature cache, logging, checkpoints), each method in a
//! process of its own so that its peak memory is its own, with
//! `experiments/emoji/<method>/experiment.toml` and the overrides of [`OVERRIDES`]. The rates
//! are the first epoch's (every step of it, data included) and the validation pass's, as
//! `metrics.jsonl` records them. Image features come from the frozen MobileNetV2 on both
//! sides, computed before the clock starts: ours from the feature cache (filled by one untimed
//! run first, unless `--no-warm-up`), PyTorch's by its own MobileNetV2 before its first epoch.
//! Needs the assets (`cargo xtask setup`).
//!
//! `-- --phases` reports instead where one step's time goes, phase by phase (data, each layer's
//! forward, the prompts, head and losses, backward, optimiser, metrics), for ours ([`phases`])
//! and PyTorch's (`mope_job.py --phases`), in milliseconds per step over the first epoch.

mod phases;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use mope_benches::{measurement_of, mib, peak_rss_bytes, run_reference};
use serde::{Deserialize, Serialize};
use train::{BackendJob, DeviceChoice, ExperimentSpec, ProgressMode, RunDir, Setup, TrainBackend, TrainOptions, run_on};

/// The paper's prompt configuration on the emoji experiment: every training pair, static and
/// expert prompts of 6 tokens, every MiniLM layer prompted, MobileNetV2 at 224 px; one epoch.
/// The job `benches/reference/mope_job.py` implements: the emoji experiments on the whole
/// training split, every layer prompted with 6 static and 6-token experts, the mapper's hidden
/// width 64, lr 2e-3 after 5 warm-up steps, one epoch.
const OVERRIDES: [&str; 9] = [
    "data.max_train_samples=0",
    "prompts.static_len=6",
    "prompts.expert_len=6",
    "prompts.prompted_layers=[0,1,2,3,4,5]",
    "prompts.mapper_hidden=64",
    "model.image_size=224",
    "train.epochs=1",
    "train.lr=2e-3",
    "train.schedule={kind=\"warmup-cosine\", warmup_steps=5, min_ratio=0.05}",
];

/// What one side measured for one method.
#[derive(Debug, Serialize, Deserialize)]
struct Measurement {
    train_samples_per_second: f64,
    val_samples_per_second: f64,
    val_accuracy: f64,
    peak_rss_bytes: Option<u64>,
    #[serde(default)]
    label: String,
}

/// Our job for one method, in this process.
struct Ours {
    method: String,
    run_dir: PathBuf,
}

/// The experiment of `method` with [`OVERRIDES`].
fn spec(method: &str) -> Result<ExperimentSpec> {
    let mut overrides: Vec<String> = OVERRIDES.iter().map(|s| s.to_string()).collect();
    if method == "prompt-tuning" {
        // The reference's prompt tuning concatenates the image feature at its head.
        overrides.push("model.head=\"both\"".to_string());
    }
    Ok(ExperimentSpec::load(&Path::new("experiments/emoji").join(method).join("experiment.toml"), &overrides)?)
}

impl BackendJob for Ours {
    type Output = Measurement;

    fn run<B: TrainBackend>(self) -> Result<Measurement> {
        let device = Default::default();
        let spec = spec(&self.method)?;
        let (splits, objective, labels) = train::load_splits(&spec)?;
        let setup = Setup::<B>::load(&spec, labels, objective, &device)?;
        let run = RunDir::open(&self.run_dir)?;
        let options = TrainOptions { resume: false, overwrite: true, progress: ProgressMode::Quiet, workers: 0 };
        let result = train::train(&spec, setup, &splits, &run, &options)?;
        let metrics = std::fs::read_to_string(run.path().join("metrics.jsonl"))?;
        let epoch: serde_json::Value = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "epoch")
            .context("metrics.jsonl has no epoch event")?;
        let rate = |key: &str| epoch[key].as_f64().with_context(|| format!("the epoch event has no {key}"));
        Ok(Measurement {
            train_samples_per_second: rate("train_samples_per_second")?,
            val_samples_per_second: rate("val_samples_per_second")?,
            val_accuracy: result.best_val,
            peak_rss_bytes: peak_rss_bytes(),
            label: format!("mope-rs {} on flex", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// Our phase profile for one method, in this process.
struct OursByPhase {
    method: String,
}

impl BackendJob for OursByPhase {
    type Output = phases::PhaseTimes;

    fn run<B: TrainBackend>(self) -> Result<phases::PhaseTimes> {
        let device = Default::default();
        let spec = spec(&self.method)?;
        let (splits, objective, labels) = train::load_splits(&spec)?;
        let setup = Setup::<B>::load(&spec, labels, objective, &device)?;
        phases::profile(&spec, setup, &splits)
    }
}

/// Runs ours for `method` in a child process (this bench with `--child`), for its own peak memory.
fn ours_in_child<T: serde::de::DeserializeOwned>(method: &str, threads: usize, by_phase: bool) -> Result<T> {
    let run_dir = tempdir_path(method);
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--child", method, "--threads", &threads.to_string(), "--run-dir"]).arg(&run_dir);
    if by_phase {
        command.arg("--phases");
    }
    let output = command.output()?;
    let _ = std::fs::remove_dir_all(&run_dir);
    measurement_of(output, &format!("our {method} job"))
}

/// A fresh run directory for one child's job, removed again once the child is done.
fn tempdir_path(method: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mope-job-bench-{}-{method}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() -> Result<()> {
    // What `mope` runs with; the PyTorch reference, a child of this process, inherits it too.
    train::tune_glibc_malloc();
    // The experiments and assets are named from the repository's root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the benches crate sits in the workspace")?;
    std::env::set_current_dir(root)?;
    let mut methods = vec!["prompt-tuning".to_string(), "sequential".to_string(), "mope".to_string()];
    let (mut threads, mut reference, mut warm_up) = (std::thread::available_parallelism().map_or(1, |n| n.get()), true, true);
    let (mut child, mut run_dir, mut by_phase, mut runs) = (None, None, false, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--methods" => methods = args.next().context("--methods a,b")?.split(',').map(str::to_string).collect(),
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--no-reference" => reference = false,
            "--no-warm-up" => warm_up = false,
            "--child" => child = Some(args.next().context("--child METHOD")?),
            "--run-dir" => run_dir = Some(PathBuf::from(args.next().context("--run-dir DIR")?)),
            "--phases" => by_phase = true,
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument `{other}` (--methods, --threads, --runs, --phases, --no-reference, --no-warm-up)"),
        }
    }
    // burn's CPU backend runs its kernels on rayon's global pool; PyTorch gets the same count.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("rayon's pool was already built")?;
    if let Some(method) = child {
        let line = if by_phase {
            serde_json::to_string(&run_on(DeviceChoice::Cpu, OursByPhase { method })?)?
        } else {
            let run_dir = run_dir.context("--child needs --run-dir")?;
            serde_json::to_string(&run_on(DeviceChoice::Cpu, Ours { method, run_dir })?)?
        };
        println!("{line}");
        return Ok(());
    }
    for method in &methods {
        anyhow::ensure!(root.join("experiments/emoji").join(method).is_dir(), "no experiments/emoji/{method}/ (prompt-tuning, sequential, mope)");
    }
    anyhow::ensure!(root.join(".assets/datasets/emoji").is_dir(), "no .assets/datasets/emoji: run `cargo xtask setup` first");
    if warm_up {
        eprintln!("warm-up: one untimed {} run fills the feature cache", methods[0]);
        ours_in_child::<Measurement>(&methods[0], threads, false)?;
    }
    let python = std::env::var("MOPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    if by_phase {
        return phase_tables(&methods, threads, reference.then_some(python.as_str()));
    }
    // Each run measures every method, ours then PyTorch's, so that a slow spell of a shared
    // machine touches both sides; the table shows medians over the runs and their range.
    let mut rows: Vec<(String, Vec<Measurement>, Vec<Measurement>)> = methods.iter().map(|m| (m.clone(), Vec::new(), Vec::new())).collect();
    for run in 1..=runs {
        for (method, ours, theirs) in rows.iter_mut() {
            eprintln!("run {run}/{runs}, {method}: ours");
            ours.push(ours_in_child(method, threads, false)?);
            if reference {
                eprintln!("run {run}/{runs}, {method}: PyTorch");
                let args = ["--method", method.as_str(), "--assets", ".assets", "--threads", &threads.to_string()];
                match run_reference::<Measurement>(&python, "mope_job.py", &args) {
                    Ok(m) => theirs.push(m),
                    Err(e) => eprintln!("PyTorch reference not measured: {e:#}"),
                }
            }
        }
    }
    println!("{runs} run(s), {threads} threads; median (min-max) over the runs\n");
    println!("| method | ours train (samples/s) | PyTorch train (samples/s) | ours / PyTorch | ours val (samples/s) | PyTorch val (samples/s) | ours / PyTorch | ours peak MiB | PyTorch peak MiB | ours val acc | PyTorch val acc |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let train_rate = |m: &Measurement| m.train_samples_per_second;
    let val_rate = |m: &Measurement| m.val_samples_per_second;
    for (method, ours, theirs) in &rows {
        let ratio = |f: &dyn Fn(&Measurement) -> f64| median(theirs, f).map_or_else(|| "n/a".into(), |t| format!("{:.2}", median(ours, f).unwrap_or(0.0) / t));
        let peak = |side: &[Measurement]| side.iter().filter_map(|m| m.peak_rss_bytes).max();
        println!(
            "| {method} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            spread(ours, train_rate),
            spread(theirs, train_rate),
            ratio(&train_rate),
            spread(ours, val_rate),
            spread(theirs, val_rate),
            ratio(&val_rate),
            mib(peak(ours)),
            mib(peak(theirs)),
            median(ours, |m| m.val_accuracy).map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
            median(theirs, |m| m.val_accuracy).map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
        );
    }
    // MoPE's cost over sequential fusion: the ratio of their median training rates, on each side.
    let rate = |name: &str, theirs: bool| {
        rows.iter().find(|(m, ..)| m == name).and_then(|(_, o, t)| median(if theirs { t } else { o }, train_rate))
    };
    if let (Some(seq), Some(mope)) = (rate("sequential", false), rate("mope", false)) {
        let theirs = rate("sequential", true).zip(rate("mope", true)).map(|(s, m)| format!("{:.2}", s / m));
        println!("\nMoPE's step over sequential fusion's: ours {:.2}x, PyTorch {}x", seq / mope, theirs.unwrap_or_else(|| "n/a".into()));
    }
    if let Some((_, ours, theirs)) = rows.first()
        && let (Some(ours), Some(theirs)) = (ours.first(), theirs.first())
    {
        eprintln!("ours {}, reference {} ({threads} CPU threads)", ours.label, theirs.label);
    }
    Ok(())
}

/// The median of `f` over `side`, `None` when nothing was measured.
fn median(side: &[Measurement], f: impl Fn(&Measurement) -> f64) -> Option<f64> {
    let mut values: Vec<f64> = side.iter().map(f).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// `median (min-max)` of `f` over `side`, or `n/a`.
fn spread(side: &[Measurement], f: impl Fn(&Measurement) -> f64 + Copy) -> String {
    let Some(mid) = median(side, f) else { return "n/a".into() };
    if side.len() == 1 {
        return format!("{mid:.1}");
    }
    let (lo, hi) = side.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    format!("{mid:.1} ({lo:.1}-{hi:.1})")
}

/// The phase table of each method, ours beside PyTorch's.
fn phase_tables(methods: &[String], threads: usize, python: Option<&str>) -> Result<()> {
    for method in methods {
        eprintln!("{method}: ours, by phase");
        let ours: phases::PhaseTimes = ours_in_child(method, threads, true)?;
        let theirs = python.and_then(|python| {
            eprintln!("{method}: PyTorch, by phase");
            let args = ["--method", method, "--assets", ".assets", "--threads", &threads.to_string(), "--phases"];
            run_reference::<phases::PhaseTimes>(python, "mope_job.py", &args).map_err(|e| eprintln!("PyTorch reference not measured: {e:#}")).ok()
        });
        println!("\n{method} ({} steps; mean loss ours {:.4}, PyTorch {})\n", ours.steps, ours.mean_loss, theirs.as_ref().map_or_else(|| "n/a".into(), |t| format!("{:.4}", t.mean_loss)));
        println!("| phase | ours (ms/step) | PyTorch (ms/step) | ours / PyTorch |");
        println!("|---|---:|---:|---:|");
        let their_rows = theirs.as_ref().map(|t| t.rows());
        for (i, (name, seconds)) in ours.rows().into_iter().enumerate() {
            let their = their_rows.as_ref().and_then(|rows| rows.get(i)).map(|(_, s)| *s);
            let ratio = their.filter(|&t| t > 0.0).map_or_else(|| "n/a".into(), |t| format!("{:.2}", seconds / t));
            println!("| {name} | {:.1} | {} | {ratio} |", seconds * 1e3, their.map_or_else(|| "n/a".into(), |t| format!("{:.1}", t * 1e3)));
        }
        let their_step = theirs.as_ref().map(|t| t.step());
        println!(
            "| **step** | **{:.1}** | **{}** | **{}** |",
            ours.step() * 1e3,
            their_step.map_or_else(|| "n/a".into(), |t| format!("{:.1}", t * 1e3)),
            their_step.map_or_else(|| "n/a".into(), |t| format!("{:.2}", ours.step() / t))
        );
    }
    Ok(())
}
