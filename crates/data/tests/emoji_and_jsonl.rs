//! The JSON-lines layout loader, and the emoji image+text dataset built from npm packages by
//! `cargo xtask fetch-assets` (checked when it has been built; CI builds it).

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
