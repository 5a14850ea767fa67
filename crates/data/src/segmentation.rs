//! NYUDv2 (40 classes) and SUN RGB-D (37 classes): RGB-D semantic segmentation in the layout the
//! MoPE code reads (CEN/TokenFusion's):
//! ```text
//! <root>/{rgb,depth,masks}/<000001>.png
//! <root>/{train,val}.txt     TAB-separated, one sample per line: rgb<TAB>mask<TAB>depth
//! ```
//! Masks are single-channel class ids with 255 for unlabelled pixels. SUN RGB-D quirk, mirrored
//! from the official loader: when a listed mask does not exist, the mask whose 6-digit index is
//! 5050 higher is used (the first 5,050 label images are the test set).

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing, read};

/// Label value of unlabelled pixels.
pub const IGNORE_INDEX: u8 = 255;

/// Which RGB-D dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RgbdDataset {
    /// NYUDv2, 40 classes.
    NyuDv2,
    /// SUN RGB-D, 37 classes.
    SunRgbd,
}

impl RgbdDataset {
    fn name(self) -> &'static str {
        match self {
            Self::NyuDv2 => "nyudv2",
            Self::SunRgbd => "sunrgbd",
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Self::NyuDv2 => 40,
            Self::SunRgbd => 37,
        }
    }
}

/// SUN RGB-D's fallback: the same path with its 6-digit index raised by 5050.
fn offset_mask(path: &Path) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_str()?;
    let index: usize = stem.parse().ok()?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("png");
    Some(path.with_file_name(format!("{:06}.{ext}", index + 5050)))
}

/// Loads a split of NYUDv2 or SUN RGB-D from `root` (`val` reads `val.txt`; there is no `test`).
pub fn load(root: &Path, dataset: RgbdDataset, split: SplitName, options: LoadOptions) -> Result<Split, DataError> {
    let list = match split {
        SplitName::Train => root.join("train.txt"),
        SplitName::Val => root.join("val.txt"),
        SplitName::Test => return Err(DataError::NoSuchSplit { dataset: dataset.name().into(), split: "test".into() }),
    };
    let text = read(&list)?;
    let labels: Vec<String> = (0..dataset.num_classes()).map(|c| format!("class {c}")).collect();
    let mut collector = Collector::new(options);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 1;
        collector.take((|| {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            let [rgb, mask, depth] = fields.as_slice() else {
                return Err(DataError::malformed(&list, line_no, format!("expected 3 TAB-separated paths (rgb, mask, depth), found {}", fields.len())));
            };
            let image = existing(root.join(rgb), "image", &list, line_no)?;
            let depth = existing(root.join(depth), "depth", &list, line_no)?;
            let mut mask_path = root.join(mask);
            if !mask_path.is_file() && dataset == RgbdDataset::SunRgbd {
                mask_path = offset_mask(&mask_path).unwrap_or(mask_path);
            }
            let mask = existing(mask_path, "mask", &list, line_no)?;
            let id = Path::new(rgb).file_stem().and_then(|s| s.to_str()).unwrap_or(rgb).to_string();
            Ok(Some(Sample { id, image: Some(image), depth: Some(depth), audio: None, text: None, target: Target::Mask(mask) }))
        })())?;
    }
    Ok(Split {
        dataset: dataset.name().into(),
        split,
        task: Task::Segmentation { num_classes: dataset.num_classes(), ignore_index: IGNORE_INDEX },
        labels,
        samples: collector.samples,
        skipped: collector.skipped,
    })
}
