//! Conventions every Rust file of the workspace follows: it opens with a `//!` module doc, and no
//! test is hidden behind `#[ignore]`.

use std::path::{Path, PathBuf};

/// Checks every `.rs` file under `crates/`, `xtask/` and `benches/` of `root`. Returns the number
/// of files checked, or one message per problem, naming the file and line.
pub fn check(root: &Path) -> Result<usize, Vec<String>> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "benches"] {
        collect(&root.join(dir), &mut files);
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}:1: missing `//!` module doc at the top", file.display()));
        }
        let ignore = ["#[", "ignore]"].concat();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with(&ignore) {
                problems.push(format!("{}:{}: ignored test; fix or delete it", file.display(), i + 1));
            }
        }
    }
    if problems.is_empty() { Ok(files.len()) } else { Err(problems) }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = check(&root).unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
        assert!(files > 10, "found only {files} Rust files: wrong root?");
    }

    #[test]
    fn reports_missing_docs_and_ignored_tests() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("crates/x/src")).unwrap();
        let ignore = ["#[", "ignore]"].concat();
        std::fs::write(dir.join("crates/x/src/lib.rs"), format!("fn f() {{}}\n{ignore}\nfn g() {{}}\n")).unwrap();
        let problems = check(&dir).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].ends_with("lib.rs:1: missing `//!` module doc at the top"));
        assert!(problems[1].ends_with("lib.rs:2: ignored test; fix or delete it"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidy-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
