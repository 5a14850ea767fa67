//! What the key of a cached value records of the files it was computed from: each file's path,
//! size and modification time (to the nanosecond where the file system keeps it), so that a
//! replaced image, recording or weights file is computed again rather than read from the cache.
//! Reading a stamp costs one `stat` per file, not a read of its contents.

use std::path::Path;

use crate::sample::Sample;
use crate::stratify::fnv1a;

/// `path|size|modified` of a file, or `path|missing` where it cannot be read.
pub fn file_stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            format!("{}|{}|{modified}", path.display(), meta.len())
        }
        Err(_) => format!("{}|missing", path.display()),
    }
}

/// The stamps of every file under `dir` (recursively, in name order), one per line: a snapshot
/// of an encoder's weights.
pub fn tree_stamp(dir: &Path) -> String {
    let mut stamps = Vec::new();
    collect_stamps(dir, &mut stamps);
    stamps.join("\n")
}

fn collect_stamps(dir: &Path, stamps: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        stamps.push(file_stamp(dir));
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_stamps(&path, stamps);
        } else {
            stamps.push(file_stamp(&path));
        }
    }
}

impl Sample {
    /// A hash of everything an encoder reads of this sample: its text and the stamps of its image,
    /// depth and audio files.
    pub fn inputs_stamp(&self) -> u64 {
        let files = [&self.image, &self.depth, &self.audio].map(|f| f.as_deref().map_or_else(String::new, file_stamp));
        fnv1a(&format!("{}\u{0}{}\u{0}{}\u{0}{}", self.text.as_deref().unwrap_or("\u{1}none"), files[0], files[1], files[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Target;

    #[test]
    fn a_changed_text_size_or_time_changes_the_stamp_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.png");
        std::fs::write(&image, b"12345").unwrap();
        let sample = Sample { id: "a".into(), image: Some(image.clone()), depth: None, audio: None, text: Some("a cat".into()), target: Target::Class(0) };
        let stamp = sample.inputs_stamp();
        assert_eq!(sample.inputs_stamp(), stamp, "stable");
        assert_ne!(Sample { text: Some("a dog".into()), ..sample.clone() }.inputs_stamp(), stamp);
        assert_ne!(Sample { text: None, ..sample.clone() }.inputs_stamp(), stamp);
        let set_time = |secs: u64| {
            std::fs::File::options().write(true).open(&image).unwrap().set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
        };
        set_time(1_000_000);
        let at_time = sample.inputs_stamp();
        std::fs::write(&image, b"54321").unwrap(); // same size, new contents
        set_time(1_000_001);
        assert_ne!(sample.inputs_stamp(), at_time, "modification time");
        std::fs::write(&image, b"123456").unwrap();
        set_time(1_000_001);
        let longer = sample.inputs_stamp();
        assert_ne!(longer, at_time, "size");
        let tree = tree_stamp(dir.path());
        assert!(tree.ends_with("a.png|6|1000001000000000"), "{tree}");
        std::fs::write(dir.path().join("b.safetensors"), b"x").unwrap();
        assert_ne!(tree_stamp(dir.path()), tree, "a new file");
    }
}
