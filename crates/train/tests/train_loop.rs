//! The training loop end to end on tiny real-format encoders (the ViT and BERT fixtures of the
//! backbones crate) and a generated image+text dataset: the run directory's files, seeded
//! reproducibility, resuming equal to not stopping, and the plots.

use std::path::{Path, PathBuf};

use backbones::{AnyEncoder, ImagePreprocess, InputPreparer, LoadedEncoder, Modality, Pooling, TextTokenizer, load_bert, load_vit};
use burn::backend::{Autodiff, Flex};
use data::{SplitName, Task};
use train::predictions::{Predictions, mean_of_experts};
use train::{ExperimentSpec, MainUse, ProgressMode, RunDir, Setup, Splits, TrainBackend, TrainOptions, load_split};

/// burn's random state is global to the process: runs that check seeded reproducibility must not
/// draw concurrently with another test's run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../backbones/tests/fixtures").join(name)
}

const COLOURS: [[u8; 3]; 3] = [[220, 30, 30], [30, 200, 30], [30, 30, 220]];
const WORDS: [&str; 3] = ["red", "green", "blue"];

/// A 3-class image+text dataset: the class is the image's colour; the text names it in half the
/// samples and is neutral in the others.
fn make_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::write(dir.join("labels.txt"), WORDS.join("\n")).unwrap();
    for (split, n) in [("train", 36), ("val", 12), ("test", 12)] {
        let mut lines = String::new();
        for i in 0..n {
            let class = i % 3;
            let name = format!("images/{split}{i}.png");
            let shade = (i * 7 % 40) as u8;
            let [r, g, b] = COLOURS[class];
            image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([r.saturating_sub(shade), g, b.saturating_sub(((x + y) % 16) as u8)])).save(dir.join(&name)).unwrap();
            let text = if i % 2 == 0 { format!("a {} thing", WORDS[class]) } else { "a thing".to_string() };
            lines.push_str(&format!("{{\"id\":\"{split}{i}\",\"img\":\"{name}\",\"text\":\"{text}\",\"label\":\"{}\"}}\n", WORDS[class]));
        }
        std::fs::write(dir.join(format!("{split}.jsonl")), lines).unwrap();
    }
}

fn spec(data: &Path, cache: &Path, extra: &[&str]) -> ExperimentSpec {
    let text = format!(
        r#"
        [data]
        dataset = "jsonl"
        root = "{}"
        cache_dir = "{}"
        [model]
        method = "mope"
        main = "tiny-vit"
        complementary = "tiny-bert"
        complementary_prompt_len = 2
        [prompts]
        static_len = 2
        num_experts = 3
        expert_len = 2
        mapper_hidden = 16
        [train]
        epochs = 2
        batch_size = 8
        lr = 5e-3
        log_every = 1
        schedule = {{ kind = "constant" }}
        "#,
        data.display(),
        cache.display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    ExperimentSpec::parse(&text, Path::new("test.toml"), &extra).unwrap()
}

fn setup<AB: TrainBackend>(spec: &ExperimentSpec) -> (Setup<AB>, Splits) {
    let device = Default::default();
    let split = |name| load_split(&spec.data, name, spec.train.seed).unwrap();
    let splits = Splits { train: split(SplitName::Train), val: split(SplitName::Val), test: Some(split(SplitName::Test)) };
    let (vit, _) = load_vit::<AB>(&fixture("tiny-vit"), Pooling::Cls, &device).unwrap();
    let (bert, _) = load_bert::<AB>(&fixture("tiny-bert"), Pooling::Cls, &device).unwrap();
    let main = LoadedEncoder {
        encoder: AnyEncoder::ViT(vit),
        preparer: InputPreparer::Image(Modality::Image, ImagePreprocess { resize: 32, size: 32, mean: [0.5; 3], std: [0.5; 3] }),
        name: "tiny-vit".into(),
        weights: vec![],
    };
    let tokenizer = TextTokenizer::from_dir(&fixture("tiny-bert"), 16).unwrap();
    let complementary = LoadedEncoder { encoder: AnyEncoder::Text(bert), preparer: InputPreparer::Text(tokenizer), name: "tiny-bert".into(), weights: vec![] };
    let objective = splits.train.task;
    let labels = splits.train.labels.clone();
    (Setup::from_encoders(spec, main, complementary, labels, objective, &device).unwrap(), splits)
}

fn train_in<AB: TrainBackend>(run: &Path, spec: &ExperimentSpec, resume: bool) -> train::RunResult {
    let (setup, splits) = setup::<AB>(spec);
    let options = TrainOptions { resume, overwrite: false, progress: ProgressMode::Quiet, workers: 2 };
    train::train(spec, setup, &splits, &RunDir::open(run).unwrap(), &options).unwrap()
}

fn events(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .collect()
}

fn step_losses(run: &Path) -> Vec<f64> {
    events(run, "step").iter().map(|e| e["loss"].as_f64().unwrap()).collect()
}

#[test]
fn a_run_writes_its_files_reproduces_with_its_seed_and_resumes_exactly() {
    run_checks::<Autodiff<Flex>>();
}

/// A step whose loss is not finite stops the run with an error that names the epoch and the
/// step and applies nothing of it (a learning rate of 1e38 sends the prompts past f32's range
/// in one step).
#[test]
fn a_non_finite_loss_stops_training_and_names_the_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let spec = spec(&data, &dir.path().join("cache"), &["train.lr=1e38"]);
    let (setup, splits) = setup::<Autodiff<Flex>>(&spec);
    let run = dir.path().join("diverged");
    let options = TrainOptions { resume: false, overwrite: false, progress: ProgressMode::Quiet, workers: 2 };
    let err = train::train(&spec, setup, &splits, &RunDir::open(&run).unwrap(), &options).unwrap_err().to_string();
    assert!(err.starts_with("epoch 1, step 2: the training loss is not finite"), "{err}");
    assert!(err.contains("no checkpoint was saved yet"), "{err}");
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 1, "the first step is logged, the failing one is not");
    assert!(losses[0].is_finite());
    assert!(!run.join("best").exists() && !run.join("last").exists(), "nothing saved from a diverged epoch");
}

/// With a learning rate of 0 the model never changes, so validation never beats epoch 1: a
/// patience of 2 stops the run after epoch 3 of 6, tests epoch 1's adapter, and says so in its
/// result; resuming the stopped run trains nothing more; `train.min_epochs` defers the stop.
#[test]
fn patience_stops_a_run_whose_validation_stops_improving() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let spec = spec(&data, &dir.path().join("cache"), &["train.lr=0", "train.complementary_lr=0", "train.epochs=6", "train.patience=2"]);
    let run = dir.path().join("stopped");
    let result = train_in::<Autodiff<Flex>>(&run, &spec, false);
    assert_eq!((result.epochs, result.best_epoch, result.seed), (3, 1, 42));
    assert_eq!(events(&run, "epoch").len(), 3);
    let resumed = train_in::<Autodiff<Flex>>(&run, &spec, true);
    assert_eq!((resumed.epochs, events(&run, "epoch").len()), (3, 3), "nothing left to train");
    // With a minimum, patience stops no run before it: the same run trains 5 epochs.
    let spec = crate::spec(&data, &dir.path().join("cache"), &["train.lr=0", "train.complementary_lr=0", "train.epochs=6", "train.patience=2", "train.min_epochs=5"]);
    let result = train_in::<Autodiff<Flex>>(&dir.path().join("at-least-5"), &spec, false);
    assert_eq!((result.epochs, result.best_epoch), (5, 1));
}

/// Late fusion's main representation is constant: each sample's is encoded once, kept in the
/// feature store beside the complementary one, and a second run trains from the stores alone
/// to the same losses; a sample whose text or image changes is encoded again; the probe of the complementary modality reads no main input at all.
#[test]
fn late_fusion_encodes_each_main_input_once_and_reuses_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let cache = dir.path().join("cache");
    let spec = spec(&data, &cache, &["model.method=late-fusion", "model.complementary_prompt_len=0"]);
    let use_of_main = |spec: &ExperimentSpec| setup::<Autodiff<Flex>>(spec).0.model.main_use();
    assert_eq!(use_of_main(&spec), MainUse::Constant);
    let main_store = setup::<Autodiff<Flex>>(&spec).0.feature_stores.main.unwrap();
    let first = train_in::<Autodiff<Flex>>(&dir.path().join("first"), &spec, false);
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(main_store.with_extension("json")).unwrap()).unwrap();
    // Every train, val and test sample, 32 wide (the tiny ViT).
    assert_eq!((index["ids"].as_array().unwrap().len(), index["width"].as_u64()), (60, Some(32)));
    let second = train_in::<Autodiff<Flex>>(&dir.path().join("second"), &spec, false);
    assert_eq!(step_losses(&dir.path().join("first")), step_losses(&dir.path().join("second")));
    assert_eq!((first.value, first.best_val), (second.value, second.best_val));

    // A sample's inputs changed in place: its rows are computed again, under a new key; the
    // others are read back.
    let jsonl = data.join("train.jsonl");
    std::fs::write(&jsonl, std::fs::read_to_string(&jsonl).unwrap().replacen("\"text\":\"a red thing\"", "\"text\":\"a crimson thing\"", 1)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    image::RgbImage::from_pixel(32, 32, image::Rgb([0, 0, 0])).save(data.join("images/train1.png")).unwrap();
    train_in::<Autodiff<Flex>>(&dir.path().join("third"), &spec, false);
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(main_store.with_extension("json")).unwrap()).unwrap();
    let ids: Vec<&str> = index["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap()).collect();
    assert_eq!(ids.len(), 62, "two samples encoded again");
    let values: Vec<f32> = std::fs::read(main_store.with_extension("f32")).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let rows_of = |id: &str| -> Vec<&[f32]> { ids.iter().zip(values.chunks(32)).filter(|(key, _)| key.starts_with(&format!("train/{id}/"))).map(|(_, row)| row).collect() };
    let (text_changed, image_changed) = (rows_of("train0"), rows_of("train1"));
    assert_eq!((text_changed.len(), image_changed.len()), (2, 2));
    assert_eq!(text_changed[0], text_changed[1], "the ViT reads no text: the same row, computed again");
    assert_ne!(image_changed[0], image_changed[1], "a new picture at the same path: a new row");
    let probe = self::spec(&data, &cache, &["model.method=late-fusion", "model.complementary_prompt_len=0", "model.head=complementary"]);
    assert_eq!(use_of_main(&probe), MainUse::Unread);
    for method in ["mope", "fine-tuning"] {
        let other = self::spec(&data, &cache, &[&format!("model.method={method}")]);
        assert_eq!(use_of_main(&other), MainUse::Encoded, "{method}");
    }
}

/// The same on the GPU (`cargo test -p train --features cuda --test train_loop`).
#[cfg(feature = "cuda")]
#[test]
fn a_run_on_cuda_writes_its_files_reproduces_with_its_seed_and_resumes_exactly() {
    run_checks::<Autodiff<burn::backend::Cuda>>();
}

fn run_checks<AB: TrainBackend>() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let cache = dir.path().join("cache");
    let spec = spec(&data, &cache, &[]);

    let first = dir.path().join("first");
    let result = train_in::<AB>(&first, &spec, false);
    for file in ["config.toml", "task.json", "metrics.jsonl", "result.json", "best/adapter_model.safetensors", "last/optimizer.bin", "last/state.json"] {
        assert!(first.join(file).is_file(), "{file} written");
    }
    assert_eq!(ExperimentSpec::load(&first.join("config.toml"), &[]).unwrap().train, spec.train, "the resolved config reads back");
    // 36 samples, batches of 8, drop_last: 4 steps an epoch.
    assert_eq!(step_losses(&first).len(), 8);
    let epochs = events(&first, "epoch");
    assert_eq!(epochs.len(), 2);
    let routing = epochs[1]["val"]["routing"].as_array().unwrap();
    assert_eq!(routing.len(), 2, "both layers of the tiny ViT are routed");
    let share: Vec<f64> = routing[0]["stats"]["share"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(share.len(), 3);
    assert!((share.iter().sum::<f64>() - 1.0).abs() < 1e-4, "expert shares sum to 1: {share:?}");
    assert_eq!(routing[0]["per_class"].as_array().unwrap().len(), 3, "one routing row per class");
    assert_eq!((result.split.as_str(), result.metric.as_str(), result.report.samples), ("test", "accuracy", 12));
    assert!(result.trainable_params > 0 && result.trainable_params < result.total_params);
    assert_eq!(result.adapter_bytes, std::fs::metadata(first.join("best/adapter_model.safetensors")).unwrap().len());

    // Same seed, same losses; another seed, other losses.
    let again = dir.path().join("again");
    train_in::<AB>(&again, &spec, false);
    assert_eq!(step_losses(&again), step_losses(&first));
    let other = dir.path().join("other");
    train_in::<AB>(&other, &crate::spec(&data, &cache, &["train.seed=7"]), false);
    assert_ne!(step_losses(&other), step_losses(&first));

    // One epoch, then resume to two: the same as two epochs straight.
    let resumed = dir.path().join("resumed");
    // (A constant rate: a schedule over the total number of steps would differ with epochs=1.)
    train_in::<AB>(&resumed, &crate::spec(&data, &cache, &["train.epochs=1"]), false);
    assert_eq!(step_losses(&resumed), step_losses(&first)[..4]);
    let resumed_result = train_in::<AB>(&resumed, &spec, true);
    let resumed_losses = step_losses(&resumed);
    assert_eq!(resumed_losses.len(), 8, "metrics.jsonl holds each step once after resuming");
    assert_eq!(resumed_losses[4..], step_losses(&first)[4..], "the second epoch continues exactly");
    assert_eq!(resumed_result.report.metrics, result.report.metrics);

    // A damaged checkpoint is named, with what to do.
    let damaged = dir.path().join("damaged");
    train_in::<AB>(&damaged, &crate::spec(&data, &cache, &["train.epochs=1"]), false);
    let optimizer = damaged.join("last/optimizer.bin");
    let bytes = std::fs::read(&optimizer).unwrap();
    std::fs::write(&optimizer, &bytes[..bytes.len() / 2]).unwrap();
    let (setup, splits) = setup::<AB>(&spec);
    let options = TrainOptions { resume: true, overwrite: false, progress: ProgressMode::Quiet, workers: 2 };
    let err = train::train(&spec, setup, &splits, &RunDir::open(&damaged).unwrap(), &options).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: the optimiser state cannot be read", optimizer.display())), "{err}");
    assert!(err.contains("train again with --overwrite instead of --resume"), "{err}");

    // Plots from the run directory.
    let plots = train::plot_run(&first, &first.join("plots")).unwrap();
    let names: Vec<String> = plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["curves.png", "curves.svg", "experts.png", "experts.svg", "routing_per_class.png", "routing_per_class.svg"]);
    let png = image::open(&plots[0]).unwrap();
    assert_eq!((png.width(), png.height()), (1000, 420));
    let svg = std::fs::read_to_string(&plots[3]).unwrap();
    assert!(svg.contains("expert usage per layer") && svg.contains("layer 0"), "labelled heatmap");
}

/// Segmentation: a dense head on the prompted ViT's patches, routed by a depth ViT, on the
/// NYUDv2 fixture tree (official list layout, 2 training and 1 validation RGB-D pairs).
#[test]
fn segmentation_trains_a_dense_head_routed_by_depth() {
    type AB = Autodiff<Flex>;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/nyudv2");
    let text = format!(
        "[data]\ndataset = \"nyudv2\"\nroot = \"{}\"\ncache_dir = \"\"\n[model]\nmethod = \"mope\"\nmain = \"tiny-vit\"\ncomplementary = \"tiny-vit-depth\"\n\
         [prompts]\nstatic_len = 2\nnum_experts = 2\nexpert_len = 2\nmapper_hidden = 8\n[train]\nepochs = 2\nbatch_size = 2\nlog_every = 1\nschedule = {{ kind = \"constant\" }}\n",
        root.display()
    );
    let spec = ExperimentSpec::parse(&text, Path::new("seg.toml"), &[]).unwrap();
    let device = Default::default();
    let split = |name| load_split(&spec.data, name, spec.train.seed).unwrap();
    let splits = Splits { train: split(SplitName::Train), val: split(SplitName::Val), test: None };
    let vit = || load_vit::<AB>(&fixture("tiny-vit"), Pooling::Cls, &device).unwrap().0;
    let pre = ImagePreprocess { resize: 32, size: 32, mean: [0.5; 3], std: [0.5; 3] };
    let main = LoadedEncoder { encoder: AnyEncoder::ViT(vit()), preparer: InputPreparer::Image(Modality::Image, pre), name: "tiny-vit".into(), weights: vec![] };
    let depth = LoadedEncoder { encoder: AnyEncoder::ViT(vit()), preparer: InputPreparer::Image(Modality::Depth, pre), name: "tiny-vit-depth".into(), weights: vec![] };
    let objective = splits.train.task;
    assert_eq!(objective, Task::Segmentation { num_classes: 40, ignore_index: 255 });
    let setup = Setup::from_encoders(&spec, main, depth, splits.train.labels.clone(), objective, &device).unwrap();
    let run = dir.path().join("run");
    let options = TrainOptions { resume: false, overwrite: false, progress: ProgressMode::Quiet, workers: 1 };
    let result = train::train(&spec, setup, &splits, &RunDir::open(&run).unwrap(), &options).unwrap();
    assert_eq!((result.metric.as_str(), result.split.as_str(), result.report.samples), ("mean_iou", "val", 1));
    for metric in ["pixel_accuracy", "mean_accuracy", "mean_iou"] {
        let value = result.report.metric(metric).unwrap();
        assert!((0.0..=100.0).contains(&value), "{metric} = {value}");
    }
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    // The routing is recorded per layer, with no per-class rows (a label map has many classes).
    let routing = &events(&run, "epoch")[1]["val"]["routing"];
    assert_eq!(routing.as_array().unwrap().len(), 2);
    assert!(routing[0]["per_class"].as_array().unwrap().iter().all(|row| row.as_array().unwrap().is_empty()));

    // The plots return: curves and expert usage; the per-class figure, which has no rows here,
    // is left out.
    let plots = train::plot_run(&run, &run.join("plots")).unwrap();
    let names: Vec<String> = plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["curves.png", "curves.svg", "experts.png", "experts.svg"]);
}

/// Two heterogeneous experts (the ViT and Swin fixtures: different depths, grids and
/// normalisations), fed from one prepared image.
fn vit_and_swin<AB: TrainBackend>() -> Vec<LoadedEncoder<AB>> {
    let device = Default::default();
    let (vit, _) = load_vit::<AB>(&fixture("tiny-vit"), Pooling::Cls, &device).unwrap();
    let (swin, _) = backbones::load_swin::<AB>(&fixture("tiny-swin"), Pooling::Mean, backbones::PromptLayout::PerSample, &device).unwrap();
    vec![
        LoadedEncoder {
            encoder: AnyEncoder::ViT(vit),
            preparer: InputPreparer::Image(Modality::Image, ImagePreprocess { resize: 32, size: 32, mean: [0.5; 3], std: [0.5; 3] }),
            name: "tiny-vit".into(),
            weights: vec![],
        },
        LoadedEncoder {
            encoder: AnyEncoder::Swin(swin),
            preparer: InputPreparer::Image(Modality::Image, ImagePreprocess { resize: 32, size: 32, mean: backbones::IMAGENET_MEAN, std: backbones::IMAGENET_STD }),
            name: "tiny-swin".into(),
            weights: vec![],
        },
    ]
}

fn pmoe_spec(data: &str, root: &Path, overrides: &[&str]) -> ExperimentSpec {
    let text = format!(
        "[data]\ndataset = \"{data}\"\nroot = \"{}\"\ncache_dir = \"\"\n[model]\nmethod = \"pmoe\"\nexperts = [\"tiny-vit\", \"tiny-swin\"]\n\
         [pmoe]\nprompt_len = 3\n[train]\nepochs = 2\nbatch_size = 8\nlr = 5e-3\nlog_every = 1\nschedule = {{ kind = \"constant\" }}\n",
        root.display()
    );
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentSpec::parse(&text, Path::new("pmoe.toml"), &overrides).unwrap()
}

/// Trains a pMoE-family `spec` over the tiny ViT and Swin into `run`.
fn train_experts(spec: &ExperimentSpec, run: &Path) -> train::RunResult {
    let split = |name| load_split(&spec.data, name, spec.train.seed).unwrap();
    let splits = Splits { train: split(SplitName::Train), val: split(SplitName::Val), test: Some(split(SplitName::Test)) };
    let setup = Setup::<Autodiff<Flex>>::from_experts(spec, vit_and_swin(), splits.train.labels.clone(), splits.train.task, &Default::default()).unwrap();
    let options = TrainOptions { resume: false, overwrite: false, progress: ProgressMode::Quiet, workers: 2 };
    train::train(spec, setup, &splits, &RunDir::open(run).unwrap(), &options).unwrap()
}

/// pMoE end to end: dispatch statistics per expert and layer in the metrics, only EPTs,
/// dispatchers and the head in the adapter, the dispatcher heatmaps.
#[test]
fn pmoe_trains_over_two_experts_and_records_each_dispatcher() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let spec = pmoe_spec("jsonl", &data, &[]);
    let run = dir.path().join("run");
    let result = train_experts(&spec, &run);
    assert_eq!((result.method.as_str(), result.metric.as_str(), result.report.samples), ("pmoe", "accuracy", 12));
    // EPTs: 3 tokens × 32 wide × 2 layers × 2 experts; dispatchers: gates 64 → 3·2 (first layer)
    // and 64 → 3·3 (second), with biases, per expert; head: (32 + 32) · 3 + 3. No projection:
    // the ViT and Swin's top stage are both 32 wide.
    let expected = 2 * (2 * 3 * 32) + 2 * ((64 * 6 + 6) + (64 * 9 + 9)) + (64 * 3 + 3);
    assert_eq!(result.trainable_params, expected);
    let routing = events(&run, "epoch")[1]["val"]["routing"].as_array().unwrap().clone();
    let sites: Vec<(u64, u64, usize)> = routing
        .iter()
        .map(|r| (r["expert"].as_u64().unwrap(), r["layer"].as_u64().unwrap(), r["stats"]["share"].as_array().unwrap().len()))
        .collect();
    // Top two layers of each: ViT layers 0-1, Swin blocks 2-3; the carried prompt joins at the second.
    assert_eq!(sites, vec![(0, 0, 2), (0, 1, 3), (1, 2, 2), (1, 3, 3)]);
    for r in &routing {
        let share: f64 = r["stats"]["share"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-4, "source shares sum to 1: {r}");
        assert_eq!(r["per_class"].as_array().unwrap().len(), 3);
    }
    let plots = train::plot_run(&run, &run.join("plots")).unwrap();
    let svg = std::fs::read_to_string(plots.iter().find(|p| p.ends_with("experts.svg")).unwrap()).unwrap();
    assert!(svg.contains("dispatcher weights") && svg.contains("e1 layer 3") && svg.contains("e1 = tiny-swin") && svg.contains("carried"), "labelled dispatcher heatmap");
    let svg = std::fs::read_to_string(plots.iter().find(|p| p.ends_with("routing_per_class.svg")).unwrap()).unwrap();
    assert!(svg.contains("dispatcher sources per class") && svg.contains("e0 · ") && svg.contains("e1 · "), "each expert's sources per class");

    // Each sample's class probabilities on test (and on validation at the best epoch); the mean
    // of experts averages runs' probabilities: of a run with itself, the run again, with the
    // parameters and time of both.
    let test = Predictions::read(&run.join("test_predictions.json")).unwrap();
    assert_eq!((test.ids.len(), test.classes.len(), test.probabilities.len()), (12, 12, 12));
    assert!(test.probabilities.iter().all(|p| p.len() == 3 && (p.iter().sum::<f32>() - 1.0).abs() < 1e-5));
    assert!((test.accuracy() - result.value).abs() < 1e-9, "{} against {}", test.accuracy(), result.value);
    let val = Predictions::read(&run.join("val_predictions.json")).unwrap();
    assert!((val.accuracy() - result.best_val).abs() < 1e-9);
    let mean = mean_of_experts("colours/mean-of-experts", &[(&result, run.as_path()), (&result, run.as_path())]).unwrap();
    assert_eq!((mean.name.as_str(), mean.method.as_str(), mean.value, mean.best_val), ("colours/mean-of-experts", "mean-of-experts", result.value, result.best_val));
    assert_eq!((mean.trainable_params, mean.steps), (2 * result.trainable_params, 2 * result.steps));
    assert!(mean.report.routing.is_empty() && (mean.report.loss - test.loss()).abs() < 1e-9);
}

/// Late fusion over experts: no prompts, no dispatchers; the head over both pooled outputs is
/// all that trains (the tiny ViT and Swin are frozen whole).
#[test]
fn late_fusion_over_experts_trains_only_its_head() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    make_dataset(&data);
    let spec = pmoe_spec("jsonl", &data, &["model.method=late-fusion", "train.epochs=1"]);
    let run = dir.path().join("run");
    let result = train_experts(&spec, &run);
    assert_eq!(result.method, "late-fusion");
    assert_eq!(result.trainable_params, (32 + 32) * 3 + 3);
    assert!(result.report.routing.is_empty());
}

/// pMoE's dense head on the NYUDv2 fixture: both experts' final maps on the finer (Swin) grid.
#[test]
fn pmoe_segments_with_the_experts_maps_on_the_finest_grid() {
    type AB = Autodiff<Flex>;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/nyudv2");
    let spec = pmoe_spec("nyudv2", &root, &["train.batch_size=2"]);
    let split = |name| load_split(&spec.data, name, spec.train.seed).unwrap();
    let splits = Splits { train: split(SplitName::Train), val: split(SplitName::Val), test: None };
    let setup = Setup::<AB>::from_experts(&spec, vit_and_swin(), splits.train.labels.clone(), splits.train.task, &Default::default()).unwrap();
    let run = dir.path().join("run");
    let options = TrainOptions { resume: false, overwrite: false, progress: ProgressMode::Quiet, workers: 1 };
    let result = train::train(&spec, setup, &splits, &RunDir::open(&run).unwrap(), &options).unwrap();
    assert_eq!((result.metric.as_str(), result.report.samples), ("mean_iou", 1));
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
}

#[test]
fn pmoe_experts_must_be_promptable_image_encoders() {
    type AB = Autodiff<Flex>;
    // Building a model seeds and draws from burn's global generator.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = pmoe_spec("jsonl", dir.path(), &[]);
    let device = Default::default();
    let (bert, _) = load_bert::<AB>(&fixture("tiny-bert"), Pooling::Cls, &device).unwrap();
    let tokenizer = TextTokenizer::from_dir(&fixture("tiny-bert"), 16).unwrap();
    let mut experts = vit_and_swin::<AB>();
    experts[1] = LoadedEncoder { encoder: AnyEncoder::Text(bert), preparer: InputPreparer::Text(tokenizer), name: "tiny-bert".into(), weights: vec![] };
    let error = Setup::<AB>::from_experts(&spec, experts, WORDS.map(String::from).to_vec(), Task::Classification { num_classes: 3 }, &device).unwrap_err().to_string();
    assert_eq!(error, "expert 1 `tiny-bert` (model.experts): pMoE experts are image encoders");
    // A CNN has no layer to prompt: refused as a prompted expert, read as a frozen feature by
    // late fusion (whose pooled features are then constant: cached, the head alone trains).
    let with_cnn = || {
        let mut experts = vit_and_swin::<AB>();
        let cnn = backbones::MobileNetV2Config::new().with_width_mult(0.25).with_num_classes(None).init(&device);
        experts[1] = LoadedEncoder { encoder: AnyEncoder::Cnn(cnn), preparer: experts[1].preparer.clone(), name: "tiny-cnn".into(), weights: vec![] };
        experts
    };
    let error = Setup::<AB>::from_experts(&spec, with_cnn(), WORDS.map(String::from).to_vec(), Task::Classification { num_classes: 3 }, &device).unwrap_err().to_string();
    assert_eq!(error, "expert 1 `tiny-cnn` (model.experts) has no layer to prompt: prompted or segmenting experts are ViT, Swin or a hybrid (method late-fusion classifies from any image encoder)");
    // pmoe.depth is about prompts: late fusion ignores it.
    let late = pmoe_spec("jsonl", dir.path(), &["model.method=late-fusion", "pmoe.depth=2"]);
    let setup = Setup::<AB>::from_experts(&late, with_cnn(), WORDS.map(String::from).to_vec(), Task::Classification { num_classes: 3 }, &device).unwrap();
    assert_eq!(setup.model.main_use(), MainUse::Constant);
    // Segmenting reads each expert's grid, which a CNN's pooled feature is not.
    let error = Setup::<AB>::from_experts(&late, with_cnn(), WORDS.map(String::from).to_vec(), Task::Segmentation { num_classes: 3, ignore_index: 255 }, &device).unwrap_err().to_string();
    assert!(error.starts_with("expert 1 `tiny-cnn` (model.experts) has no layer to prompt"), "{error}");
    let error = Setup::<AB>::from_experts(&pmoe_spec("jsonl", dir.path(), &["pmoe.depth=3"]), vit_and_swin(), Vec::new(), Task::Classification { num_classes: 3 }, &device)
        .unwrap_err()
        .to_string();
    assert_eq!(error, "pmoe.depth = 3 exceeds the shallowest expert's 2 layers");
}

/// Every shipped experiment file is a valid specification.
#[test]
fn shipped_experiments_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut count = 0;
    // experiments/ also holds the learning-rate sweep's script.
    for dataset in std::fs::read_dir(&root).unwrap().map(|d| d.unwrap().path()).filter(|d| d.is_dir()) {
        for method in std::fs::read_dir(dataset).unwrap() {
            let path = method.unwrap().path().join("experiment.toml");
            if path.is_file() {
                let spec = ExperimentSpec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                assert!(!spec.description.is_empty() && !spec.tags.is_empty(), "{}: description and tags", path.display());
                count += 1;
            }
        }
    }
    assert!(count >= 35, "{count} experiments");
}
