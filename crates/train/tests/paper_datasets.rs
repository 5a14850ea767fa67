//! Each paper dataset's shipped MoPE experiment on a miniature of its official layout
//! (`datasets/fixtures/`, written by `make_fixtures.py`) with the tiny fixture encoders passed as
//! `<preset>=<dir>`: trained for one epoch through the `mope` binary, then `eval`, `predict` and
//! `plot`, as a user with the official download and their own weights runs them.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_tree, mope, read_result, stderr};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_encoder(preset: &str, fixture: &str) -> String {
    format!("{preset}={}", repository().join("crates/backbones/tests/fixtures").join(fixture).display())
}

/// One dataset: its name, the `--set`s that point its experiment at the miniature and the tiny
/// encoders, and the `predict` inputs (none for segmentation, which `predict` refuses).
struct Case {
    dataset: &'static str,
    sets: Vec<String>,
    predict: Option<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let fixtures = repository().join("datasets/fixtures");
    let data = |name: &str| fixtures.join(name);
    let swin = fixture_encoder("swin-base-patch4-window7-224-in22k", "tiny-swin");
    let bert = fixture_encoder("bert-base-uncased", "tiny-bert");
    let whisper = fixture_encoder("whisper-base", "tiny-whisper");
    let file = |path: PathBuf| path.to_string_lossy().into_owned();
    let image_text = |image: PathBuf, text: &str| Some(vec!["--image".into(), file(image), "--text".into(), text.into()]);
    vec![
        Case {
            dataset: "food101",
            sets: vec![format!("model.main={swin}"), format!("model.complementary={bert}"), "data.food101_val_size=2".into()],
            predict: image_text(data("food101/images/test/baklava/baklava_9.jpg"), "baklava with honey"),
        },
        Case {
            dataset: "mmimdb",
            sets: vec![format!("model.main={swin}"), format!("model.complementary={bert}")],
            predict: image_text(data("mmimdb/dataset/0000001.jpeg"), "a detective follows a trail"),
        },
        Case {
            dataset: "snli-ve",
            sets: vec![format!("model.main={swin}"), format!("model.complementary={bert}")],
            predict: image_text(data("snli-ve/flickr30k_images/10002456.jpg"), "people are outside"),
        },
        Case {
            dataset: "mustard",
            sets: vec![format!("model.main={bert}"), format!("model.complementary={whisper}"), "model.audio_seconds=2".into(), "data.mustard_train_items=2".into()],
            predict: Some(vec!["--text".into(), "oh great, another meeting".into(), "--audio".into(), file(data("mustard/utterances_final/1_60.wav"))]),
        },
        Case { dataset: "nyudv2", sets: vec![format!("model.main={swin}"), format!("model.complementary={swin}")], predict: None },
        Case { dataset: "sunrgbd", sets: vec![format!("model.main={swin}"), format!("model.complementary={swin}")], predict: None },
    ]
}

#[test]
fn every_paper_dataset_trains_evaluates_predicts_and_plots_from_its_official_layout() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let experiment = repository().join("experiments").join(case.dataset).join("mope/experiment.toml");
        let run = dir.path().join(case.dataset);
        let run_arg = run.to_string_lossy().into_owned();
        let mut args: Vec<String> = ["train", &experiment.to_string_lossy(), "--run-dir", &run_arg, "--quiet", "--workers", "1"].map(String::from).to_vec();
        let root = repository().join("datasets/fixtures").join(case.dataset);
        let sets = [
            format!("data.root={}", root.display()),
            "data.cache_dir=\"\"".into(),
            "train.epochs=1".into(),
            "train.min_epochs=0".into(),
            "train.batch_size=2".into(),
            "train.drop_last=false".into(),
        ];
        for set in sets.iter().chain(&case.sets) {
            args.extend(["--set".into(), set.clone()]);
        }
        let out = mope(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}: {}", case.dataset, stderr(&out));
        let result = read_result(&run);
        assert_eq!(result["epochs"], 1, "{}", case.dataset);

        // Evaluation on the default split: test, or val where the dataset has none.
        let out = mope(&["eval", &run_arg, "--quiet"]);
        assert!(out.status.success(), "{}: {}", case.dataset, stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["samples"].as_u64().unwrap() > 0, "{}: {report}", case.dataset);
        assert_eq!(report["metrics"], result["report"]["metrics"], "{}: eval repeats the result's test figures", case.dataset);

        match &case.predict {
            Some(inputs) => {
                let out = mope(&[&["predict", &run_arg, "--json"], &inputs.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
                assert!(out.status.success(), "{}: {}", case.dataset, stderr(&out));
                let prediction: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let predicted = prediction["predicted"].as_array().unwrap();
                if case.dataset == "mmimdb" {
                    // Multi-label: every genre above the threshold (perhaps none), with it stated.
                    assert_eq!(prediction["threshold"], 0.5);
                    for top in prediction["top"].as_array().unwrap() {
                        assert_eq!(top["probability"].as_f64().unwrap() > 0.5, predicted.contains(&top["label"]), "{prediction}");
                    }
                } else {
                    assert_eq!(predicted.len(), 1, "{prediction}");
                    assert_eq!(predicted[0], prediction["top"][0]["label"]);
                }
            }
            None => assert!(stderr(&mope(&["predict", &run_arg, "--image", "x.png"])).contains("evaluate segmentation runs with `mope eval`")),
        }

        let out = mope(&["plot", &run_arg]);
        assert!(out.status.success(), "{}: {}", case.dataset, stderr(&out));
        assert!(run.join("plots/curves.png").is_file(), "{}", case.dataset);
    }
}

/// A miniature left without enough samples by a size meant for the full dataset (MUStARD's 334
/// training items, Food-101's 5,000 validation titles) is refused before training, naming the
/// key that sizes the split.
#[test]
fn a_split_left_too_small_names_the_key_that_sizes_it() {
    let fixtures = repository().join("datasets/fixtures");
    let experiment = |dataset: &str| repository().join("experiments").join(dataset).join("mope/experiment.toml").to_string_lossy().into_owned();
    let root = |dataset: &str| format!("data.root={}", fixtures.join(dataset).display());
    let err = stderr(&mope(&["train", &experiment("mustard"), "--dry-run", "--set", &root("mustard")]));
    assert!(err.contains("Error: the val split of") && err.contains("has no samples: data.mustard_train_items = 334 of sarcasm_data.json's items are training"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run").to_string_lossy().into_owned();
    let swin = format!("model.main={}", fixture_encoder("swin-base-patch4-window7-224-in22k", "tiny-swin"));
    let bert = format!("model.complementary={}", fixture_encoder("bert-base-uncased", "tiny-bert"));
    let sets = [root("food101"), swin, bert, "data.cache_dir=\"\"".into(), "train.batch_size=8".into()];
    let mut args = vec!["train".to_string(), experiment("food101"), "--run-dir".into(), run, "--quiet".into()];
    sets.into_iter().for_each(|set| args.extend(["--set".to_string(), set]));
    let err = stderr(&mope(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(err.contains("2 training samples make no full batch of train.batch_size = 8") && err.contains("data.food101_val_size = 5000 training titles are held out"), "{err}");
}

/// What a snapshot's `config.json` limits is fitted or refused before training, naming the
/// limit and the key: text longer than the encoder's positions is truncated (the tiny BERT has
/// 40), `model.max_text_tokens` above them, a clip longer than Whisper's positions and a ViT or
/// Swin image size other than its own are refused; a Swin read through `$MOPE_WEIGHTS_DIR` takes
/// its image size from its `config.json` as `<preset>=<dir>` does.
#[test]
fn encoder_limits_are_fitted_or_refused_before_training() {
    let fixtures = repository().join("datasets/fixtures");
    let experiment = |dataset: &str| repository().join("experiments").join(dataset).join("mope/experiment.toml").to_string_lossy().into_owned();
    let root = |dataset: &str| format!("data.root={}", fixtures.join(dataset).display());
    let swin = format!("model.main={}", fixture_encoder("swin-base-patch4-window7-224-in22k", "tiny-swin"));
    let bert = format!("model.complementary={}", fixture_encoder("bert-base-uncased", "tiny-bert"));
    let dry_run = |dataset: &str, sets: &[&str]| {
        let mut args = vec!["train".to_string(), experiment(dataset), "--dry-run".into()];
        for set in [root(dataset).as_str()].iter().chain(sets) {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        mope(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let err = stderr(&dry_run("mmimdb", &[&swin, &bert, "model.max_text_tokens=41"]));
    assert!(err.contains("model.max_text_tokens = 41 is more than the 40 positions of the text encoder"), "{err}");
    let err = stderr(&dry_run("mmimdb", &[&swin, &bert, "model.image_size=64"]));
    assert!(err.contains("the Swin reads 32×32 images") && err.contains("model.image_size = 64 asks for 64×64"), "{err}");
    let whisper = format!("model.complementary={}", fixture_encoder("whisper-base", "tiny-whisper"));
    let main_bert = format!("model.main={}", fixture_encoder("bert-base-uncased", "tiny-bert"));
    let err = stderr(&dry_run("mustard", &[&main_bert, &whisper, "data.mustard_train_items=2"]));
    assert!(
        err.contains("model.audio_seconds = 10 gives 1000 spectrogram frames, 500 encoder tokens: more than the 100 positions of the audio encoder; set model.audio_seconds to at most 2"),
        "{err}"
    );

    // A text of 120 words is truncated to the tiny BERT's 40 positions, not a panic mid-run.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run").to_string_lossy().into_owned();
    let mut args = vec!["train".to_string(), experiment("mmimdb"), "--run-dir".into(), run.clone(), "--quiet".into()];
    for set in [root("mmimdb"), swin.clone(), bert.clone(), "data.cache_dir=\"\"".into(), "train.epochs=1".into(), "train.batch_size=2".into(), "train.drop_last=false".into()] {
        args.extend(["--set".to_string(), set]);
    }
    let out = mope(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let long = "a detective follows a long and winding trail ".repeat(15);
    let image = fixtures.join("mmimdb/dataset/0000001.jpeg").to_string_lossy().into_owned();
    let out = mope(&["predict", &run, "--image", &image, "--text", &long]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The same Swin as a preset under $MOPE_WEIGHTS_DIR: its 32-pixel images from config.json.
    let weights = dir.path().join("weights");
    copy_tree(&repository().join("crates/backbones/tests/fixtures/tiny-swin"), &weights.join("swin-base-patch4-window7-224-in22k"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mope"))
        .env("MOPE_WEIGHTS_DIR", &weights)
        .args(["train", &experiment("mmimdb"), "--dry-run", "--set", &root("mmimdb"), "--set", &bert])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// docs/reproduce.md's walk-through for a paper dataset, on a miniature: the official layout in
/// a data folder of the user's, weights in a folder per preset name, `--list` naming what is
/// missing and where it is looked for, then the dataset's experiments run and tabled, with
/// `--set` given to every one (what `cargo xtask reproduce` hands these arguments to).
#[test]
fn reproduce_runs_a_paper_dataset_from_the_user_s_data_and_weights_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data, models) = (dir.path().join("repo"), dir.path().join("datasets"), dir.path().join("models"));
    copy_tree(&repository().join("experiments/food101"), &repo.join("experiments/food101"));
    // Another dataset's experiment, which a --set for Food-101's would not fit (pMoE's take no
    // `model.complementary`): the --set goes to the chosen experiments only.
    copy_tree(&repository().join("experiments/emoji-image/pmoe"), &repo.join("experiments/emoji-image/pmoe"));
    copy_tree(&repository().join("datasets/fixtures/food101"), &data.join("food101"));
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (repo_arg, data_arg, models_arg) = (s(&repo), s(&data), s(&models));
    let reproduce = |extra: &[&str]| mope(&[&["reproduce", "food101", "--root", &repo_arg, "--data-dir", &data_arg, "--weights-dir", &models_arg], extra].concat());

    // Step 1: what is missing, and where it is looked for.
    let out = reproduce(&["--list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(listing.contains("food101/mope") && listing.contains("present  missing"), "{listing}");
    for preset in ["swin-base-patch4-window7-224-in22k", "bert-base-uncased"] {
        assert!(listing.contains(&format!("weights: `{preset}`: {}", models.join(preset).join("config.json").display())), "{listing}");
    }

    // Step 2: the weights in place (here the tiny fixtures under the presets' names).
    let fixtures = repository().join("crates/backbones/tests/fixtures");
    copy_tree(&fixtures.join("tiny-swin"), &models.join("swin-base-patch4-window7-224-in22k"));
    copy_tree(&fixtures.join("tiny-bert"), &models.join("bert-base-uncased"));
    let listing = String::from_utf8_lossy(&reproduce(&["--list"]).stdout).into_owned();
    for line in listing.lines().filter(|l| l.starts_with("food101/")) {
        assert!(line.contains("present  present"), "{listing}");
    }
    assert!(!listing.contains("needed by food101"), "{listing}");

    // Step 3: the runs and the table.
    let sets = ["data.food101_val_size=2", "data.cache_dir=\"\"", "train.epochs=1", "train.min_epochs=0", "train.batch_size=2", "train.drop_last=false", "model.complementary=bert-base-uncased"];
    let mut args = vec!["--quick", "--jobs", "1", "--workers", "1"];
    sets.iter().for_each(|set| args.extend(["--set", set]));
    let out = reproduce(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same command again reuses the results; another setting trains again.
    let err = stderr(&reproduce(&args));
    assert!(err.contains("food101/mope seed 42: result newer than the experiment, reused"), "{err}");
    let err = stderr(&reproduce(&[&args[..], &["--set", "train.batch_size=3", "food101/mope"]].concat()));
    assert!(err.contains("was trained with other settings (a --set, --data-dir or --weights-dir differs), running again"), "{err}");
    let table = std::fs::read_to_string(repo.join("runs/reproduce.md")).unwrap();
    for experiment in ["food101/fine-tuning", "food101/late-fusion", "food101/mope", "food101/prompt-tuning"] {
        assert!(table.contains(&format!("| {experiment} |")), "{experiment} in\n{table}");
    }
    let config = std::fs::read_to_string(repo.join("runs/food101/mope/seed-42/config.toml")).unwrap();
    assert!(config.contains(&format!("root = \"{}\"", data.join("food101").display())) && config.contains(&format!("weights_dir = \"{}\"", models.display())), "{config}");
}
