//! `mope`: train, evaluate, predict with and plot MoPE and its baselines.
//!
//! ```text
//! mope train experiments/emoji/mope/experiment.toml [--set train.epochs=3] [--dry-run] [--resume | --overwrite]
//! mope eval runs/emoji/mope [--split test]        # default: test, or val without a test split
//! mope eval runs/emoji/mope --data-root /new/place/emoji --weights /new/models   # a moved dataset
//! mope predict runs/emoji/mope --image cat.png --text "a cat"
//! mope plot runs/emoji/mope
//! mope keys                                         # every experiment key (docs/experiment-keys.md)
//! mope reproduce [emoji food101/mope] [--quick | --seeds N] [--all] [--jobs N] [--list] [--smoke]   # from the repository root
//! mope reproduce food101 --data-dir /datasets --weights-dir /models [--set train.epochs=5]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::{sigmoid, softmax};
use clap::{Parser, Subcommand};
use data::{Sample, SplitName, Target, Task};

use train::{BackendJob, DeviceChoice, ExperimentSpec, FeatureCache, FeatureStores, Logits, Objective, ProgressMode, RunDir, Setup, TrainBackend, TrainOptions, evaluate, load_split, load_splits, run_on};

#[derive(Parser)]
#[command(name = "mope", version, about = "Mixture of Prompt Experts: parameter-efficient multimodal fusion on frozen encoders")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Backend: cpu, wgpu or cuda.
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceChoice,
    /// Loader worker threads (0: one per core).
    #[arg(long, global = true, default_value_t = 0)]
    workers: usize,
    /// Progress as plain lines even on a terminal.
    #[arg(long, global = true)]
    plain: bool,
    /// No progress output.
    #[arg(long, global = true, conflicts_with = "plain")]
    quiet: bool,
}

/// Where a run's dataset and weights are now, if not where its `config.toml` says.
#[derive(clap::Args, Clone, Default)]
struct Moved {
    /// The dataset's root now (replaces the run's `data.root`).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// The weights directory now (replaces the run's `model.weights_dir`).
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Train an experiment; writes the run directory (config, metrics.jsonl, best/ and last/ adapters, result.json).
    Train {
        /// Experiment file (TOML).
        experiment: PathBuf,
        /// Override a value, `section.key=value` (repeatable; official flag names accepted).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run directory (default `runs/<experiment name>`).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue from the run directory's last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace the run the run directory holds (its checkpoints, metrics and result).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Print the resolved experiment and the trainable-parameter table, and stop.
        #[arg(long)]
        dry_run: bool,
    },
    /// Evaluate a run's best adapter on a split.
    Eval {
        /// Run directory.
        run: PathBuf,
        #[command(flatten)]
        moved: Moved,
        /// Split: train, val or test (default: test, or val for a dataset without a test split,
        /// such as NYUDv2 and SUN RGB-D).
        #[arg(long)]
        split: Option<String>,
    },
    /// Classify one sample with a run's best adapter; prints the label and the routing.
    Predict {
        /// Run directory.
        run: PathBuf,
        #[command(flatten)]
        moved: Moved,
        /// Image file.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Depth image file.
        #[arg(long)]
        depth: Option<PathBuf>,
        /// Audio file (WAV).
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Text.
        #[arg(long)]
        text: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the experiments of `experiments/` (those tagged `default` if none is named) and print the
    /// table of results; what `cargo xtask reproduce` runs after the set-up.
    Reproduce {
        /// Experiments (`emoji/mope`) or datasets (`emoji`).
        names: Vec<String>,
        /// The repository: the folder holding `experiments/`, where `runs/` is written.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// List the experiments with their data and results, and stop.
        #[arg(long)]
        list: bool,
        /// Resolve each experiment and its trainable parameters without training.
        #[arg(long)]
        dry_run: bool,
        /// One epoch on a few samples per experiment, into `runs/smoke/`.
        #[arg(long)]
        smoke: bool,
        /// Train again even where a result is newer than its experiment.
        #[arg(long)]
        force: bool,
        /// Seeds per experiment (the first N of 42, 1, 2, 3, 4).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
        seeds: u8,
        /// One seed per experiment (`--seeds 1`): a first table in minutes.
        #[arg(long, conflicts_with = "seeds")]
        quick: bool,
        /// Also the experiments tagged `all` (those the claims do not need).
        #[arg(long)]
        all: bool,
        /// Runs side by side, the cores shared among them; default 2 on the CPU (where a run of
        /// these sizes keeps two cores busier one thread each), 1 on a GPU.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: Option<u16>,
        /// Where the datasets are: an experiment's `data.root = "data/<name>"` becomes
        /// `<DIR>/<name>` (default: `data/` in the repository).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Where the weights are, one folder per preset name (default: `$MOPE_WEIGHTS_DIR`, else
        /// `.assets/models`).
        #[arg(long, value_name = "DIR")]
        weights_dir: Option<PathBuf>,
        /// A `section.key=value` given to every experiment (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Print every experiment key: its section, type, default, official name and meaning
    /// (Markdown; docs/experiment-keys.md is this).
    Keys,
    /// Draw training curves, expert usage per layer and per-class routing (PNG and SVG).
    Plot {
        /// Run directory.
        run: PathBuf,
        /// Output directory (default `<run>/plots`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    train::tune_glibc_malloc();
    let cli = Cli::parse();
    let progress = if cli.quiet {
        ProgressMode::Quiet
    } else if cli.plain {
        ProgressMode::Lines
    } else {
        ProgressMode::Auto
    };
    let common = Common { workers: cli.workers, progress };
    match cli.command {
        Command::Train { experiment, overrides, run_dir, resume, overwrite, dry_run } => {
            let spec = ExperimentSpec::load(&experiment, &overrides)?;
            let resolved = if dry_run { spec.to_toml_with_sources(&experiment, &overrides)? } else { String::new() };
            // The run records where everything is, from wherever it is read later.
            let spec = spec.with_absolute_paths()?;
            let run_dir = run_dir.unwrap_or_else(|| Path::new("runs").join(&spec.name));
            if !dry_run {
                // Before the minutes of loading: train() checks again under the run's lock.
                RunDir::refuse_unasked_overwrite(&run_dir, resume, overwrite)?;
            }
            run_on(cli.device, TrainJob { spec, resolved, run_dir, resume, overwrite, dry_run, common })
        }
        Command::Eval { run, moved, split } => {
            let split = match split.as_deref() {
                None => None,
                Some("train") => Some(SplitName::Train),
                Some("val") => Some(SplitName::Val),
                Some("test") => Some(SplitName::Test),
                Some(other) => bail!("unknown split `{other}`; expected train, val or test"),
            };
            run_on(cli.device, EvalJob { run, moved, split, common })
        }
        Command::Predict { run, moved, image, depth, audio, text, json } => {
            let sample = Sample { id: "input".into(), image, depth, audio, text, target: Target::Class(0) };
            run_on(cli.device, PredictJob { run, moved, sample, json })
        }
        Command::Reproduce { names, root, list, dry_run, smoke, force, seeds, quick, all, jobs, data_dir, weights_dir, sets } => {
            if !root.join("experiments").is_dir() {
                bail!("{}: no experiments/ folder here; run from the repository root or pass --root", root.display());
            }
            let root = std::path::absolute(&root)?;
            let names = names.into_iter().map(|n| n.trim_end_matches('/').to_string()).collect();
            let device = match cli.device {
                DeviceChoice::Cpu => None,
                DeviceChoice::Wgpu => Some("wgpu".to_string()),
                DeviceChoice::Cuda => Some("cuda".to_string()),
            };
            let seeds = if quick { 1 } else { seeds as usize };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let jobs = jobs.map_or(if device.is_none() { cores.min(2) } else { 1 }, usize::from);
            let (data_dir, weights_dir) = (data_dir.map(std::path::absolute).transpose()?, weights_dir.map(std::path::absolute).transpose()?);
            let options = train::ReproduceOptions { names, list, dry_run, smoke, force, device, seeds, all, jobs, data_dir, weights_dir, sets };
            train::run_experiments(&root, &std::env::current_exe()?, &options)
        }
        Command::Keys => {
            print!("{}", train::keys::reference());
            Ok(())
        }
        Command::Plot { run, out } => {
            let out = out.unwrap_or_else(|| run.join("plots"));
            for file in train::plot_run(&run, &out)? {
                println!("{}", file.display());
            }
            Ok(())
        }
    }
}

#[derive(Clone, Copy)]
struct Common {
    workers: usize,
    progress: ProgressMode,
}

struct TrainJob {
    spec: ExperimentSpec,
    /// The resolved experiment with each value's source (dry runs only).
    resolved: String,
    run_dir: PathBuf,
    resume: bool,
    overwrite: bool,
    dry_run: bool,
    common: Common,
}

impl BackendJob for TrainJob {
    type Output = ();

    fn run<B: TrainBackend>(self) -> Result<()> {
        let device = Default::default();
        let (splits, objective, labels) = load_splits(&self.spec)?;
        let setup = Setup::<B>::load(&self.spec, labels, objective, &device)?;
        let summary = setup.model.summary();
        if self.dry_run {
            println!("# resolved experiment (after each value: from the file, a --set, or the default)\n{}", self.resolved);
            println!("{}\n{summary}", summary.table());
            return Ok(());
        }
        eprintln!("{summary}");
        let run = RunDir::open(&self.run_dir)?;
        let options = TrainOptions { resume: self.resume, overwrite: self.overwrite, progress: self.common.progress, workers: self.common.workers };
        let result = train::train(&self.spec, setup, &splits, &run, &options)?;
        println!(
            "{}: {} {} {:.2} (best epoch {}, val {:.2}); {} trainable of {} params; adapter {} in {}",
            result.name,
            result.split,
            result.metric,
            result.value,
            result.best_epoch,
            result.best_val,
            mope_core::thousands(result.trainable_params),
            mope_core::thousands(result.total_params),
            mope_core::human_bytes(result.adapter_bytes),
            run.best().display()
        );
        Ok(())
    }
}

/// A trained run: its experiment (with the dataset and weights where `moved` says they are now),
/// labels and the model with the best adapter.
fn open_run<B: TrainBackend>(run: &Path, moved: &Moved) -> Result<(ExperimentSpec, Setup<B::InnerBackend>)> {
    let mut spec = ExperimentSpec::load(&run.join("config.toml"), &[])?;
    if let Some(root) = &moved.data_root {
        spec.data.root = std::path::absolute(root)?;
    }
    if let Some(weights) = &moved.weights {
        spec.model.weights_dir = std::path::absolute(weights)?;
    }
    let task = train::RunTask::read(run)?;
    let device = Default::default();
    let setup = Setup::<B::InnerBackend>::load(&spec, task.labels, task.objective, &device)?;
    let best = train::durable::readable_dir(&run.join("best"));
    let (model, _) = setup.model.load_adapter(&best).with_context(|| {
        let (config, run) = (run.join("config.toml"), run.display());
        format!(
            "the best adapter in {} cannot be read: if a training into {run} is running, wait for it; if it was killed before its first epoch ended, \
             continue it (`mope train {} --run-dir {run} --resume`); otherwise train it again (`--overwrite`)",
            best.display(),
            config.display()
        )
    })?;
    Ok((spec, Setup { model, ..setup }))
}

struct EvalJob {
    run: PathBuf,
    moved: Moved,
    /// `None`: test, or val where the dataset has no test split.
    split: Option<SplitName>,
    common: Common,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: TrainBackend>(self) -> Result<()> {
        let (spec, setup) = open_run::<B>(&self.run, &self.moved)?;
        let split = match self.split {
            Some(name) => load_split(&spec.data, name, spec.train.seed)?,
            None => match load_split(&spec.data, SplitName::Test, spec.train.seed) {
                Err(data::DataError::NoSuchSplit { dataset, .. }) => {
                    eprintln!("{dataset} has no test split: evaluating on val, as training tested (--split names another)");
                    load_split(&spec.data, SplitName::Val, spec.train.seed)?
                }
                loaded => loaded?,
            },
        };
        eprintln!("{}", split.summary());
        let mut cache = FeatureCache::for_model(&setup.model, setup.feature_stores.clone(), setup.objective.is_dense());
        let samples = Arc::new(split.samples);
        let report = evaluate(
            &setup.model,
            &setup.prepare,
            setup.objective,
            &mut cache,
            &split.split.to_string(),
            &samples,
            spec.train.eval_batch_size,
            self.common.workers,
            self.common.progress,
        )?
        .report();
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}

/// The probability above which `predict` counts a label of a multi-label task as predicted (a
/// logit above 0, as evaluation's F1 counts it).
const MULTI_LABEL_THRESHOLD: f32 = 0.5;

struct PredictJob {
    run: PathBuf,
    moved: Moved,
    sample: Sample,
    json: bool,
}

impl BackendJob for PredictJob {
    type Output = ();

    fn run<B: TrainBackend>(self) -> Result<()> {
        let (_, setup) = open_run::<B>(&self.run, &self.moved)?;
        if matches!(setup.objective, Task::Segmentation { .. }) {
            bail!("predict classifies one sample; evaluate segmentation runs with `mope eval`");
        }
        let device = Default::default();
        let pair = setup.prepare.prepare_one(&self.sample)?;
        let items = [pair];
        let mut cache = FeatureCache::for_model(&setup.model, FeatureStores::default(), false);
        let inputs = cache.inputs::<B::InnerBackend>(&setup.model, &setup.prepare, "predict", &items, &device)?;
        let out = setup.objective.forward(&setup.model, inputs);
        let Logits::Scores(logits) = out.logits else { unreachable!("classification scores") };
        let probabilities = match setup.objective {
            Task::Classification { .. } => softmax(logits, 1),
            Task::MultiLabel { .. } => sigmoid(logits),
            Task::Segmentation { .. } => unreachable!("refused above"),
        };
        let p: Vec<f32> = probabilities.into_data().convert::<f32>().to_vec().expect("floats");
        let mut ranked: Vec<(usize, f32)> = p.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let routing: Vec<(train::Site, Vec<f32>)> =
            out.routing.iter().map(|(site, w)| (*site, w.to_data().convert::<f32>().to_vec().expect("floats"))).collect();
        // What the run predicts: the most probable class; for multi-label tasks every label
        // whose probability is above 0.5, as evaluation counts them (logit > 0).
        let multi_label = matches!(setup.objective, Task::MultiLabel { .. });
        let predicted: Vec<&str> = if multi_label {
            ranked.iter().filter(|(_, p)| *p > MULTI_LABEL_THRESHOLD).map(|(c, _)| setup.labels[*c].as_str()).collect()
        } else {
            vec![setup.labels[ranked[0].0].as_str()]
        };
        if self.json {
            let top: Vec<_> = ranked.iter().take(5).map(|(c, p)| serde_json::json!({"label": setup.labels[*c], "probability": p})).collect();
            let routing: Vec<_> = routing.iter().map(|(s, w)| serde_json::json!({"expert": s.expert, "layer": s.layer, "weights": w})).collect();
            let mut out = serde_json::json!({"predicted": predicted, "top": top, "routing": routing});
            if multi_label {
                out["threshold"] = serde_json::json!(MULTI_LABEL_THRESHOLD);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else if multi_label {
            let set = if predicted.is_empty() { "none".to_string() } else { predicted.join(", ") };
            println!("labels above {MULTI_LABEL_THRESHOLD}: {set}");
            for (c, p) in ranked.iter().take(5) {
                println!("  {} ({:.1}%)", setup.labels[*c], 100.0 * p);
            }
        } else {
            let (best, probability) = ranked[0];
            println!("{} ({:.1}%)", setup.labels[best], 100.0 * probability);
            for (c, p) in ranked.iter().skip(1).take(4) {
                println!("  {} ({:.1}%)", setup.labels[*c], 100.0 * p);
            }
            for (site, weights) in &routing {
                let w: Vec<String> = weights.iter().map(|v| format!("{v:.2}")).collect();
                match site.expert {
                    None => println!("layer {:>2} experts [{}]", site.layer, w.join(" ")),
                    Some(k) => println!("expert {k} layer {:>2} sources [{}]", site.layer, w.join(" ")),
                }
            }
        }
        Ok(())
    }
}
