//! The real training job, ours against an independent PyTorch implementation of it
//! (`benches/reference/mope_job.py`), side by side in one run: one training epoch and one
//! validation pass of the emoji experiment at the paper's prompt configuration, for deep prompt
//! tuning, sequential fusion and MoPE.
//!
//! ```sh
//! MOPE_TORCH_PYTHON=venv/bin/python cargo bench -p mope-benches --bench job
//! cargo bench -p mope-benches --bench job -- --methods mope,sequential --threads 2 --epochs 1
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

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use mope_benches::{mib, peak_rss_bytes, run_reference};
use serde::{Deserialize, Serialize};
use train::device::{BackendJob, DeviceChoice, TrainBackend, run_on};
use train::progress::ProgressMode;
use train::{ExperimentSpec, RunDir, Setup, TrainOptions};

/// The paper's prompt configuration on the emoji experiment: every training pair, static and
/// expert prompts of 6 tokens, every MiniLM layer prompted, MobileNetV2 at 224 px; one epoch.
const OVERRIDES: [&str; 6] = [
    "data.max_train_samples=0",
    "prompts.static_len=6",
    "prompts.expert_len=6",
    "prompts.prompted_layers=[0,1,2,3,4,5]",
    "model.image_size=224",
    "train.epochs=1",
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

impl BackendJob for Ours {
    type Output = Measurement;

    fn run<B: TrainBackend>(self) -> Result<Measurement> {
        let device = Default::default();
        let overrides: Vec<String> = OVERRIDES.iter().map(|s| s.to_string()).collect();
        let spec = ExperimentSpec::load(&Path::new("experiments/emoji").join(&self.method).join("experiment.toml"), &overrides)?;
        let (splits, objective, labels) = train::load_splits(&spec)?;
        let setup = Setup::<B>::load(&spec, labels, objective, &device)?;
        let run = RunDir::open(&self.run_dir)?;
        let options = TrainOptions { resume: false, progress: ProgressMode::Quiet, workers: 0 };
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

/// Runs ours for `method` in a child process (this bench with `--child`), for its own peak memory.
fn ours_in_child(method: &str, threads: usize) -> Result<Measurement> {
    let run_dir = tempdir_path(method)?;
    let output = Command::new(std::env::current_exe()?)
        .args(["--child", method, "--threads", &threads.to_string(), "--run-dir"])
        .arg(&run_dir)
        .output()?;
    let _ = std::fs::remove_dir_all(&run_dir);
    if !output.status.success() {
        bail!("our {method} job failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("our {method} job printed `{last}`, not a measurement"))
}

fn tempdir_path(method: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mope-job-bench-{}-{method}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

fn main() -> Result<()> {
    // What `mope` runs with; the PyTorch reference, a child of this process, inherits it too.
    train::malloc::tune_glibc_malloc();
    // The experiments and assets are named from the repository's root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the benches crate sits in the workspace")?;
    std::env::set_current_dir(root)?;
    let mut methods = vec!["prompt-tuning".to_string(), "sequential".to_string(), "mope".to_string()];
    let (mut threads, mut reference, mut warm_up) = (std::thread::available_parallelism().map_or(1, |n| n.get()), true, true);
    let (mut child, mut run_dir) = (None, None);
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
            other => bail!("unknown argument `{other}` (--methods, --threads, --no-reference, --no-warm-up)"),
        }
    }
    // burn's CPU backend runs its kernels on rayon's global pool; PyTorch gets the same count.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("rayon's pool was already built")?;
    if let Some(method) = child {
        let run_dir = run_dir.context("--child needs --run-dir")?;
        let measurement = run_on(DeviceChoice::Cpu, Ours { method, run_dir })?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(());
    }
    for method in &methods {
        anyhow::ensure!(root.join("experiments/emoji").join(method).is_dir(), "no experiments/emoji/{method}/ (prompt-tuning, sequential, mope)");
    }
    anyhow::ensure!(root.join(".assets/datasets/emoji").is_dir(), "no .assets/datasets/emoji: run `cargo xtask setup` first");
    if warm_up {
        eprintln!("warm-up: one untimed {} run fills the feature cache", methods[0]);
        ours_in_child(&methods[0], threads)?;
    }
    let python = std::env::var("MOPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut rows = Vec::new();
    for method in &methods {
        eprintln!("{method}: ours");
        let ours = ours_in_child(method, threads)?;
        let theirs = if reference {
            eprintln!("{method}: PyTorch");
            let args = ["--method", method, "--assets", ".assets", "--threads", &threads.to_string()];
            run_reference::<Measurement>(&python, "mope_job.py", &args).map_err(|e| eprintln!("PyTorch reference not measured: {e:#}")).ok()
        } else {
            None
        };
        rows.push((method.clone(), ours, theirs));
    }
    println!("| method | ours train (samples/s) | PyTorch train (samples/s) | ours / PyTorch | ours val (samples/s) | PyTorch val (samples/s) | ours / PyTorch | ours peak MiB | PyTorch peak MiB | ours val acc | PyTorch val acc |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |a: f64, b: Option<f64>| b.map_or_else(|| "n/a".into(), |b| format!("{:.2}", a / b));
    let value = |v: Option<f64>, digits: usize| v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"));
    for (method, ours, theirs) in &rows {
        let train = theirs.as_ref().map(|t| t.train_samples_per_second);
        let val = theirs.as_ref().map(|t| t.val_samples_per_second);
        println!(
            "| {method} | {:.1} | {} | {} | {:.1} | {} | {} | {} | {} | {:.2} | {} |",
            ours.train_samples_per_second,
            value(train, 1),
            ratio(ours.train_samples_per_second, train),
            ours.val_samples_per_second,
            value(val, 1),
            ratio(ours.val_samples_per_second, val),
            mib(ours.peak_rss_bytes),
            theirs.as_ref().map_or_else(|| "n/a".into(), |t| mib(t.peak_rss_bytes)),
            ours.val_accuracy,
            value(theirs.as_ref().map(|t| t.val_accuracy), 2),
        );
    }
    // MoPE's cost over sequential fusion: the ratio of their training rates, on each side.
    let rate = |name: &str, theirs: bool| {
        rows.iter().find(|(m, ..)| m == name).and_then(|(_, o, t)| if theirs { t.as_ref().map(|t| t.train_samples_per_second) } else { Some(o.train_samples_per_second) })
    };
    if let (Some(seq), Some(mope)) = (rate("sequential", false), rate("mope", false)) {
        let theirs = rate("sequential", true).zip(rate("mope", true)).map(|(s, m)| format!("{:.2}", s / m));
        println!("\nMoPE's step over sequential fusion's: ours {:.2}x, PyTorch {}x", seq / mope, theirs.unwrap_or_else(|| "n/a".into()));
    }
    if let Some((_, ours, Some(theirs))) = rows.first() {
        eprintln!("ours {}, reference {} ({threads} CPU threads)", ours.label, theirs.label);
    }
    Ok(())
}
