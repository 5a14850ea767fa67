//! The fuzz targets of every parser of outside input, and the valid inputs they start from.
//!
//! Each target takes arbitrary bytes as one input file (or an experiment's text), runs the
//! project's own reader on it exactly as a user's file would be read, and returns: an error is a
//! correct answer, a panic, a hang or an allocation out of proportion to the input is a bug.
//! Two drivers run them:
//! - `cargo test -p fuzzing` (in CI): a bounded run of mutations of each target's seeds
//!   (`tests/bounded.rs`), with the memory each call holds at its peak measured against its
//!   input's size;
//! - `cargo +nightly fuzz run <target>` in `fuzz/` (libFuzzer, coverage-guided, unbounded).
//!
//! | target | reader |
//! |---|---|
//! | [`experiment_spec`] | `ExperimentSpec::parse`: the experiment TOML and `--set` overrides |
//! | [`dataset_json_lines`] | `data::jsonl::load`: MoPE's JSON-lines layout (`train.jsonl`) |
//! | [`metrics_json_lines`] | `train::plot::read_history`: a run's `metrics.jsonl` |
//! | [`food101_titles`] | `data::food101::load`: UPMC Food-101's `texts/train_titles.csv` |
//! | [`mmimdb_json`] | `data::mmimdb::load`: MM-IMDB's `split.json` and a movie's `<id>.json` |
//! | [`safetensors_file`] | `backbones::weights::SafetensorsFile`: header and every tensor as we read them |
//! | [`ct2_model`] | `backbones::ct2::Ct2Model` and the Whisper configuration read from it |
//! | [`wav`] | `data::read_wav` and the resampling to 16 kHz |
//! | [`adapter_config`] | `mope_core::AdapterConfig::read`: an adapter's `adapter_config.json` |

use std::io::Write;
use std::path::Path;

use backbones::weights::TensorSource;
use data::{LoadOptions, SplitName};

/// A target: one input's bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and the bounded run name them.
pub const TARGETS: [(&str, Target); 9] = [
    ("experiment_spec", experiment_spec),
    ("dataset_json_lines", dataset_json_lines),
    ("metrics_json_lines", metrics_json_lines),
    ("food101_titles", food101_titles),
    ("mmimdb_json", mmimdb_json),
    ("safetensors_file", safetensors_file),
    ("ct2_model", ct2_model),
    ("wav", wav),
    ("adapter_config", adapter_config),
];

/// A fresh folder holding `files` (relative path → contents).
fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("inside the folder")).expect("a folder");
        std::fs::File::create(&path).and_then(|mut f| f.write_all(bytes)).expect("a temporary file");
    }
    dir
}

/// The input as text: an experiment file, then `--set` overrides, one per line after a line
/// `--set`.
pub fn experiment_spec(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let (toml, overrides) = text.split_once("\n--set\n").unwrap_or((&text, ""));
    let overrides: Vec<String> = overrides.lines().map(str::to_string).collect();
    if let Ok(spec) = train::ExperimentSpec::parse(toml, Path::new("fuzz.toml"), &overrides) {
        // What a run directory keeps of it reads back as the same experiment.
        let written = spec.to_toml();
        let again = train::ExperimentSpec::parse(&written, Path::new("config.toml"), &[]);
        assert_eq!(again.as_ref().ok(), Some(&spec), "the resolved experiment does not read back:\n{written}\n{again:?}");
    }
}

/// The input as `train.jsonl` of a JSON-lines dataset with labels `a` and `b`.
pub fn dataset_json_lines(input: &[u8]) {
    let dir = folder(&[("labels.txt", b"a\nb\n"), ("train.jsonl", input), ("x.png", b"")]);
    for skip_bad in [false, true] {
        let _ = data::jsonl::load(dir.path(), "fuzz", SplitName::Train, LoadOptions { skip_bad });
    }
}

/// The input as a run's `metrics.jsonl`.
pub fn metrics_json_lines(input: &[u8]) {
    let dir = folder(&[("metrics.jsonl", input)]);
    let _ = train::plot::read_history(dir.path(), "accuracy");
}

/// The input as Food-101's training titles.
pub fn food101_titles(input: &[u8]) {
    let dir = folder(&[("texts/train_titles.csv", input), ("images/train/apple_pie/a.jpg", b"")]);
    for skip_bad in [false, true] {
        let _ = data::food101::load(dir.path(), SplitName::Train, 1, LoadOptions { skip_bad });
    }
}

/// The input as MM-IMDB's `split.json` up to its first NUL byte, and after it as the movie
/// `1.json` (whose image exists).
pub fn mmimdb_json(input: &[u8]) {
    let (split, movie) = match input.iter().position(|&b| b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&br#"{"train": ["1"], "dev": [], "test": []}"#[..], input),
    };
    let dir = folder(&[("split.json", split), ("dataset/1.json", movie), ("dataset/1.jpeg", b"")]);
    let _ = data::mmimdb::load(dir.path(), SplitName::Train, LoadOptions { skip_bad: true });
}

/// The input as a safetensors weights file: opened, then every tensor read as `f32`.
pub fn safetensors_file(input: &[u8]) {
    let dir = folder(&[("model.safetensors", input)]);
    let path = dir.path().join("model.safetensors");
    let _ = backbones::weights::tensor_names(&path);
    if let Ok(file) = backbones::weights::SafetensorsFile::open(&path) {
        for key in file.keys() {
            let _ = file.tensor(&key);
        }
    }
}

/// The input as a CTranslate2 `model.bin`: indexed, every variable read, and the Whisper
/// encoder's configuration derived from it.
pub fn ct2_model(input: &[u8]) {
    let dir = folder(&[("model.bin", input)]);
    if let Ok(model) = backbones::ct2::Ct2Model::open(&dir.path().join("model.bin")) {
        for key in model.keys() {
            let _ = model.tensor(&key);
            let _ = model.scalar_int(&key);
        }
        if let Ok(config) = backbones::audio::whisper::whisper_config(&model, backbones::Pooling::Mean) {
            assert!(config.d_model > 0 && config.n_heads > 0 && config.d_model % config.n_heads == 0, "{config:?}");
        }
    }
}

/// The input as a WAV file: decoded, then resampled to 16 kHz.
pub fn wav(input: &[u8]) {
    let dir = folder(&[("a.wav", input)]);
    if let Ok((samples, rate)) = data::read_wav(&dir.path().join("a.wav")) {
        let _ = data::resample(&samples, rate, data::TARGET_RATE);
    }
}

/// The input as an adapter's `adapter_config.json`.
pub fn adapter_config(input: &[u8]) {
    let dir = folder(&[(mope_core::ADAPTER_CONFIG_FILE, input)]);
    let _ = mope_core::AdapterConfig::read(dir.path());
}

/// Valid inputs of each target, for mutation: what a user's file looks like.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let text = |items: &[&str]| items.iter().map(|s| s.as_bytes().to_vec()).collect();
    match target {
        "experiment_spec" => text(&[
            include_str!("../../../experiments/emoji/mope/experiment.toml"),
            include_str!("../../../experiments/emoji-image/pmoe/experiment.toml"),
            "[data]\ndataset = \"jsonl\"\nroot = \"d\"\n[model]\nmethod = \"mope\"\nmain = \"a\"\ncomplementary = \"b\"\n\n--set\nmoe_n_experts=2\ntrain.lr=1e-3\ntrain.schedule={ kind = \"constant\" }\n",
        ]),
        "dataset_json_lines" => text(&[
            "{\"id\": 1, \"img\": \"x.png\", \"text\": \"a cat\", \"label\": \"a\"}\n{\"id\": \"2\", \"text\": \"b\", \"label\": \"b\"}\n\n",
            "{\"id\": 3, \"audio\": \"x.png\", \"label\": \"c\"}\n{\"id\": 4}\n",
        ]),
        "metrics_json_lines" => text(&[concat!(
            "{\"event\":\"step\",\"epoch\":1,\"step\":1,\"loss\":1.5}\n",
            "{\"event\":\"epoch\",\"epoch\":1,\"train_loss\":1.2,\"val\":{\"loss\":1.1,\"importance_loss\":0.0,\"metrics\":{\"accuracy\":50.0},\"samples\":3,\"routing\":[]},\"best\":true}\n",
            "{\"event\":\"test\",\"split\":\"test\",\"epoch\":1,\"report\":{\"loss\":1.0,\"importance_loss\":0.0,\"metrics\":{\"accuracy\":60.0},\"samples\":3,\"routing\":[]}}\n",
        )]),
        "food101_titles" => text(&[
            "a.jpg,Apple pie,apple_pie\nb.jpg,\"Pie, with \"\"quotes\"\"\",apple_pie\r\nc.jpg,\"multi\nline\",apple_pie\n",
            "a.jpg,only two\n",
        ]),
        "mmimdb_json" => text(&[
            "{\"genres\": [\"Drama\", \"Comedy \"], \"plot\": [\"short\", \"a longer plot\"]}",
            "{\"train\": [\"1\", 2], \"dev\": []}\u{0}{\"genres\": [\"News\"], \"plot\": []}",
        ]),
        "safetensors_file" => vec![safetensors_seed(safetensors::Dtype::F32), safetensors_seed(safetensors::Dtype::F16), safetensors_seed(safetensors::Dtype::BF16)],
        "ct2_model" => vec![ct2_seed()],
        "wav" => vec![
            wav_seed(hound::SampleFormat::Int, 16, 16_000, 1),
            wav_seed(hound::SampleFormat::Int, 24, 8_000, 2),
            wav_seed(hound::SampleFormat::Float, 32, 44_100, 1),
        ],
        "adapter_config" => text(&[concat!(
            "{\"format_version\": 1, \"method\": \"mope\", \"base_model\": {\"main\": \"a\"}, \"model_config\": {},",
            " \"trainable_params\": 10, \"total_params\": 100, \"tensors\": {\"w\": [2, 5]}, \"library_version\": \"0.1.0\"}\n",
        )]),
        other => panic!("no target `{other}`"),
    }
}

/// A safetensors file of two small tensors of `dtype`.
fn safetensors_seed(dtype: safetensors::Dtype) -> Vec<u8> {
    let width = if dtype == safetensors::Dtype::F32 { 4 } else { 2 };
    let (a, b) = (vec![1u8; 6 * width], vec![2u8; 3 * width]);
    let tensors = [
        ("encoder.weight", safetensors::tensor::TensorView::new(dtype, vec![2, 3], &a).expect("sizes match")),
        ("encoder.bias", safetensors::tensor::TensorView::new(dtype, vec![3], &b).expect("sizes match")),
    ];
    safetensors::serialize(tensors, None).expect("serialises")
}

/// A CTranslate2 version-6 Whisper-like model: the variables the encoder's configuration reads
/// (`d_model` 4, 2 mels, `d_ff` 8, 3 positions, 2 heads) and an alias.
fn ct2_seed() -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, "WhisperSpec");
    out.extend_from_slice(&1u32.to_le_bytes());
    let variables: [(&str, &[u32], u8); 4] = [
        ("encoder/conv1/weight", &[4, 2, 3], 0),
        ("encoder/layer_0/ffn/linear_0/weight", &[8, 4], 4),
        ("encoder/position_encodings/encodings", &[3, 4], 0),
        ("encoder/num_heads", &[], 3),
    ];
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, dims, dtype) in variables {
        string(&mut out, name);
        out.push(dims.len() as u8);
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(dtype);
        let width = match dtype {
            4 => 2,
            _ => 4,
        };
        let len = dims.iter().product::<u32>() as usize * width;
        out.extend_from_slice(&(len as u32).to_le_bytes());
        if name == "encoder/num_heads" {
            out.extend_from_slice(&2i32.to_le_bytes());
        } else {
            out.extend((0..len).map(|i| (i % 7) as u8));
        }
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    string(&mut out, "encoder/heads");
    string(&mut out, "encoder/num_heads");
    out
}

/// A short WAV file: `channels` channels of a ramp at `rate`.
fn wav_seed(format: hound::SampleFormat, bits: u16, rate: u32, channels: u16) -> Vec<u8> {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format: format };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("a WAV writer");
    for i in 0..40 * i32::from(channels) {
        match format {
            hound::SampleFormat::Float => writer.write_sample(i as f32 / 40.0 - 0.5).expect("written"),
            hound::SampleFormat::Int => writer.write_sample((i - 20) * (1 << (bits - 8))).expect("written"),
        }
    }
    writer.finalize().expect("finalised");
    bytes.into_inner()
}
