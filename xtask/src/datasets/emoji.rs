//! A small real image+text dataset built from two npm packages: Google's Noto emoji images
//! (`emoji-datasource-google@16.0.0`, images Apache-2.0, data MIT) and their CLDR names and tags
//! (`emojibase-data@17.0.0`, MIT). The task is the emoji's category (9 classes: Smileys &
//! Emotion, People & Body, Animals & Nature, Food & Drink, Travel & Places, Activities, Objects,
//! Symbols, Flags; the 5 skin-tone "Component" entries are left out).
//!
//! The text is the CLDR name and tags with the words of the category names removed ("flag",
//! "food", "animal", …), so that it does not spell out the label; the image is the 64×64 Noto
//! PNG. Splits are deterministic and stratified: 70% train, 15% val, 15% test. The output is the
//! JSON-lines layout that `data::jsonl` reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use anyhow::{Context, Result};

use super::read;
use super::stratify::train_val_test;

/// The categories, in the order of the class ids.
pub const CATEGORIES: [&str; 9] =
    ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects", "Symbols", "Flags"];

/// Words removed from the text because they name a category.
const CATEGORY_WORDS: [&str; 22] = [
    "smiley", "smileys", "emotion", "emotions", "people", "person", "body", "animal", "animals", "nature", "food", "drink", "travel",
    "place", "places", "activity", "activities", "object", "objects", "symbol", "symbols", "flag",
];

#[derive(Deserialize)]
struct Datasource {
    unified: String,
    image: String,
    category: String,
    #[serde(default)]
    has_img_google: bool,
}

#[derive(Deserialize)]
struct Cldr {
    hexcode: String,
    label: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Samples per split (train, val, test).
    pub sizes: [usize; 3],
    /// Entries left out (components, no image, no CLDR text).
    pub left_out: usize,
}

fn strip_fe0f(hex: &str) -> String {
    hex.split('-').filter(|p| !p.eq_ignore_ascii_case("FE0F")).collect::<Vec<_>>().join("-").to_uppercase()
}

/// The text of an emoji: its CLDR name and tags without category words, deduplicated.
pub fn text_of(label: &str, tags: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    for phrase in std::iter::once(label).chain(tags.iter().map(String::as_str)) {
        let kept: Vec<&str> = phrase
            .split(|c: char| c.is_whitespace() || c == ':')
            .filter(|w| !w.is_empty() && !CATEGORY_WORDS.contains(&w.to_lowercase().as_str()))
            .collect();
        let phrase = kept.join(" ");
        if !phrase.is_empty() && !words.contains(&phrase) {
            words.push(phrase);
        }
    }
    words.join(", ")
}

/// Builds the dataset from the unpacked packages (`datasource` holds `emoji.json` and
/// `img/google/64/`; `emojibase` holds `en/data.json`) into `out`.
pub fn build(datasource: &Path, emojibase: &Path, out: &Path) -> Result<BuildReport> {
    let emoji_json = datasource.join("emoji.json");
    let entries: Vec<Datasource> =
        serde_json::from_str(&read(&emoji_json)?).with_context(|| format!("{}: not the emoji-datasource layout", emoji_json.display()))?;
    let cldr_json = emojibase.join("en/data.json");
    let cldr: Vec<Cldr> = serde_json::from_str(&read(&cldr_json)?).with_context(|| format!("{}: not the emojibase layout", cldr_json.display()))?;
    let cldr: BTreeMap<String, Cldr> = cldr.into_iter().map(|c| (strip_fe0f(&c.hexcode), c)).collect();

    let images = out.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("writing {}", images.display()))?;
    let mut rows = Vec::new();
    let mut left_out = 0;
    for entry in entries {
        let class = CATEGORIES.iter().position(|c| *c == entry.category);
        let text = cldr.get(&strip_fe0f(&entry.unified)).map(|c| text_of(&c.label, c.tags.as_deref().unwrap_or(&[])));
        let src = datasource.join("img/google/64").join(&entry.image);
        match (class, text) {
            (Some(class), Some(text)) if entry.has_img_google && !text.is_empty() && src.is_file() => {
                let dst = images.join(&entry.image);
                std::fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
                rows.push((entry.unified.to_lowercase(), format!("images/{}", entry.image), text, class));
            }
            _ => left_out += 1,
        }
    }
    rows.sort();
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let classes: Vec<usize> = rows.iter().map(|r| r.3).collect();
    let [train, val, test] = train_val_test(&ids, &classes, (1, 2));

    let write = |name: &str, indices: &[usize]| -> Result<()> {
        let path = out.join(format!("{name}.jsonl"));
        let mut text = String::new();
        for &i in indices {
            let (id, img, caption, class) = &rows[i];
            let row = serde_json::json!({"id": id, "img": img, "text": caption, "label": CATEGORIES[*class]});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("train", &train)?;
    write("val", &val)?;
    write("test", &test)?;
    let labels = out.join("labels.txt");
    std::fs::write(&labels, CATEGORIES.join("\n") + "\n").with_context(|| format!("writing {}", labels.display()))?;
    Ok(BuildReport { sizes: [train.len(), val.len(), test.len()], left_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_drops_category_words_and_duplicates() {
        let tags = vec!["flag".to_string(), "Germany".to_string()];
        assert_eq!(text_of("flag: Germany", &tags), "Germany");
        let tags = vec!["face".to_string(), "grin".to_string(), "face".to_string()];
        assert_eq!(text_of("grinning face", &tags), "grinning face, face, grin");
        assert_eq!(text_of("red apple", &["fruit".into(), "food".into()]), "red apple, fruit");
    }

    #[test]
    fn fe0f_is_ignored_when_joining() {
        assert_eq!(strip_fe0f("0023-fe0f-20e3"), "0023-20E3");
        assert_eq!(strip_fe0f("1F600"), "1F600");
    }
}
