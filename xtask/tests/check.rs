//! `cargo xtask check` as a user meets it: the tools the set-up needs are hidden from `PATH` (or
//! replaced by stand-ins) and the one message must name each missing one, before anything is
//! built or downloaded.

use std::path::Path;
use std::process::{Command, Output};

fn xtask_check(path: &Path, mirror: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.arg("check").env("PATH", path);
    match mirror {
        Some(mirror) => command.env("MOPE_DEBIAN_MIRROR", mirror),
        None => command.env_remove("MOPE_DEBIAN_MIRROR"),
    };
    command.output().expect("xtask runs")
}

/// A stand-in program in `dir` that exits with `code`.
fn stand_in(dir: &Path, name: &str, code: i32) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nexit {code}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn every_missing_tool_is_named_in_one_message() {
    let empty = tempfile::tempdir().unwrap();
    let out = xtask_check(empty.path(), Some("http://archive.example/debian"));
    assert!(!out.status.success());
    let message = String::from_utf8(out.stderr).unwrap();
    for tool in ["python3", "npm", "`cc`"] {
        assert!(message.contains(tool), "`{tool}` is not named in:\n{message}");
    }
    assert!(message.contains("apt-get install npm") && message.contains("apt-get install python3"), "{message}");
    assert!(message.contains("nothing was built or downloaded"), "{message}");
    assert!(message.contains("lacks 3 thing(s)"), "{message}");
}

#[test]
fn python_without_pip_is_named_as_such() {
    let bin = tempfile::tempdir().unwrap();
    stand_in(bin.path(), "python3", 1);
    stand_in(bin.path(), "npm", 0);
    stand_in(bin.path(), "cc", 0);
    let out = xtask_check(bin.path(), Some("http://archive.example/debian"));
    assert!(!out.status.success());
    let message = String::from_utf8(out.stderr).unwrap();
    assert!(message.contains("pip for python3") && message.contains("ensurepip"), "{message}");
    assert!(message.contains("lacks 1 thing(s)"), "{message}");
}

#[test]
fn a_machine_with_everything_passes() {
    let bin = tempfile::tempdir().unwrap();
    for tool in ["python3", "npm", "cc"] {
        stand_in(bin.path(), tool, 0);
    }
    let out = xtask_check(bin.path(), Some("http://archive.example/debian"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Debian archive: http://archive.example/debian"), "{stdout}");
}
