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
//! mope reproduce --list | --dry-run | --smoke | --force | --device cuda | --jobs 1
//! ```
//! On the CPU two runs go side by side by default (`--jobs`), each with its share of the cores and
//! its output in `train.log` in its run directory; the results do not depend on it. The runs
//! expected to take longest start first (their last wall time, else a guess from the method).
//! A result newer than its experiment file is reused unless `--force`; a run interrupted after an
//! epoch resumes from its last checkpoint. The table so far is printed after each experiment, with
//! the time left estimated from the runs so far. `--smoke` runs every selected experiment for
//! seconds (one seed, one epoch on a few samples) into `runs/smoke/`: what CI runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use crate::RunResult;
use crate::claims::{Role, Runs, claims, seed_table, table};
use crate::routing_report::{dispatch_tables, routing_table};
use crate::run_dir::RunTask;
use crate::predictions::mean_of_experts;
use crate::spec::{ExperimentSpec, Method};

/// The seeds of a reproduction, in order: `--seeds N` runs the first N.
pub const SEEDS: [u64; 5] = [42, 1, 2, 3, 4];

const SMOKE: &[&str] = &[
    "train.epochs=1",
    "train.min_epochs=0",
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
    /// Runs side by side (at least 1). Each gets an equal share of the cores: on a CPU, runs of
    /// these sizes keep two cores busier one thread each than one run with two threads (docs/performance.md).
    pub jobs: usize,
    /// Where the datasets are, instead of `<root>/data`: an experiment's `data.root` of
    /// `data/<name>` becomes `<data_dir>/<name>`.
    pub data_dir: Option<PathBuf>,
    /// Where the weights are (`model.weights_dir` of every experiment).
    pub weights_dir: Option<PathBuf>,
    /// `key=value` settings given to every experiment (`mope train --set`).
    pub sets: Vec<String>,
}

/// Threads per run when `concurrent` runs share the cores (0 for one run: its own choice, every
/// core).
fn threads_per_job(concurrent: usize) -> usize {
    if concurrent <= 1 {
        return 0;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / concurrent).max(1)
}

/// One experiment file, checked as `mope train` checks it.
#[derive(Debug)]
struct Experiment {
    spec: ExperimentSpec,
    path: PathBuf,
    /// `data.root`, resolved against the repository root or `--data-dir`.
    data_root: PathBuf,
    /// `model.weights_dir` (or `--weights-dir`), resolved against the repository root.
    weights_dir: PathBuf,
    /// The repository root, against which relative locations are read.
    root: PathBuf,
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

/// The experiment in `path`, with the settings every run gets (`options.sets`) if `with_sets`,
/// and its data and weights where `options` says.
fn load_experiment(root: &Path, path: PathBuf, options: &ReproduceOptions, with_sets: bool) -> Result<Experiment> {
    let sets: &[String] = if with_sets { &options.sets } else { &[] };
    let spec = ExperimentSpec::load(&path, sets).with_context(|| format!("{} with the --set given to every experiment", path.display()))?;
    let data_root = match (&options.data_dir, spec.data.root.strip_prefix("data")) {
        (Some(data_dir), Ok(rest)) => data_dir.join(rest),
        _ => root.join(&spec.data.root),
    };
    let weights_dir = root.join(options.weights_dir.clone().unwrap_or_else(|| spec.weights_dir()));
    Ok(Experiment { data_root, weights_dir, root: root.to_path_buf(), spec, path })
}

/// The experiments of `root/experiments` as their files say (the `--set`s apply to the chosen
/// ones only: one may not fit another experiment), their data and weights where `options` says.
fn discover(root: &Path, options: &ReproduceOptions) -> Result<Vec<Experiment>> {
    let mut found = Vec::new();
    let dir = root.join("experiments");
    let mut datasets: Vec<PathBuf> = std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    datasets.sort();
    for dataset in datasets {
        let mut methods: Vec<PathBuf> = std::fs::read_dir(&dataset)?.filter_map(|e| e.ok().map(|e| e.path().join("experiment.toml"))).filter(|p| p.is_file()).collect();
        methods.sort();
        for path in methods {
            found.push(load_experiment(root, path, options, false)?);
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
    let all = discover(root, options)?;
    let chosen: Vec<Experiment> = select(&all, &options.names, options.all)?.into_iter().map(|e| load_experiment(root, e.path.clone(), options, true)).collect::<Result<_>>()?;
    let chosen: Vec<&Experiment> = chosen.iter().collect();
    let runs = if options.smoke { root.join("runs/smoke") } else { root.join("runs") };
    if options.list {
        list(&all, &runs);
        return Ok(());
    }
    // A smoke run and a dry run resolve each experiment once: their seeds would differ in nothing.
    let seeds = &SEEDS[..if options.smoke || options.dry_run { 1 } else { options.seeds.clamp(1, SEEDS.len()) }];
    let jobs: Vec<(&Experiment, u64)> = chosen.iter().flat_map(|&e| seeds.iter().map(move |&s| (e, s))).collect();
    // A dry run prints each experiment's resolved config: one at a time, to the terminal.
    let concurrent = if options.dry_run { 1 } else { options.jobs.clamp(1, jobs.len().max(1)) };
    let threads = threads_per_job(concurrent);
    if concurrent > 1 && !options.dry_run {
        let each = if threads == 1 { "1 thread".to_string() } else { format!("{threads} threads") };
        eprintln!("{} runs, {concurrent} at a time ({each} each); each run's output goes to train.log in its run directory", jobs.len());
    }
    // Each job's outcome, in job order; the table so far is printed as jobs finish.
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    // Jobs are each experiment's seeds in turn: one estimate per experiment, repeated per seed.
    let expected: Vec<f64> = chosen.iter().flat_map(|e| std::iter::repeat_n(expected_seconds(e, &runs), seeds.len())).collect();
    let order = longest_first(&expected);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrent {
            scope.spawn(|| {
                while let Some(&index) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let (e, seed) = jobs[index];
                    // The run's place in the listing, whatever order the runs start in.
                    let position = format!("[{}/{}]", index + 1, jobs.len());
                    let run_dir = runs.join(e.name()).join(format!("seed-{seed}"));
                    let launch = Launch { position: &position, threads, log: concurrent > 1 };
                    let outcome = run_one(mope, root, e, seed, &run_dir, &launch, options);
                    let mut outcomes = outcomes.lock().expect("no job panics while holding the lock");
                    if concurrent > 1 {
                        match &outcome {
                            Ok(Some((r, Some(seconds)))) => eprintln!("== {position} {} seed {seed}: {} {:.2} ({seconds:.0} s)", e.name(), r.metric, r.value),
                            Err(error) => eprintln!("== {position} {} seed {seed}: failed: {error:#}", e.name()),
                            _ => {}
                        }
                    }
                    outcomes[index] = Some(outcome);
                    let done = outcomes.iter().filter(|o| o.is_some()).count();
                    let left = jobs.len() - done;
                    if left > 0 && !options.dry_run {
                        let rows = collect_rows(&jobs, &outcomes);
                        if !rows.is_empty() {
                            // Each job: not done (None), done in so many seconds, or done without training.
                            let finished: Vec<Option<Option<f64>>> = outcomes.iter().map(|o| Some(o.as_ref()?.as_ref().ok().and_then(|r| r.as_ref()?.1))).collect();
                            let eta = match time_left(&expected, &finished, concurrent) {
                                Some(seconds) => format!("; about {:.0} min left, {:.0} min so far", seconds / 60.0, started.elapsed().as_secs_f64() / 60.0),
                                None => String::new(),
                            };
                            eprintln!("\n== the table so far ({done} of {} runs{eta}):\n{}", jobs.len(), table(&rows));
                        }
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("the jobs are done");
    let mut rows = collect_rows(&jobs, &outcomes);
    let failures: Vec<String> = jobs
        .iter()
        .zip(&outcomes)
        .filter_map(|((e, seed), o)| match o {
            Some(Err(error)) => Some(format!("{} (seed {seed}): {error:#}", e.name())),
            _ => None,
        })
        .collect();
    if !options.dry_run {
        add_mean_of_experts(&chosen, &runs, &mut rows);
    }
    if !rows.is_empty() {
        let describe = |name: &str| {
            let experiment = chosen.iter().find(|e| e.name() == name)?;
            let seed = rows.iter().find(|r| r.name == name)?.results.first()?.seed;
            let task = RunTask::read(&runs.join(name).join(format!("seed-{seed}"))).ok()?;
            Some((experiment.spec.model.experts.clone(), task.labels))
        };
        let (table, seed_table, claims) = (table(&rows), seed_table(&rows), claims(&rows));
        let routing = format!("{}\n{}", routing_table(&rows), dispatch_tables(&rows, &describe));
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

/// How long a run of `e` is expected to take: the mean time of its runs under `runs` where an
/// earlier reproduction left some newer than the experiment file (wall time, or the training
/// time where that is longer: a resumed run's wall time is its last invocation's; a run older
/// than its experiment was trained as something else), else a guess from its method (several
/// prompted experts or a whole encoder training, then the prompted methods, then late fusion).
fn expected_seconds(e: &Experiment, runs: &Path) -> f64 {
    let earlier: Vec<f64> = SEEDS
        .iter()
        .map(|seed| runs.join(e.name()).join(format!("seed-{seed}")).join("result.json"))
        .filter(|result| newer(result, &e.path))
        .filter_map(|result| read_result(&result).ok().flatten())
        .map(|r| r.wall_seconds.max(r.train_seconds))
        .collect();
    if !earlier.is_empty() {
        return earlier.iter().sum::<f64>() / earlier.len() as f64;
    }
    match e.method() {
        Method::Pmoe | Method::MeanOfExperts | Method::FineTuning => 600.0,
        Method::Mope | Method::Sequential | Method::PromptTuning => 200.0,
        Method::LateFusion => 100.0,
    }
}

/// Seconds left of a reproduction whose job `i` was expected to take `expected[i]` seconds
/// ([`expected_seconds`]) and is not done (`done[i]` `None`), done in so many seconds
/// (`Some(Some(seconds))`) or done without training (`Some(None)`: reused, or failed). The
/// unfinished jobs' expectations, corrected by how the trained ones compared with theirs (the
/// ratio of the sums, so one odd run moves it little), `concurrent` at a time. `None` before any
/// job has trained: reused jobs took no time and say nothing of the machine.
fn time_left(expected: &[f64], done: &[Option<Option<f64>>], concurrent: usize) -> Option<f64> {
    let (took, thought) = expected.iter().zip(done).filter_map(|(e, d)| Some((d.flatten()?, e))).fold((0.0, 0.0), |(a, b), (t, e)| (a + t, b + e));
    if thought <= 0.0 {
        return None;
    }
    let unfinished: f64 = expected.iter().zip(done).filter(|(_, d)| d.is_none()).map(|(e, _)| e).sum();
    Some(unfinished * (took / thought) / concurrent.max(1) as f64)
}

/// The order in which to start runs expected to take `seconds`: longest first (ties in their
/// given order), so that the runs still going at the end are short ones and no core waits long
/// for the last of them.
fn longest_first(seconds: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..seconds.len()).collect();
    order.sort_by(|&a, &b| seconds[b].total_cmp(&seconds[a]));
    order
}

/// The rows of the finished jobs, in job order.
fn collect_rows(jobs: &[(&Experiment, u64)], outcomes: &[Option<Outcome>]) -> Vec<Runs> {
    let mut rows: Vec<Runs> = Vec::new();
    for ((e, _), outcome) in jobs.iter().zip(outcomes) {
        let Some(Ok(Some((result, _)))) = outcome else { continue };
        match rows.iter_mut().find(|r| r.name == e.name()) {
            Some(runs) => runs.results.push(result.clone()),
            None => rows.push(Runs::new(&e.spec, e.paper_value(), result.clone())),
        }
    }
    rows
}

/// For each pMoE experiment whose experts each have a single-expert experiment among the rows,
/// the row `<dataset>/mean-of-experts`: the mean of those runs' predictions, seed by seed
/// ([`mean_of_experts`]), placed after the last of them. A seed that lacks a run or its
/// predictions is left out, with a note.
fn add_mean_of_experts(chosen: &[&Experiment], runs_dir: &Path, rows: &mut Vec<Runs>) {
    for pmoe in chosen.iter().filter(|e| Role::of(&e.spec) == Role::Pmoe) {
        let dataset = pmoe.name().split('/').next().unwrap_or_default();
        let singles: Vec<&str> = pmoe
            .spec
            .model
            .experts
            .iter()
            .filter_map(|expert| {
                chosen.iter().find(|e| e.name().starts_with(&format!("{dataset}/")) && Role::of(&e.spec) == Role::SingleExpert && e.spec.model.experts == [expert.clone()]).map(|e| e.name())
            })
            .collect();
        if singles.len() != pmoe.spec.model.experts.len() {
            continue; // some expert was not run alone
        }
        let name = format!("{dataset}/mean-of-experts");
        if chosen.iter().any(|e| e.name() == name) {
            continue; // a mean of experts trained as an experiment of its own
        }
        let mut derived = Runs { name: name.clone(), role: Role::MeanOfExperts, experts: pmoe.spec.model.experts.clone(), paper: None, results: Vec::new() };
        let seeds: Vec<u64> = rows.iter().filter(|r| singles.contains(&r.name.as_str())).flat_map(|r| r.results.iter().map(|r| r.seed)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        for seed in seeds {
            let members: Vec<(&RunResult, PathBuf)> = singles
                .iter()
                .filter_map(|single| {
                    let result = rows.iter().find(|r| r.name == *single)?.results.iter().find(|r| r.seed == seed)?;
                    Some((result, runs_dir.join(single).join(format!("seed-{seed}"))))
                })
                .collect();
            if members.len() != singles.len() {
                continue;
            }
            let members: Vec<(&RunResult, &Path)> = members.iter().map(|(r, dir)| (*r, dir.as_path())).collect();
            match mean_of_experts(&name, &members) {
                Ok(result) => derived.results.push(result),
                Err(error) => eprintln!("note: {name} (seed {seed}) left out: {error:#}"),
            }
        }
        if derived.results.is_empty() {
            continue;
        }
        let at = rows.iter().rposition(|r| singles.contains(&r.name.as_str())).map_or(rows.len(), |i| i + 1);
        rows.insert(at, derived);
    }
}

/// What became of one run: its result and the seconds it trained if it ran now (`None` if its
/// result was reused), nothing for a dry run, or why it failed.
type Outcome = Result<Option<(RunResult, Option<f64>)>>;

/// How one `mope train` child is started.
struct Launch<'a> {
    /// `[i/n]`, for messages.
    position: &'a str,
    /// Threads of its CPU backend (`RAYON_NUM_THREADS`); 0: its own choice.
    threads: usize,
    /// Its output goes to `<run>/train.log` instead of the terminal (runs side by side).
    log: bool,
}

/// Runs experiment `e` with `seed` into `run_dir`, or reuses its result: the result and the
/// seconds it trained if it ran now; nothing for a dry run.
fn run_one(mope: &Path, root: &Path, e: &Experiment, seed: u64, run_dir: &Path, launch: &Launch, options: &ReproduceOptions) -> Outcome {
    let position = launch.position;
    let result_path = run_dir.join("result.json");
    let sets = run_sets(e, seed, options);
    // A result or a checkpoint is of this run only if it was trained with the settings it would
    // be trained with now (the same --set, data and weights, and seed).
    let same_settings = || -> bool {
        let now = ExperimentSpec::load(&e.path, &sets).and_then(|spec| spec.with_absolute_paths_from(root).map_err(|cause| crate::spec::SpecError::Io { path: root.to_path_buf(), cause }));
        let then = ExperimentSpec::load(&run_dir.join("config.toml"), &[]);
        matches!((now, then), (Ok(now), Ok(then)) if now == then)
    };
    let mut reusable = !options.force && !options.smoke && !options.dry_run;
    if reusable && (result_path.exists() || run_dir.join("last").exists()) && !same_settings() {
        eprintln!("== {position} {} seed {seed}: {} was trained with other settings (a --set, --data-dir or --weights-dir differs), running again", e.name(), run_dir.display());
        reusable = false;
    }
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
    if let Some(missing) = e.missing_weights().first() {
        bail!("weights missing: {missing}");
    }
    // An interrupted run goes on from its last epoch, unless the experiment changed since.
    let resume = reusable && newer(&run_dir.join("last"), &e.path);
    eprintln!("\n== {position} {} seed {seed}{}", e.name(), if resume { " (resuming from its last checkpoint)" } else { "" });
    let mut command = Command::new(mope);
    command.current_dir(root).arg("train").arg(&e.path).arg("--run-dir").arg(run_dir).arg("--plain");
    for set in &sets {
        command.args(["--set", set]);
    }
    if let Some(device) = &options.device {
        command.args(["--device", device]);
    }
    if options.dry_run {
        command.arg("--dry-run");
    }
    // Reproduction owns its runs: one not resumed is trained again from the start.
    command.arg(if resume { "--resume" } else { "--overwrite" });
    if options.smoke {
        for set in SMOKE {
            command.args(["--set", set]);
        }
    }
    if launch.threads > 0 {
        command.env("RAYON_NUM_THREADS", launch.threads.to_string());
    }
    let log_path = run_dir.join("train.log");
    let _ = std::fs::remove_file(&log_path); // an earlier run's, side by side
    if launch.log {
        std::fs::create_dir_all(run_dir).with_context(|| format!("{}: cannot create", run_dir.display()))?;
        let log = std::fs::File::create(&log_path).with_context(|| format!("{}: cannot create", log_path.display()))?;
        command.stdout(log.try_clone()?).stderr(log);
    }
    let start = Instant::now();
    let status = command.status().with_context(|| format!("cannot run {}", mope.display()))?;
    if !status.success() {
        let see = if launch.log { format!("; its output is in {}", log_path.display()) } else { String::new() };
        bail!("`mope train` failed ({status}){see}");
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

/// The `--set`s of one run: the user's, the data and weights locations, then the run's seed
/// (the seeds are what a reproduction varies).
fn run_sets(e: &Experiment, seed: u64, options: &ReproduceOptions) -> Vec<String> {
    let mut sets = options.sets.clone();
    if options.data_dir.is_some() {
        sets.push(format!("data.root={}", e.data_root.display()));
    }
    if options.weights_dir.is_some() {
        sets.push(format!("model.weights_dir={}", e.weights_dir.display()));
    }
    sets.push(format!("train.seed={seed}"));
    sets
}

/// Whether `path` exists and was modified after `than`.
fn newer(path: &Path, than: &Path) -> bool {
    matches!((modified(path), modified(than)), (Some(a), Some(b)) if a > b)
}

impl Experiment {
    /// What each of its encoders lacks in its weights folder (one message per encoder).
    fn missing_weights(&self) -> Vec<String> {
        let m = &self.spec.model;
        let names = [&m.main, &m.complementary].into_iter().chain(&m.experts).filter(|n| !n.is_empty());
        let mut seen = Vec::new();
        names
            .filter(|name| !seen.contains(name) && {
                seen.push(*name);
                true
            })
            .map(|name| match name.split_once('=') {
                // A folder of the user's, relative to the repository as `mope train` reads it.
                Some((preset, dir)) if Path::new(dir).is_relative() => (name, format!("{preset}={}", self.root.join(dir).display())),
                _ => (name, name.clone()),
            })
            .filter_map(|(name, resolved)| match backbones::missing_weights(&resolved, &self.weights_dir) {
                Ok(None) => None,
                Ok(Some(missing)) => Some(format!("`{name}`: {missing}")),
                Err(error) => Some(format!("`{name}`: {error}")),
            })
            .collect()
    }
}

/// Every experiment with its tags, whether its data and weights are there, and its result; then
/// what is missing, with where it was looked for and the layout expected.
fn list(all: &[Experiment], runs: &Path) {
    let name_width = all.iter().map(|e| e.name().len()).max().unwrap_or(0).max(10);
    let method_width = all.iter().map(|e| e.method().name().len()).max().unwrap_or(0).max(6);
    println!("{:<name_width$} {:<method_width$} {:<10} {:<8} {:<8} {:>10}", "experiment", "method", "tags", "data", "weights", "result");
    // Each missing folder once, with the experiments that need it.
    let mut missing: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
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
        let data = if e.data_root.exists() {
            "present"
        } else {
            let dataset = serde_json::to_value(e.spec.data.dataset).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            missing.entry(format!("data: no {} (the `{dataset}` layout: datasets/README.md)", e.data_root.display())).or_default().push(e.name());
            "missing"
        };
        let lacking = e.missing_weights();
        let weights = if lacking.is_empty() { "present" } else { "missing" };
        for m in lacking {
            let names = missing.entry(format!("weights: {m}")).or_default();
            if !names.contains(&e.name()) {
                names.push(e.name());
            }
        }
        println!("{:<name_width$} {:<method_width$} {:<10} {:<8} {:<8} {:>10}", e.name(), e.method().name(), e.spec.tags.join(","), data, weights, result);
    }
    if !missing.is_empty() {
        println!("\nmissing (and the experiments that need it):");
        for (what, names) in missing {
            println!("- {what}\n  needed by {}", names.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runners, runs of 1, 1, 2, 2 and 4 minutes listed in that order: started as listed,
    /// the 4-minute run starts last, at minute 3, and ends at 7; longest first ends at 5.
    #[test]
    fn the_longest_runs_start_first_and_ties_keep_their_order() {
        let seconds = [60.0, 60.0, 120.0, 120.0, 240.0];
        assert_eq!(longest_first(&seconds), [4, 2, 3, 0, 1]);
        let makespan = |order: &[usize]| {
            let mut runners = [0.0f64; 2];
            for &i in order {
                let free = if runners[0] <= runners[1] { 0 } else { 1 };
                runners[free] += seconds[i];
            }
            runners[0].max(runners[1])
        };
        assert_eq!((makespan(&[0, 1, 2, 3, 4]), makespan(&longest_first(&seconds))), (420.0, 300.0));
    }

    /// The time left counts the unfinished runs at their expectations, scaled by how the
    /// trained ones compared with theirs: a run expected at 100 s that took 150 s makes the
    /// other runs' 200 + 400 s into 900 s, 450 s on two runners. A run done without training
    /// (reused) is neither left nor evidence.
    #[test]
    fn time_left_scales_the_unfinished_runs_expectations_by_the_trained_ones() {
        assert_eq!(time_left(&[100.0, 200.0, 400.0], &[Some(Some(150.0)), None, None], 2), Some(450.0));
        assert_eq!(time_left(&[100.0, 300.0, 200.0, 400.0], &[Some(Some(150.0)), Some(None), None, None], 2), Some(450.0));
        // Nothing trained yet: no estimate.
        assert_eq!(time_left(&[100.0, 200.0], &[Some(None), None], 2), None);
    }

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
