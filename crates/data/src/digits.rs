//! A small real audio+image dataset in the style of AV-MNIST: a handwritten digit (scikit-learn's
//! 8×8 digits, 1,797 images, UCI, BSD-3-Clause) paired with the same digit spoken. Speech is
//! rendered by espeak-ng in 24 voices (6 English accents × 4 variants) and recorded by a real
//! speaker (Asterisk's `en_US_f_Allison` prompts, Debian `asterisk-core-sounds-en-wav`,
//! CC-BY-SA-3.0). Task: the digit (10 classes).
//!
//! Splits are stratified over the images (70/15/15) and **disjoint in voices**: train speaks
//! with 4 accents in 4 variants (16 voices), val and test each with one unseen accent (4 voices),
//! and the real speaker is only in test, so the test set measures transfer to unseen and real
//! voices. The output is the [`jsonl`](crate::jsonl) layout
//! with `img` and `audio` fields.

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::sample::read;
use crate::stratify::train_val_test;

/// The digit names, in the order of the class ids (and the words espeak-ng speaks).
pub const DIGITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// The espeak-ng voices, in order: the first 16 for train, the next 4 for val, the last 4 for test.
pub fn espeak_voices() -> Vec<String> {
    let accents = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd"];
    let variants = ["", "+f2", "+m3", "+f4"];
    // Train: 4 accents in all 4 variants; val and test: one unseen accent each, in all 4 variants.
    let mut voices = Vec::new();
    for variant in variants {
        for accent in accents {
            voices.push(format!("{accent}{variant}"));
        }
    }
    let order = [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 10, 16, 22, 5, 11, 17, 23];
    order.iter().map(|&i| voices[i].clone()).collect()
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Pairs per split (train, val, test).
    pub sizes: [usize; 3],
}

/// Builds the dataset into `out` from scikit-learn's `digits.csv` (decompressed), the real
/// recordings `<recorded>/<d>.wav`, and espeak-ng renderings `<rendered>/<voice>/<d>.wav`.
pub fn build(digits_csv: &Path, recorded: &Path, rendered: &Path, out: &Path) -> Result<BuildReport, DataError> {
    let text = read(digits_csv)?;
    let mut images: Vec<(Vec<u8>, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<u8> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>().map(|x| x as u8))
            .collect::<Result<_, _>>()
            .map_err(|e| DataError::malformed(digits_csv, i + 1, format!("not a number: {e}")))?;
        let [pixels @ .., label] = values.as_slice() else { unreachable!("split yields at least one field") };
        if pixels.len() != 64 || *label > 9 || pixels.iter().any(|&p| p > 16) {
            return Err(DataError::malformed(digits_csv, i + 1, "expected 64 pixels in 0..=16 and a digit"));
        }
        images.push((pixels.iter().map(|&p| (p as u32 * 255 / 16) as u8).collect(), *label as usize));
    }
    let voices = espeak_voices();
    let split_voices: [Vec<String>; 3] = [voices[..16].to_vec(), voices[16..20].to_vec(), voices[20..].to_vec()];
    for dir in ["images", "audio"] {
        std::fs::create_dir_all(out.join(dir)).map_err(|e| DataError::io(&out.join(dir), e))?;
    }
    // Copy the clips: audio/<voice>/<d>.wav, the real speaker as `allison`.
    let copy = |from: PathBuf, voice: &str, digit: usize| -> Result<String, DataError> {
        let rel = format!("audio/{voice}/{digit}.wav");
        let to = out.join(&rel);
        if !to.exists() {
            std::fs::create_dir_all(to.parent().expect("has a parent")).map_err(|e| DataError::io(&to, e))?;
            std::fs::copy(&from, &to).map_err(|e| DataError::io(&from, e))?;
        }
        Ok(rel)
    };
    let ids: Vec<String> = (0..images.len()).map(|i| format!("{i:04}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let classes: Vec<usize> = images.iter().map(|i| i.1).collect();
    let splits = train_val_test(&id_refs, &classes, (11, 12));
    let mut sizes = [0; 3];
    for (s, (name, indices)) in ["train", "val", "test"].iter().zip(&splits).enumerate() {
        let mut clips: Vec<(String, PathBuf)> = split_voices[s].iter().map(|v| (v.clone(), rendered.join(v))).collect();
        if s == 2 {
            clips.push(("allison".into(), recorded.to_path_buf()));
        }
        let mut seen = [0usize; 10];
        let mut lines = String::new();
        for &i in indices {
            let (pixels, digit) = &images[i];
            let img = format!("images/{}.png", ids[i]);
            let path = out.join(&img);
            image::GrayImage::from_raw(8, 8, pixels.clone())
                .expect("64 pixels")
                .save(&path)
                .map_err(|e| DataError::Decode { path: path.clone(), message: e.to_string() })?;
            let (voice, dir) = &clips[seen[*digit] % clips.len()];
            seen[*digit] += 1;
            let audio = copy(dir.join(format!("{digit}.wav")), voice, *digit)?;
            let row = serde_json::json!({"id": ids[i], "img": img, "audio": audio, "label": DIGITS[*digit]});
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
        let file = out.join(format!("{name}.jsonl"));
        std::fs::write(&file, lines).map_err(|e| DataError::io(&file, e))?;
        sizes[s] = indices.len();
    }
    let labels = out.join("labels.txt");
    std::fs::write(&labels, DIGITS.join("\n") + "\n").map_err(|e| DataError::io(&labels, e))?;
    Ok(BuildReport { sizes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voices_are_24_distinct_and_splits_get_several_accents() {
        let voices = espeak_voices();
        let mut distinct = voices.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 24);
        let test_accents: std::collections::BTreeSet<&str> = voices[20..].iter().map(|v| v.split('+').next().unwrap()).collect();
        assert_eq!(test_accents.len(), 1, "test holds one unseen accent in 4 variants");
        assert!(voices[..16].iter().all(|v| !v.starts_with("en-gb-x-gbcwmd")), "the test accent never appears in train");
    }
}
