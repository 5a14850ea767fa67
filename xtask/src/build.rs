//! Building the `mope` binary the experiments run on, in the profile asked for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The cargo profile `mope` is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Everything optimised: the main job's default (docs/performance.md has the measured
    /// difference).
    Release,
    /// The workspace's own crates unoptimised, sharing the build of `cargo test`: for smoke runs.
    Dev,
}

impl FromStr for Profile {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "release" => Ok(Self::Release),
            "dev" => Ok(Self::Dev),
            other => bail!("unknown profile `{other}`: release or dev"),
        }
    }
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }

    /// The directory of the target folder cargo writes this profile to.
    fn dir(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }
}

/// Builds `mope` (with the backend feature of `device`); returns its path.
pub fn mope(root: &Path, profile: Profile, device: Option<&str>) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join(profile.dir()).join(if cfg!(windows) { "mope.exe" } else { "mope" });
    let first = if binary.exists() { "" } else { "; a first build compiles burn and takes several minutes" };
    crate::phase(&format!("building mope ({} profile{first})", profile.name()));
    let start = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root).args(["build", "-p", "train", "--bin", "mope", "--profile", profile.name()]);
    if let Some(feature @ ("wgpu" | "cuda")) = device {
        command.args(["--features", feature]);
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building the mope binary failed ({status})");
    }
    println!("built {} in {:.0} s", binary.display(), start.elapsed().as_secs_f64());
    Ok(binary)
}
