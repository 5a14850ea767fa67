//! A small real audio+image dataset in the style of AV-MNIST: a handwritten digit (scikit-learn's
//! 8×8 digits, 1,797 images, UCI, BSD-3-Clause) paired with the same digit spoken. Speech is
//! rendered by espeak-ng in 24 voices (6 English accents × 4 variants) and recorded by a real
//! speaker (Asterisk's `en_US_f_Allison` prompts, Debian `asterisk-core-sounds-en-wav`,
//! CC-BY-SA-3.0). Two tasks ([`Pairing`]): the digit (10 classes; the speech says the image's
//! digit, so either modality alone decides it), and **digits-match**: whether the spoken digit
//! is the written one (2 classes, half of each digit's images paired with another digit's
//! speech), which neither modality decides alone.
//!
//! Splits are stratified over the images (70/15/15) and **disjoint in voices**: train speaks
//! with 4 accents in 4 variants (16 voices), val and test each with one unseen accent (4 voices),
//! and the real speaker is only in test, so the test set measures transfer to unseen and real
//! voices. The output is the JSON-lines layout that `data::jsonl` reads
//! with `img` and `audio` fields.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::read;
use super::stratify::train_val_test;

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

/// How images are paired with speech, and what the label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// The speech says the image's digit; the label is the digit.
    SameDigit,
    /// Every other image of each digit (in split order) is paired with another digit's speech,
    /// cycling through the nine others; the label is [`MATCH_LABELS`]` [0]` or `[1]`.
    Match,
}

/// The labels of [`Pairing::Match`], in the order of the class ids.
pub const MATCH_LABELS: [&str; 2] = ["different", "same"];

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Pairs per split (train, val, test).
    pub sizes: [usize; 3],
}

/// Builds the dataset into `out` from scikit-learn's `digits.csv` (decompressed), the real
/// recordings `<recorded>/<d>.wav`, and espeak-ng renderings `<rendered>/<voice>/<d>.wav`.
pub fn build(digits_csv: &Path, recorded: &Path, rendered: &Path, out: &Path, pairing: Pairing) -> Result<BuildReport> {
    let text = read(digits_csv)?;
    let mut images: Vec<(Vec<u8>, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<u8> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>().map(|x| x as u8))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} line {}: not a number", digits_csv.display(), i + 1))?;
        let [pixels @ .., label] = values.as_slice() else { unreachable!("split yields at least one field") };
        if pixels.len() != 64 || *label > 9 || pixels.iter().any(|&p| p > 16) {
            bail!("{} line {}: expected 64 pixels in 0..=16 and a digit", digits_csv.display(), i + 1);
        }
        images.push((pixels.iter().map(|&p| (p as u32 * 255 / 16) as u8).collect(), *label as usize));
    }
    let voices = espeak_voices();
    let split_voices: [Vec<String>; 3] = [voices[..16].to_vec(), voices[16..20].to_vec(), voices[20..].to_vec()];
    for dir in ["images", "audio"] {
        std::fs::create_dir_all(out.join(dir)).with_context(|| format!("writing {}", out.join(dir).display()))?;
    }
    // Copy the clips: audio/<voice>/<d>.wav, the real speaker as `allison`.
    let copy = |from: PathBuf, voice: &str, digit: usize| -> Result<String> {
        let rel = format!("audio/{voice}/{digit}.wav");
        let to = out.join(&rel);
        if !to.exists() {
            std::fs::create_dir_all(to.parent().expect("has a parent")).with_context(|| format!("writing {}", to.display()))?;
            std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
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
        // Images of each digit seen so far in this split, and clips of each spoken digit.
        let (mut seen, mut spoken_seen) = ([0usize; 10], [0usize; 10]);
        let mut lines = String::new();
        for &i in indices {
            let (pixels, digit) = (&images[i].0, images[i].1);
            let img = format!("images/{}.png", ids[i]);
            let path = out.join(&img);
            write_grey_png(&path, 8, 8, pixels)?;
            let (spoken, label) = match pairing {
                Pairing::SameDigit => (digit, DIGITS[digit]),
                Pairing::Match if seen[digit] % 2 == 0 => (digit, MATCH_LABELS[1]),
                Pairing::Match => ((digit + 1 + (seen[digit] / 2) % 9) % 10, MATCH_LABELS[0]),
            };
            seen[digit] += 1;
            let (voice, dir) = &clips[spoken_seen[spoken] % clips.len()];
            spoken_seen[spoken] += 1;
            let audio = copy(dir.join(format!("{spoken}.wav")), voice, spoken)?;
            let row = serde_json::json!({"id": ids[i], "img": img, "audio": audio, "label": label});
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
        let file = out.join(format!("{name}.jsonl"));
        std::fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
        sizes[s] = indices.len();
    }
    let labels = out.join("labels.txt");
    let names: &[&str] = match pairing {
        Pairing::SameDigit => &DIGITS,
        Pairing::Match => &MATCH_LABELS,
    };
    std::fs::write(&labels, names.join("\n") + "\n").with_context(|| format!("writing {}", labels.display()))?;
    Ok(BuildReport { sizes })
}

/// Writes `pixels` (row-major, one byte each) as a greyscale PNG.
fn write_grey_png(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().with_context(|| format!("writing {}", path.display()))?;
    writer.write_image_data(pixels).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))
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
