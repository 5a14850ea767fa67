//! The `mope` binary's answers to bad input: the file and key, or what is missing, and a failing
//! exit status.

use std::path::Path;
use std::process::{Command, Output};

fn mope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mope")).args(args).output().expect("mope runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_spec(dir: &Path, body: &str) -> String {
    let path = dir.join("exp.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

const MODEL: &str = "[model]\nmethod = \"mope\"\nmain = \"all-minilm-l6-v2\"\ncomplementary = \"mobilenet-v2\"\n";

#[test]
fn unknown_keys_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &format!("[data]\ndataset = \"jsonl\"\nroot = \"x\"\n{MODEL}[train]\nlrr = 1\n"));
    let out = mope(&["train", &spec, "--dry-run"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("exp.toml: `train.lrr`: unknown field `lrr`"), "{err}");

    let out = mope(&["train", &spec, "--set", "train.epochs"]);
    assert!(stderr(&out).contains("expected section.key=value"), "{}", stderr(&out));
}

#[test]
fn missing_data_and_a_text_encoder_for_segmentation_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &format!("[data]\ndataset = \"jsonl\"\nroot = \"{}\"\n{MODEL}", dir.path().join("nowhere").display()));
    let err = stderr(&mope(&["train", &spec, "--dry-run"]));
    assert!(err.contains("nowhere/labels.txt"), "{err}");

    let nyu = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/nyudv2");
    let spec = write_spec(dir.path(), &format!("[data]\ndataset = \"nyudv2\"\nroot = \"{}\"\n{MODEL}", nyu.display()));
    let err = stderr(&mope(&["train", &spec, "--dry-run"]));
    assert!(err.contains("segmentation needs an image main encoder") && err.contains("`all-minilm-l6-v2` is not one"), "{err}");
}

#[test]
fn eval_of_a_directory_that_is_not_a_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr(&mope(&["eval", &dir.path().to_string_lossy()]));
    assert!(err.contains("config.toml"), "{err}");
    let err = stderr(&mope(&["plot", &dir.path().to_string_lossy()]));
    assert!(err.contains("task.json") && err.contains("is this a run directory?"), "{err}");
}
