//! One writer per run directory: a lock file naming the training process that holds it.
//!
//! `<run>/.lock` holds `<pid> <host>`. It is created exclusively when training starts and removed
//! when the holder lets go (also on an error; a killed process leaves it behind). A second
//! training of the same directory is refused with the holder's process id and host; a lock
//! left by a process of this host that no longer runs is taken over with a warning. Reading a
//! run (`eval`, `predict`, `plot`) takes no lock.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const LOCK_FILE: &str = ".lock";

/// The lock of a run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    holder: Holder,
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: u32,
    host: String,
}

impl Holder {
    fn this_process() -> Self {
        Self { pid: std::process::id(), host: host_name() }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        Some(Self { pid, host: parts.next().unwrap_or("unknown").to_string() })
    }

    /// Whether the holder still runs; `None` when that cannot be known (another host, no `/proc`).
    fn is_running(&self) -> Option<bool> {
        let proc = Path::new("/proc");
        (self.host == host_name() && proc.is_dir()).then(|| proc.join(self.pid.to_string()).exists())
    }
}

/// This machine's name, as the lock records it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl RunLock {
    /// Takes the lock of the run directory `run` (which must exist).
    ///
    /// # Errors
    /// If another process holds it (its pid and host are named), or the lock file cannot be
    /// written.
    pub fn acquire(run: &Path) -> Result<Self> {
        let path = run.join(LOCK_FILE);
        let me = Holder::this_process();
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    writeln!(file, "{} {}", me.pid, me.host).with_context(|| format!("{}: cannot write the lock", path.display()))?;
                    return Ok(Self { path, holder: me });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let Some(holder) = Holder::parse(&text) else {
                        bail!("{}: a lock that names no process ({text:?}); remove it if no training runs in {}", path.display(), run.display());
                    };
                    match holder.is_running() {
                        Some(false) => {
                            eprintln!(
                                "warning: {} was locked by process {} on {}, which no longer runs (killed?); taking it over",
                                run.display(),
                                holder.pid,
                                holder.host
                            );
                            std::fs::remove_file(&path).with_context(|| format!("{}: cannot remove the stale lock", path.display()))?;
                        }
                        Some(true) => bail!(
                            "{} is in use: process {} on {} is training into it (lock {}); wait for it, or train into another --run-dir",
                            run.display(),
                            holder.pid,
                            holder.host,
                            path.display()
                        ),
                        None => bail!(
                            "{} is locked by process {} on {}, which cannot be checked from here (lock {}); remove the lock if that process is gone",
                            run.display(),
                            holder.pid,
                            holder.host,
                            path.display()
                        ),
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("{}: cannot create the lock", path.display())),
            }
        }
        bail!("{}: another process took the lock while a stale one was replaced", path.display())
    }
}

impl Drop for RunLock {
    /// Removes the lock file, if it is still this holder's.
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).ok().and_then(|t| Holder::parse(&t)).is_some_and(|h| h == self.holder) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), format!("{} {}", std::process::id(), host_name()));
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("is in use: process {} on {}", std::process::id(), host_name())), "{err}");
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released");
        RunLock::acquire(dir.path()).unwrap();
    }

    /// Two processes: a lock held by a running child is respected; once the child is gone its
    /// lock is taken over.
    #[test]
    fn a_lock_of_a_process_that_is_gone_is_taken_over() {
        if !Path::new("/proc").is_dir() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), format!("{} {}\n", child.id(), host_name())).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("process {} on", child.id())), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.holder, Holder::this_process());
    }

    #[test]
    fn a_lock_from_another_host_is_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "12345 some-other-machine\n").unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("locked by process 12345 on some-other-machine, which cannot be checked from here"), "{err}");
        // Dropping someone else's lock file is not ours to do.
        assert!(dir.path().join(LOCK_FILE).exists());
    }
}
