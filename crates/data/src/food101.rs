//! UPMC Food-101: images of 101 dishes with the title of the recipe page they come from.
//!
//! Layout (the official release, as the MoPE and missing-aware-prompts code read it):
//! ```text
//! <root>/images/{train,test}/<class>/<file>.jpg
//! <root>/texts/{train,test}_titles.csv    no header; image_file,title,class (RFC 4180: titles
//!                                         may be quoted, with doubled quotes and commas inside)
//! ```
//! Labels are the class names of the training titles, sorted. The official test split is `test`;
//! `val` is a deterministic stratified hold-out of `val_size` training samples (MoPE holds out
//! 5,000), and `train` is the rest.

use std::path::Path;

use crate::error::DataError;
use crate::sample::{Collector, LoadOptions, Sample, Split, SplitName, Target, Task, existing};
use crate::stratify::hold_out;

/// Training samples held out for validation by default, as the official code.
pub const DEFAULT_VAL_SIZE: usize = 5000;

struct Row {
    line: usize,
    file: String,
    title: String,
    class: String,
}

fn read_titles(path: &Path) -> Result<Vec<Result<Row, DataError>>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    // 1-based line where a record starts (quoted titles may span lines, so records are not lines).
    // The reader's offset can sit on the `\n` of a CRLF terminator: skip terminators first.
    let line_of = |offset: u64| {
        let mut start = (offset as usize).min(bytes.len());
        while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
            start += 1;
        }
        1 + bytes[..start].iter().filter(|&&b| b == b'\n').count()
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes.as_slice());
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = line_of(reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Err(e) => rows.push(Err(DataError::malformed(path, line, format!("invalid CSV: {e}")))),
            Ok(true) if record.len() != 3 => rows.push(Err(DataError::malformed(
                path,
                line,
                format!("expected 3 fields (image_file,title,class), found {}", record.len()),
            ))),
            Ok(true) => rows.push(Ok(Row { line, file: record[0].to_string(), title: record[1].to_string(), class: record[2].to_string() })),
        }
    }
    Ok(rows)
}

/// Loads a split of Food-101 from `root`, holding out `val_size` training samples for `val`.
pub fn load(root: &Path, split: SplitName, val_size: usize, options: LoadOptions) -> Result<Split, DataError> {
    let train_csv = root.join("texts/train_titles.csv");
    let train_rows = read_titles(&train_csv)?;
    let mut labels: Vec<String> = train_rows.iter().flatten().map(|r| r.class.clone()).collect();
    labels.sort();
    labels.dedup();
    let (csv_path, rows, image_split) = match split {
        SplitName::Test => {
            let path = root.join("texts/test_titles.csv");
            let rows = read_titles(&path)?;
            (path, rows, "test")
        }
        SplitName::Train | SplitName::Val => (train_csv, train_rows, "train"),
    };
    let mut collector = Collector::new(options);
    for row in rows {
        collector.take(row.and_then(|r| {
            let class = labels.binary_search(&r.class).map_err(|_| DataError::unknown_label(&csv_path, r.line, &r.class, &labels))?;
            let image = existing(root.join("images").join(image_split).join(&r.class).join(&r.file), "image", &csv_path, r.line)?;
            let id = r.file.trim_end_matches(".jpg").to_string();
            Ok(Some(Sample { id, image: Some(image), depth: None, audio: None, text: Some(r.title), target: Target::Class(class) }))
        }))?;
    }
    let mut samples = collector.samples;
    if split != SplitName::Test {
        let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
        let classes: Vec<usize> = samples.iter().map(|s| match s.target { Target::Class(c) => c, _ => unreachable!() }).collect();
        let (kept, held) = hold_out(&ids, &classes, val_size, 0);
        let chosen = if split == SplitName::Val { held } else { kept };
        samples = chosen.into_iter().map(|i| samples[i].clone()).collect();
    }
    Ok(Split {
        dataset: "food101".into(),
        split,
        task: Task::Classification { num_classes: labels.len() },
        labels,
        samples,
        skipped: collector.skipped,
    })
}
