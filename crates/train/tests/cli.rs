//! The `mope` binary's answers to bad input (the file and key, or what is missing, and a failing
//! exit status), to a run directory it must not overwrite, and to kills.

mod common;

use std::path::Path;
use std::process::Command;

use common::{adapter_tensors, mope, mope_with_allocator, read_result, shapes_prompt_tuning, stderr, write_shapes, write_spec};

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

/// pMoE end to end through the binary: an image dataset in the folder-per-class layout, two
/// experts read from directories of the user's (`<preset>=<dir>`: the ViT and Swin fixtures),
/// training, and a prediction that prints every dispatcher's weights.
#[test]
fn pmoe_trains_on_an_image_folder_with_experts_from_user_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    write_shapes(&data);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backbones/tests/fixtures");
    let spec = write_spec(
        dir.path(),
        &format!(
            "[data]\ndataset = \"image-folder\"\nroot = \"{}\"\ncache_dir = \"\"\n[model]\nmethod = \"pmoe\"\n\
             experts = [\"vit-base-patch16-224={}\", \"swin-base-patch4-window7-224={}\"]\n[pmoe]\nprompt_len = 2\n\
             [train]\nepochs = 1\nbatch_size = 4\ndrop_last = false\n",
            data.display(),
            fixtures.join("tiny-vit").display(),
            fixtures.join("tiny-swin").display()
        ),
    );
    let run = dir.path().join("run");
    let out = mope(&["train", &spec, "--run-dir", &run.to_string_lossy(), "--quiet", "--workers", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = read_result(&run);
    // 24 images: a stratified 70/15/15 split (the folders have no split of their own).
    assert_eq!((result["method"].as_str(), result["split"].as_str(), result["report"]["samples"].as_u64()), (Some("pmoe"), Some("test"), Some(3)));
    // mope re-executed itself with the allocator settings.
    assert_eq!(result["environment"]["allocator"], serde_json::json!(["MALLOC_MMAP_THRESHOLD_=33554432", "MALLOC_TRIM_THRESHOLD_=4294967295"]));
    let image = data.join("red/0.png");
    let out = mope(&["predict", &run.to_string_lossy(), "--image", &image.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    // ViT: 2 layers, Swin: 4 blocks; the top 2 of each are prompted.
    for site in ["expert 0 layer  0 sources", "expert 0 layer  1 sources", "expert 1 layer  2 sources", "expert 1 layer  3 sources"] {
        assert!(stdout.contains(site), "{site} in:\n{stdout}");
    }

    // A setting of the user's own is left alone, and nothing is added to it.
    let run = dir.path().join("run-user-allocator");
    let out = mope_with_allocator(&["train", &spec, "--run-dir", &run.to_string_lossy(), "--quiet", "--workers", "1"], &[("MALLOC_TRIM_THRESHOLD_", "131072")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_result(&run)["environment"]["allocator"], serde_json::json!(["MALLOC_TRIM_THRESHOLD_=131072"]));
}

/// A repository of the user's, `experiments/shapes/<method>/experiment.toml`, over the shapes
/// image folder: two single-expert prompt-tuning experiments on the tiny ViT.
fn shapes_repository(root: &Path) {
    write_shapes(&root.join("data/shapes"));
    let vit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backbones/tests/fixtures/tiny-vit");
    for (method, prompt_len) in [("short", 1), ("long", 3)] {
        let dir = root.join("experiments/shapes").join(method);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("experiment.toml"),
            format!(
                "tags = [\"default\"]\n[data]\ndataset = \"image-folder\"\nroot = \"data/shapes\"\ncache_dir = \"\"\n[model]\nmethod = \"prompt-tuning\"\n\
                 experts = [\"vit-base-patch16-224={}\"]\n[pmoe]\nprompt_len = {prompt_len}\n[train]\nepochs = 1\nbatch_size = 4\ndrop_last = false\n",
                vit.display()
            ),
        )
        .unwrap();
    }
}

/// `mope reproduce`, what `cargo xtask reproduce` hands the experiments to: the default runs once
/// per seed with the table so far after each run, then the table over seeds and each seed's
/// values; a finished result is reused, and a run interrupted after its first epoch goes on from
/// its last checkpoint.
#[test]
fn reproduce_runs_the_default_per_seed_reuses_results_and_resumes_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    shapes_repository(root);
    let root_arg = root.to_string_lossy().into_owned();
    let args = ["reproduce", "--root", &root_arg, "--workers", "1", "--seeds", "2", "--jobs", "2"];

    let out = mope(&args);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert!(out.status.success(), "{err}");
    for line in ["== [1/4] shapes/long seed 42", "== [2/4] shapes/long seed 1", "== [3/4] shapes/short seed 42", "== [4/4] shapes/short seed 1"] {
        assert!(err.contains(line), "{line} in {err}");
    }
    assert!(err.contains("the table so far (1 of 4 runs; about"), "{err}");
    assert!(stdout.contains("| shapes/long | accuracy (test) | ") && stdout.contains(" | 2 | n/a |"), "{stdout}");
    assert!(stdout.contains("| experiment | seed 1 | seed 42 |"), "{stdout}");
    let last_line = stdout.lines().last().unwrap();
    assert!(last_line.starts_with("results: the runs in") && last_line.contains("runs/reproduce.md"), "{last_line}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(root.join("runs/reproduce.json")).unwrap()).unwrap();
    let seeds: Vec<u64> = results.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [42, 1, 42, 1]);
    // Two runs went side by side, each with its output in its train.log; one at a time, the
    // same runs give the same values.
    assert!(err.contains("4 runs, 2 at a time ("), "{err}");
    assert!(std::fs::read_to_string(root.join("runs/shapes/long/seed-42/train.log")).unwrap().contains("test accuracy"));
    let values = |results: &[serde_json::Value]| results.iter().map(|r| r["value"].as_f64().unwrap()).collect::<Vec<_>>();
    let one_at_a_time = mope(&["reproduce", "--root", &root_arg, "--workers", "1", "--seeds", "2", "--jobs", "1", "--force"]);
    assert!(one_at_a_time.status.success(), "{}", stderr(&one_at_a_time));
    let again: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(root.join("runs/reproduce.json")).unwrap()).unwrap();
    assert_eq!(values(&again), values(&results));

    // Interrupted after its epoch: the checkpoint is there, the result is not.
    let long = root.join("runs/shapes/long/seed-42");
    std::fs::remove_file(long.join("result.json")).unwrap();
    let out = mope(&args);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("== [1/4] shapes/long seed 42 (resuming from its last checkpoint)"), "{err}");
    assert!(err.contains("shapes/short seed 1: result newer than the experiment, reused"), "{err}");
    assert!(long.join("result.json").is_file());

    // A changed experiment starts over: neither its result nor its checkpoint is used.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let spec = root.join("experiments/shapes/long/experiment.toml");
    std::fs::write(&spec, std::fs::read_to_string(&spec).unwrap().replace("prompt_len = 3", "prompt_len = 2")).unwrap();
    let err = stderr(&mope(&["reproduce", "shapes/long", "--root", &root_arg, "--workers", "1", "--quick"]));
    assert!(err.contains("== [1/1] shapes/long seed 42\n"), "{err}");

    // A dataset and one of its experiments name that experiment once.
    let err = stderr(&mope(&["reproduce", "shapes", "shapes/long", "--root", &root_arg, "--workers", "1", "--quick"]));
    assert!(err.contains("== [2/2] shapes/short seed 42") && !err.contains("[3/3]"), "{err}");

    let err = stderr(&mope(&["reproduce", "--root", &dir.path().join("data").to_string_lossy()]));
    assert!(err.contains("no experiments/ folder here"), "{err}");
}

/// A directory that holds a run is trained into only when asked: `--resume` continues it,
/// `--overwrite` replaces it; the refusal says what it holds, before anything is loaded.
#[test]
fn a_run_directory_is_not_overwritten_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shapes_prompt_tuning(dir.path(), 1);
    let run = dir.path().join("run");
    let run_arg = run.to_string_lossy().into_owned();
    let train = |extra: &[&str]| mope(&[&["train", &spec, "--run-dir", &run_arg, "--quiet", "--workers", "1"], extra].concat());
    assert!(train(&[]).status.success());
    let first = adapter_tensors(&run);
    let out = train(&[]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).lines().next().unwrap(),
        format!("Error: {run_arg} holds a finished run (result.json): --resume continues it, --overwrite replaces it, or choose another --run-dir")
    );
    assert!(adapter_tensors(&run) == first, "nothing was touched");
    // Interrupted after its checkpoint: said so.
    std::fs::remove_file(run.join("result.json")).unwrap();
    assert!(stderr(&train(&[])).contains("holds a run with a checkpoint after epoch 1: --resume continues it"));
    let out = train(&["--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(adapter_tensors(&run) == first, "the same seed trains the same adapter again");
    assert!(stderr(&train(&["--resume", "--overwrite"])).contains("cannot be used with"));
    // --resume with nothing to continue from does not start again over a result.
    std::fs::remove_dir_all(run.join("last")).unwrap();
    let err = stderr(&train(&["--resume"]));
    assert!(err.contains("holds result.json and best but no checkpoint to continue from"), "{err}");
    assert!(adapter_tensors(&run) == first && run.join("result.json").is_file(), "nothing was touched");
}

/// A small deterministic generator for the kill instants.
fn next_random(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// What must not depend on interruptions: the result's values, the best adapter's tensors, and
/// every logged loss and validation value (times left out).
fn outcome(run: &Path) -> (serde_json::Value, Vec<u8>, Vec<String>) {
    let mut result = read_result(run);
    let kept: serde_json::Map<String, serde_json::Value> = ["value", "best_val", "best_epoch", "epochs", "steps", "report"]
        .iter()
        .map(|k| (k.to_string(), result[*k].take()))
        .collect();
    let events = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            let map = event.as_object_mut().unwrap();
            map.retain(|k, _| !k.contains("second"));
            event.to_string()
        })
        .collect();
    (serde_json::Value::Object(kept), adapter_tensors(run), events)
}

/// Training killed (SIGKILL) 40 times in all is resumed after each kill; every run so interrupted
/// ends with the outcome of an uninterrupted one. Every other kill comes at a random instant of
/// a run (loading, steps, validation, saving); the others as soon as a save is seen under way
/// (its temporary directory appears), so that saves are cut too: what they leave, the resumed
/// run mends.
#[test]
fn training_killed_at_random_instants_resumes_to_the_uninterrupted_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shapes_prompt_tuning(dir.path(), 6);
    let train = |run: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mope"));
        command.args(["train", &spec, "--run-dir", &run.to_string_lossy(), "--quiet", "--workers", "1", "--resume"]);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        command
    };
    let whole = dir.path().join("whole");
    let start = std::time::Instant::now();
    let out = train(&whole).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let span = start.elapsed().as_secs_f64();
    let expected = outcome(&whole);

    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let (mut kills, mut cut_saves, mut runs) = (0, 0, 0);
    let saving = |run: &Path| {
        std::fs::read_dir(run).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".partial"))))
    };
    let cut_save = |run: &Path| {
        std::fs::read_dir(run).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| ["partial", "previous", "pending-best"].iter().any(|end| e.file_name().to_string_lossy().ends_with(end))))
        })
    };
    while kills < 40 {
        runs += 1;
        let run = dir.path().join(format!("cut-{runs}"));
        loop {
            let mut child = train(&run).spawn().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(span * next_random(&mut random));
            let at_a_save = kills % 2 == 1;
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if (at_a_save && saving(&run)) || (!at_a_save && std::time::Instant::now() >= deadline) {
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_micros(if at_a_save { 100 } else { 2000 }));
            };
            if let Some(status) = finished {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "run {runs} after {kills} kills: {err}");
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            cut_saves += usize::from(cut_save(&run));
        }
        let (result, adapter, events) = outcome(&run);
        assert_eq!(events, expected.2, "run {runs}'s events, interrupted, against the uninterrupted one's");
        assert_eq!(result, expected.0, "run {runs}'s result");
        assert!(adapter == expected.1, "run {runs}'s best adapter differs from the uninterrupted one's");
    }
    eprintln!("{kills} kills over {runs} runs, {cut_saves} of them left a save to mend; an uninterrupted run takes {span:.2} s");
    assert!(cut_saves > 0, "no kill cut a save");
}

/// A run directory is self-contained: trained from one folder with a relative dataset root and
/// encoder folder, it is evaluated from another (its `config.toml` holds absolute locations); a
/// moved dataset is named when missing and followed with `--data-root`.
#[test]
fn a_run_is_read_from_any_folder_and_follows_a_moved_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_shapes(&work.join("shapes"));
    let vit = work.join("vit");
    std::fs::create_dir_all(&vit).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(common::tiny_vit().join(file), vit.join(file)).unwrap();
    }
    std::fs::write(
        work.join("exp.toml"),
        "[data]\ndataset = \"image-folder\"\nroot = \"shapes\"\ncache_dir = \"\"\n[model]\nmethod = \"prompt-tuning\"\n\
         experts = [\"vit-base-patch16-224=vit\"]\n[pmoe]\nprompt_len = 2\n[train]\nepochs = 1\nbatch_size = 4\ndrop_last = false\n",
    )
    .unwrap();
    let in_folder = |folder: &Path, args: &[&str]| Command::new(env!("CARGO_BIN_EXE_mope")).current_dir(folder).args(args).output().unwrap();
    let out = in_folder(&work, &["train", "exp.toml", "--run-dir", "run", "--quiet", "--workers", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(work.join("run/config.toml")).unwrap();
    let absolute = |p: &Path| std::path::absolute(p).unwrap().display().to_string();
    assert!(config.contains(&format!("root = \"{}\"", absolute(&work.join("shapes")))), "{config}");
    assert!(config.contains(&format!("vit-base-patch16-224={}", absolute(&vit))), "{config}");

    let run = work.join("run").to_string_lossy().into_owned();
    let elsewhere = dir.path();
    let out = in_folder(elsewhere, &["eval", &run]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"], read_result(&work.join("run"))["report"]["metrics"]);
    assert!(in_folder(elsewhere, &["plot", &run]).status.success());

    std::fs::rename(work.join("shapes"), dir.path().join("moved-shapes")).unwrap();
    let err = stderr(&in_folder(elsewhere, &["eval", &run]));
    assert!(err.contains(&absolute(&work.join("shapes"))), "the old location is named: {err}");
    let out = in_folder(elsewhere, &["eval", &run, "--data-root", "moved-shapes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let moved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(moved["metrics"], report["metrics"]);
}
