//! Writes that a kill at any instant leaves whole or not done: files written to a temporary name,
//! flushed and renamed; directories filled under a temporary name, flushed and swapped in.
//!
//! A directory `d` is replaced in three renames' worth of states, each of which a reader and
//! [`recover_dir`] understand:
//!
//! ```text
//! .d.partial/  being filled         (the old d/ is whole; recovery removes .d.partial)
//! .d.previous/ + no d/              (between the two renames: recovery renames it back)
//! .d.previous/ + d/                 (the new d/ is whole; recovery removes .d.previous)
//! ```
//!
//! The rename of a directory over an existing one fails on every platform that matters, hence the
//! old one is moved aside first rather than replaced in one rename.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` whole: a kill leaves the old file or the new one, never a part. The
/// temporary is this process's own (`.name.partial-<pid>`), so runs side by side writing one
/// file (a shared feature store) do not write into each other's.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, &format!("partial-{}", std::process::id()));
    let written = (|| {
        std::fs::write(&tmp, bytes)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error).with_context(|| format!("{}: cannot write", path.display()));
    }
    sync_parent(path);
    Ok(())
}

/// Replaces the directory `dir` with what `fill` writes into the empty directory it is given:
/// until `fill` returns and everything it wrote is flushed, `dir` keeps its old content; after,
/// it holds the new. An error of `fill` leaves `dir` as it was.
pub fn replace_dir<T>(dir: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let partial = sibling(dir, "partial");
    remove_dir_if_present(&partial)?;
    std::fs::create_dir_all(&partial).with_context(|| format!("{}: cannot create", partial.display()))?;
    let filled = fill(&partial).and_then(|value| sync_tree(&partial).map(|()| value));
    match filled {
        Ok(value) => {
            swap_in(&partial, dir)?;
            Ok(value)
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(error)
        }
    }
}

/// Moves the whole directory `from` to `to`, replacing what `to` held (the same states as
/// [`replace_dir`]: a kill leaves `to`'s old or new content, or the old one aside as `.to.previous`
/// for [`recover_dir`]).
pub fn swap_in(from: &Path, to: &Path) -> Result<()> {
    let previous = sibling(to, "previous");
    if to.exists() {
        remove_dir_if_present(&previous)?;
        std::fs::rename(to, &previous).with_context(|| format!("{}: cannot move aside to {}", to.display(), previous.display()))?;
    }
    std::fs::rename(from, to).with_context(|| format!("{}: cannot rename to {}", from.display(), to.display()))?;
    sync_parent(to);
    remove_dir_if_present(&previous)
}

/// Completes or undoes a replacement of `dir` that a kill interrupted; called by the one writer
/// of a run before it reads or writes `dir`. Returns whether there was something to mend.
pub fn recover_dir(dir: &Path) -> Result<bool> {
    let (partial, previous) = (sibling(dir, "partial"), sibling(dir, "previous"));
    let mut mended = false;
    if previous.exists() {
        if dir.exists() {
            remove_dir_if_present(&previous)?;
        } else {
            std::fs::rename(&previous, dir).with_context(|| format!("{}: cannot restore as {}", previous.display(), dir.display()))?;
        }
        mended = true;
    }
    if partial.exists() {
        remove_dir_if_present(&partial)?;
        mended = true;
    }
    Ok(mended)
}

/// The directory holding `dir`'s last whole content, for a reader that must not change anything:
/// `dir`, or its old content moved aside when a kill came between a replacement's two renames.
pub fn readable_dir(dir: &Path) -> PathBuf {
    let previous = sibling(dir, "previous");
    if !dir.exists() && previous.exists() { previous } else { dir.to_path_buf() }
}

/// `.name.<what>` beside `path`.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map_or_else(|| "unnamed".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{what}"))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error).with_context(|| format!("{}: cannot remove", dir.display())),
        _ => Ok(()),
    }
}

/// Flushes every file under `dir`, then `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot flush", path.display()))?;
        }
    }
    // Directories cannot be opened for syncing everywhere; where they can, their entries persist.
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// Makes a rename in `path`'s directory persist (best effort: not every platform can).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(handle) = File::open(parent)
    {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("f")).unwrap()
    }

    fn fill(text: &str) -> impl FnOnce(&Path) -> Result<()> + '_ {
        move |d| Ok(std::fs::write(d.join("f"), text)?)
    }

    #[test]
    fn a_directory_is_replaced_whole_and_a_failed_fill_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("last");
        replace_dir(&d, fill("one")).unwrap();
        assert_eq!(read(&d), "one");
        replace_dir(&d, fill("two")).unwrap();
        assert_eq!(read(&d), "two");
        let error = replace_dir(&d, |p| -> Result<()> {
            std::fs::write(p.join("f"), "half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "disk full");
        assert_eq!(read(&d), "two");
        let names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["last"], "no temporary is left");
    }

    /// Each state a kill can leave, built by hand, is read and recovered to a whole directory.
    #[test]
    fn every_state_a_kill_leaves_reads_and_recovers_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("best");
        let (partial, previous) = (sibling(&d, "partial"), sibling(&d, "previous"));
        let make = |dir: &Path, text: &str| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("f"), text).unwrap();
        };
        // Killed while filling: the old content stays.
        make(&d, "old");
        make(&partial, "ha");
        assert_eq!(read(&readable_dir(&d)), "old");
        assert!(recover_dir(&d).unwrap());
        assert_eq!((read(&d), partial.exists()), ("old".into(), false));
        // Killed between the renames: the old content is aside, readers and recovery find it.
        std::fs::rename(&d, &previous).unwrap();
        make(&partial, "new");
        assert_eq!(read(&readable_dir(&d)), "old");
        assert!(recover_dir(&d).unwrap());
        assert_eq!((read(&d), previous.exists(), partial.exists()), ("old".into(), false, false));
        // Killed after the second rename: the new content is whole, the old one goes.
        std::fs::rename(&d, &previous).unwrap();
        make(&d, "new");
        assert_eq!(read(&readable_dir(&d)), "new");
        assert!(recover_dir(&d).unwrap());
        assert_eq!((read(&d), previous.exists()), ("new".into(), false));
        assert!(!recover_dir(&d).unwrap(), "nothing left to mend");
    }

    #[test]
    fn a_file_is_written_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("result.json");
        write_file(&path, b"{}").unwrap();
        write_file(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        let error = write_file(&tmp.path().join("missing/x.json"), b"").unwrap_err();
        assert!(format!("{error:#}").contains("missing/x.json: cannot write"), "{error:#}");
    }
}
