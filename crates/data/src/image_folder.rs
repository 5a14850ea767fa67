//! Image classification datasets a user points at, in the layouts the visual prompt-tuning
//! literature uses. The first that matches `<root>` is read:
//!
//! ```text
//! VTAB-1k (NOAH release)    <root>/{train800,val200,test}.txt   `<image path relative to root> <class id>` per line
//!                           <root>/labels.txt (optional)        class names, one per line, in id order
//! FGVC (VPT's JSON)         <root>/{train,val,test}.json        {"<image path relative to root>": <class id>, ...}
//!                           <root>/labels.txt (optional)
//! folder per class          <root>/{train,val,test}/<class>/<image>   (`valid`/`validation` for val)
//!                           <root>/<class>/<image>                     (no split folders)
//! ```
//!
//! Folder-per-class classes are the sorted folder names (torchvision's `ImageFolder` order).
//! Without a validation folder, 10% of `train` (stratified, seeded by file name) is held out;
//! without any split folder, a stratified 70/15/15 split is drawn the same way. A missing
//! `test` is [`DataError::NoSuchSplit`]: the validation split then reports the result.
//! Images are `.png`, `.jpg` or `.jpeg` (any case); other files are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read_labels};
use crate::stratify;

const NAME: &str = "image-folder";
const VTAB_LISTS: [(SplitName, &str); 3] = [(SplitName::Train, "train800.txt"), (SplitName::Val, "val200.txt"), (SplitName::Test, "test.txt")];

/// Loads `split` of the image classification dataset at `root`.
pub fn load(root: &Path, split: SplitName, options: LoadOptions) -> Result<Split, DataError> {
    if root.join("train800.txt").is_file() {
        return load_lists(root, split, options, &VTAB_LISTS.map(|(s, f)| (s, root.join(f))), read_vtab_list);
    }
    if root.join("train.json").is_file() {
        let files = [SplitName::Train, SplitName::Val, SplitName::Test].map(|s| (s, root.join(format!("{s}.json"))));
        return load_lists(root, split, options, &files, read_json_list);
    }
    load_folders(root, split)
}

/// The rows of a list file: `(line, relative path, class id)`, or what is wrong with the line.
type Rows = Vec<Result<(usize, String, usize), DataError>>;

fn read_vtab_list(path: &Path) -> Result<Rows, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let row = |line: usize, text: &str| {
        let (file, class) = text.trim().rsplit_once(char::is_whitespace).ok_or_else(|| DataError::malformed(path, line, "expected `<image path> <class id>`"))?;
        let class = class.parse().map_err(|_| DataError::malformed(path, line, format!("class id `{class}` is not a non-negative integer")))?;
        Ok((line, file.trim().to_string(), class))
    };
    Ok(text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| row(i + 1, l)).collect())
}

fn read_json_list(path: &Path) -> Result<Rows, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let map: BTreeMap<String, usize> =
        serde_json::from_str(&text).map_err(|e| DataError::malformed(path, e.line(), format!("expected {{\"<image path>\": <class id>, ...}}: {e}")))?;
    Ok(map.into_iter().map(|(file, class)| Ok((0, file, class))).collect())
}

fn load_lists(root: &Path, split: SplitName, options: LoadOptions, files: &[(SplitName, PathBuf); 3], read: fn(&Path) -> Result<Rows, DataError>) -> Result<Split, DataError> {
    let (_, path) = files.iter().find(|(s, _)| *s == split).expect("every split has a file name");
    if !path.is_file() {
        return Err(DataError::NoSuchSplit { dataset: NAME.into(), split: split.to_string() });
    }
    // Class ids are shared by the splits: the label set spans every list.
    let mut num_classes = 0;
    for (_, file) in files.iter().filter(|(_, f)| f.is_file()) {
        num_classes = read(file)?.iter().flatten().map(|(_, _, c)| c + 1).fold(num_classes, usize::max);
    }
    let labels_path = root.join("labels.txt");
    let labels = if labels_path.is_file() { read_labels(&labels_path)? } else { (0..num_classes).map(|c| c.to_string()).collect() };
    let mut collector = Collector::new(options);
    for row in read(path)? {
        let sample = row.and_then(|(line, file, class)| {
            if class >= labels.len() {
                return Err(DataError::malformed(path, line, format!("class id {class} out of range: {} has {} labels", labels_path.display(), labels.len())));
            }
            let image = existing(root.join(&file), "image", path, line)?;
            Ok(Some(Sample { id: file, image: Some(image), depth: None, audio: None, text: None, target: Target::Class(class) }))
        });
        collector.take(sample)?;
    }
    Ok(Split { dataset: NAME.into(), split, task: Task::Classification { num_classes: labels.len() }, labels, samples: collector.samples, skipped: collector.skipped })
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?.map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e))).collect::<Result<_, _>>()?;
    entries.sort();
    Ok(entries)
}

/// Class names, and each image with its class id.
type Labelled = (Vec<String>, Vec<(PathBuf, usize)>);

/// The class folders of `dir`, sorted.
fn class_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let classes: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(DataError::malformed(dir, 0, "no class folder (expected <class>/<image> inside, or a VTAB-1k / FGVC list file)"));
    }
    Ok(classes)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name().expect("a folder has a name").to_string_lossy().into_owned()
}

/// The class folders of `dir` and their images.
fn class_folders(dir: &Path) -> Result<Labelled, DataError> {
    let classes = class_dirs(dir)?;
    let mut images = Vec::new();
    for (class, folder) in classes.iter().enumerate() {
        images.extend(sorted_entries(folder)?.into_iter().filter(|p| p.is_file() && is_image(p)).map(|p| (p, class)));
    }
    Ok((classes.iter().map(|c| folder_name(c)).collect(), images))
}

/// Seeds of the stratified splits drawn where a dataset has no split folders of its own.
const TEST_SEED: u64 = 0x7E57;
const VAL_SEED: u64 = 0x1F01DE5;

/// The images the stratified draw `choose` keeps, given every image's id (its path under
/// `root`) and class.
fn stratified_pick(root: &Path, images: &[(PathBuf, usize)], choose: impl FnOnce(&[&str], &[usize]) -> Vec<usize>) -> Vec<(PathBuf, usize)> {
    let ids = relative_ids(root, images);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let classes: Vec<usize> = images.iter().map(|(_, c)| *c).collect();
    choose(&ids, &classes).into_iter().map(|i| images[i].clone()).collect()
}

fn load_folders(root: &Path, split: SplitName) -> Result<Split, DataError> {
    let folder = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.is_dir());
    let (labels, images) = match (folder(&["train"]), split) {
        (Some(train), SplitName::Train | SplitName::Val) => match (folder(&["val", "valid", "validation"]), split) {
            (Some(val), SplitName::Val) => with_labels_of(&train, &val)?,
            (Some(_), _) => class_folders(&train)?,
            (None, _) => {
                let (labels, images) = class_folders(&train)?;
                let picked = stratified_pick(root, &images, |ids, classes| {
                    let (kept, held) = stratify::hold_out(ids, classes, ids.len() / 10, VAL_SEED);
                    if split == SplitName::Train { kept } else { held }
                });
                (labels, picked)
            }
        },
        (Some(train), SplitName::Test) => match folder(&["test"]) {
            Some(test) => with_labels_of(&train, &test)?,
            None => return Err(DataError::NoSuchSplit { dataset: NAME.into(), split: split.to_string() }),
        },
        (None, _) => {
            let (labels, images) = class_folders(root)?;
            let picked = stratified_pick(root, &images, |ids, classes| {
                let [train, val, test] = stratify::train_val_test(ids, classes, (TEST_SEED, VAL_SEED));
                match split {
                    SplitName::Train => train,
                    SplitName::Val => val,
                    SplitName::Test => test,
                }
            });
            (labels, picked)
        }
    };
    let ids = relative_ids(root, &images);
    let samples = images
        .into_iter()
        .zip(ids)
        .map(|((image, class), id)| Sample { id, image: Some(image), depth: None, audio: None, text: None, target: Target::Class(class) })
        .collect();
    Ok(Split { dataset: NAME.into(), split, task: Task::Classification { num_classes: labels.len() }, labels, samples, skipped: Vec::new() })
}

/// The images of `dir`, with the class ids of `train`'s folders (a class folder `train` lacks is
/// an error naming it).
fn with_labels_of(train: &Path, dir: &Path) -> Result<Labelled, DataError> {
    // Only the names of train's class folders, not their images.
    let labels: Vec<String> = class_dirs(train)?.iter().map(|c| folder_name(c)).collect();
    let (names, images) = class_folders(dir)?;
    let mut mapped = Vec::with_capacity(images.len());
    for (image, class) in images {
        let name = &names[class];
        let id = labels.iter().position(|l| l == name).ok_or_else(|| DataError::malformed(&dir.join(name), 0, format!("class `{name}` has no folder in {}", train.display())))?;
        mapped.push((image, id));
    }
    Ok((labels, mapped))
}

fn relative_ids(root: &Path, images: &[(PathBuf, usize)]) -> Vec<String> {
    images.iter().map(|(p, _)| p.strip_prefix(root).unwrap_or(p).to_string_lossy().into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, files: &[&str]) {
        for f in files {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
    }

    fn classes(split: &Split) -> Vec<(String, usize)> {
        split.samples.iter().map(|s| (s.id.clone(), match s.target { Target::Class(c) => c, _ => unreachable!() })).collect()
    }

    #[test]
    fn vtab_lists_with_and_without_label_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, &["images/a.jpg", "images/b.jpg", "images/c.jpg"]);
        std::fs::write(root.join("train800.txt"), "images/a.jpg 0\nimages/b.jpg 2\n").unwrap();
        std::fs::write(root.join("val200.txt"), "images/c.jpg 1\n").unwrap();
        let train = load(root, SplitName::Train, LoadOptions::default()).unwrap();
        assert_eq!(classes(&train), [("images/a.jpg".to_string(), 0), ("images/b.jpg".to_string(), 2)]);
        assert_eq!(train.labels, ["0", "1", "2"]);
        assert!(matches!(load(root, SplitName::Test, LoadOptions::default()), Err(DataError::NoSuchSplit { .. })));
        std::fs::write(root.join("labels.txt"), "cat\ndog\nfox\n").unwrap();
        assert_eq!(load(root, SplitName::Val, LoadOptions::default()).unwrap().labels, ["cat", "dog", "fox"]);
        std::fs::write(root.join("test.txt"), "images/a.jpg 1\nimages/zzz.jpg 0\nimages/b.jpg seven\n").unwrap();
        let error = load(root, SplitName::Test, LoadOptions::default()).unwrap_err().to_string();
        assert!(error.contains("test.txt:2: image file") && error.contains("zzz.jpg"), "{error}");
        let skipped = load(root, SplitName::Test, LoadOptions { skip_bad: true }).unwrap();
        assert_eq!((skipped.samples.len(), skipped.skipped.len()), (1, 2));
        assert!(skipped.skipped[1].to_string().contains("test.txt:3: class id `seven` is not a non-negative integer"));
    }

    #[test]
    fn fgvc_json_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, &["x/1.png", "x/2.png"]);
        std::fs::write(root.join("train.json"), r#"{"x/2.png": 1, "x/1.png": 0}"#).unwrap();
        let train = load(root, SplitName::Train, LoadOptions::default()).unwrap();
        assert_eq!(classes(&train), [("x/1.png".to_string(), 0), ("x/2.png".to_string(), 1)]);
        std::fs::write(root.join("val.json"), "[1, 2]").unwrap();
        let error = load(root, SplitName::Val, LoadOptions::default()).unwrap_err().to_string();
        assert!(error.contains("val.json:1: expected {\"<image path>\": <class id>, ...}"), "{error}");
    }

    #[test]
    fn split_folders_share_the_train_class_ids() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, &["train/owl/1.png", "train/ant/2.JPG", "train/ant/notes.txt", "test/owl/3.png"]);
        let train = load(root, SplitName::Train, LoadOptions::default()).unwrap();
        assert_eq!(train.labels, ["ant", "owl"]);
        let test = load(root, SplitName::Test, LoadOptions::default()).unwrap();
        assert_eq!(classes(&test), [("test/owl/3.png".to_string(), 1)]);
        touch(root, &["val/bee/4.png"]);
        let error = load(root, SplitName::Val, LoadOptions::default()).unwrap_err().to_string();
        assert!(error.contains("class `bee` has no folder in"), "{error}");
    }

    #[test]
    fn folders_without_splits_are_split_stratified_and_disjoint() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files: Vec<String> = (0..40).map(|i| format!("{}/{i}.png", ["a", "b"][i % 2])).collect();
        touch(root, &files.iter().map(String::as_str).collect::<Vec<_>>());
        let splits: Vec<Split> = [SplitName::Train, SplitName::Val, SplitName::Test].map(|s| load(root, s, LoadOptions::default()).unwrap()).into();
        let sizes: Vec<usize> = splits.iter().map(|s| s.samples.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert_eq!(sizes, [28, 6, 6]);
        let mut ids: Vec<String> = splits.iter().flat_map(|s| s.samples.iter().map(|x| x.id.clone())).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40, "disjoint");
        for s in &splits[1..] {
            assert_eq!(s.samples.iter().filter(|x| x.target == Target::Class(0)).count(), 3, "stratified");
        }
    }
}
