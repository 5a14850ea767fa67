//! Damage of every kind a user's files can suffer, each given to the `mope` binary: what it says
//! is the table of `docs/reliability.md`, which this test checks (and writes, with
//! `MOPE_WRITE_DAMAGE_TABLE=1`): a changed message fails it until the document says the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{copy_tree, mope, shapes_prompt_tuning, shapes_prompt_tuning_with, stderr, tiny_vit};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reliability.md");
const BEGIN: &str = "<!-- damage table: written by crates/train/tests/damage.rs -->";
const END: &str = "<!-- end of damage table -->";

/// The tiny ViT's snapshot copied to `dir/<name>`, with its weights rewritten by `change` (each
/// tensor's name, dtype, shape and bytes).
fn vit_with(dir: &Path, name: &str, change: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let vit = dir.join(name);
    copy_tree(&tiny_vit(), &vit);
    let bytes = std::fs::read(vit.join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    change(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors.iter().map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &vit.join("model.safetensors")).unwrap();
    vit
}

/// The tiny ViT's snapshot copied to `dir/<name>`, its weights file replaced by `bytes`.
fn vit_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let vit = dir.join(name);
    copy_tree(&tiny_vit(), &vit);
    std::fs::write(vit.join("model.safetensors"), bytes).unwrap();
    vit
}

/// The first layer's feed-forward weight, `[37, 32]`: what the damages to a weight change.
const WEIGHT: &str = "encoder.layer.0.intermediate.dense.weight";

/// CRC-32 (IEEE), for a hand-made PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| (0..8).fold(crc ^ u32::from(b), |c, _| if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 }))
}

/// A PNG whose header says `width × height` and which holds no pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

/// What a damaged run of `mope` said, on one line: its error (`Error: …`), or, where it went
/// on, the line about the damage (containing `note`).
fn said(what: &str, out: &Output, note: Option<&str>, dir: &Path) -> String {
    let err = stderr(out);
    let line = match note {
        None => {
            assert!(!out.status.success(), "{what}: the damage was not noticed:\n{err}");
            // The error and its causes, as anyhow prints them (`Error: …`, then `Caused by:` and
            // the causes indented, numbered when there are several), on one line.
            let mut lines = err.lines().skip_while(|l| !l.starts_with("Error: "));
            let first = lines.next().unwrap_or_else(|| panic!("{what}: no error line in:\n{err}")).trim_start_matches("Error: ").to_string();
            let causes = lines.skip_while(|l| l.trim() != "Caused by:").skip(1).take_while(|l| l.starts_with("    ")).map(|l| {
                let l = l.trim();
                l.split_once(": ").filter(|(n, _)| n.parse::<usize>().is_ok()).map_or(l, |(_, rest)| rest).to_string()
            });
            std::iter::once(first).chain(causes).collect::<Vec<_>>().join(": ")
        }
        Some(note) => {
            assert!(out.status.success(), "{what}: {err}");
            format!("(goes on) {}", err.lines().find(|l| l.contains(note)).unwrap_or_else(|| panic!("no line with `{note}` in:\n{err}")))
        }
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let mut line = line.replace(&dir.display().to_string(), "<dir>").replace(&format!("process {}", std::process::id()), "process <pid>");
    if !host.is_empty() {
        line = line.replace(&format!("on {host}"), "on <host>");
    }
    line.replace('|', "\\|")
}

/// Each damage and what `mope` says of it.
fn damages() -> Vec<(&'static str, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    let mut row = |what: &'static str, out: Output, note: Option<&str>| rows.push((what, said(what, &out, note, dir)));

    // Weights, read by `train` (here its `--dry-run`, which loads every encoder).
    let dry_run = |vit: &Path| mope(&["train", &shapes_prompt_tuning_with(dir, 1, vit), "--dry-run"]);
    row("weights: a safetensors header length of 2^62", dry_run(&vit_file(dir, "header", &(1u64 << 62).to_le_bytes())), None);
    let huge = br#"{"x":{"dtype":"F32","shape":[1000000000000,384],"data_offsets":[0,8]}}"#;
    row("weights: a tensor claiming 10^12 × 384 values with 8 bytes", dry_run(&vit_file(dir, "huge", &[&(huge.len() as u64).to_le_bytes()[..], huge, &[0; 8]].concat())), None);
    let transposed = vit_with(dir, "shape", |t| t.iter_mut().find(|t| t.0 == WEIGHT).unwrap().2.reverse());
    row("weights: a weight of the right byte count and the wrong shape", dry_run(&transposed), None);
    let wide = vit_with(dir, "dtype", |t| {
        let weight = t.iter_mut().find(|t| t.0 == WEIGHT).unwrap();
        weight.1 = Dtype::I64;
        weight.2 = vec![weight.2[0], weight.2[1] / 2];
    });
    row("weights: an I64 weight", dry_run(&wide), None);
    let nan = vit_with(dir, "nan", |t| t.iter_mut().find(|t| t.0 == WEIGHT).unwrap().3[..4].copy_from_slice(&f32::NAN.to_le_bytes()));
    row("weights: one NaN in a weight", dry_run(&nan), None);
    let grey = vit_with(dir, "one-channel", |t| {
        let patches = t.iter_mut().find(|t| t.0 == "embeddings.patch_embeddings.projection.weight").unwrap();
        patches.2[1] = 1;
        patches.3.truncate(patches.3.len() / 3);
    });
    let config = std::fs::read_to_string(grey.join("config.json")).unwrap().replace("\"num_channels\": 3", "\"num_channels\": 1");
    std::fs::write(grey.join("config.json"), config).unwrap();
    row("weights: a ViT made for 1-channel images", dry_run(&grey), None);
    let missing = dir.join("no-config");
    copy_tree(&tiny_vit(), &missing);
    std::fs::remove_file(missing.join("config.json")).unwrap();
    row("weights: a snapshot without its config.json", dry_run(&missing), None);

    // The experiment.
    let spec = shapes_prompt_tuning(dir, 1);
    row("experiment: a misspelt key (`--set train.lrr=1`)", mope(&["train", &spec, "--dry-run", "--set", "train.lrr=1"]), None);
    row("experiment: a NaN learning rate (`--set train.lr=nan`)", mope(&["train", &spec, "--dry-run", "--set", "train.lr=nan"]), None);

    // The data.
    let broken = dir.join("broken-images");
    let train_broken = |name: &str, bytes: &[u8]| {
        common::write_shapes(&broken);
        std::fs::write(broken.join("red").join(name), bytes).unwrap();
        let spec = std::fs::read_to_string(&spec).unwrap().replace(&s(&dir.join("shapes")), &s(&broken));
        let spec_path = dir.join("broken.toml");
        std::fs::write(&spec_path, spec).unwrap();
        let out = mope(&["train", &s(&spec_path), "--run-dir", &s(&dir.join("broken-run")), "--overwrite", "--quiet", "--workers", "1"]);
        std::fs::remove_file(broken.join("red").join(name)).unwrap();
        out
    };
    row("image: a PNG whose header claims 60000 × 60000 pixels", train_broken("9.png", &png_header_only(60_000, 60_000)), None);
    let mut strip = Vec::new();
    image::RgbImage::new(100_000, 1).write_to(&mut std::io::Cursor::new(&mut strip), image::ImageFormat::Png).unwrap();
    row("image: a 100000 × 1 strip (its shorter side resized: more than 16 M pixels)", train_broken("9.png", &strip), None);

    // The run directory.
    let run = dir.join("run");
    let train = |extra: &[&str]| mope(&[&["train", &spec, "--run-dir", &s(&run), "--quiet", "--workers", "1"], extra].concat());
    assert!(train(&[]).status.success());
    row("run: training again into a finished run", train(&[]), None);
    std::fs::write(run.join(".lock"), format!("{} {}", std::process::id(), std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim())).unwrap();
    row("run: another training holds the run's lock", train(&["--resume"]), None);
    std::fs::write(run.join(".lock"), "999999999 ".to_string() + std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim()).unwrap();
    row("run: a lock left by a training that was killed", train(&["--resume"]), Some("lock"));

    // Checkpoints, read on `--resume`.
    let damaged = |name: &str, damage: &dyn Fn(&Path)| {
        let copy_of = dir.join(name);
        copy_tree(&run, &copy_of);
        std::fs::remove_file(copy_of.join("result.json")).unwrap();
        damage(&copy_of);
        copy_of
    };
    let resume = |run: &Path| mope(&["train", &spec, "--run-dir", &s(run), "--resume", "--quiet", "--workers", "1", "--set", "train.epochs=2"]);
    let half = damaged("half-optimizer", &|r| {
        let bytes = std::fs::read(r.join("last/optimizer.bin")).unwrap();
        std::fs::write(r.join("last/optimizer.bin"), &bytes[..bytes.len() / 2]).unwrap();
    });
    row("checkpoint: last/optimizer.bin cut in half (`--resume`)", resume(&half), None);
    let state = damaged("bad-state", &|r| std::fs::write(r.join("last/state.json"), "{\"epochs_done\": ").unwrap());
    row("checkpoint: last/state.json cut short (`--resume`)", resume(&state), None);
    let between = damaged("between-renames", &|r| std::fs::rename(r.join("last"), r.join(".last.previous")).unwrap());
    row("checkpoint: killed between a save's two renames (`--resume`)", resume(&between), Some("interrupted save"));

    // The best adapter, read by `eval` (and `predict`).
    let adapter = damaged("transposed-adapter", &|r| {
        let path = r.join("best/adapter_model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, TensorView<'_>)> = file
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let shape: Vec<usize> = if v.shape().len() == 2 { vec![v.shape()[1], v.shape()[0]] } else { v.shape().to_vec() };
                (k, TensorView::new(v.dtype(), shape, v.data()).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(tensors, None, &path).unwrap();
    });
    row("adapter: a tensor transposed (`eval`)", mope(&["eval", &s(&adapter)]), None);
    let config = damaged("truncated-config", &|r| {
        // Cut at a fixed place, before the base model's paths (whose length differs by folder).
        let path = r.join("best/adapter_config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("\"base_model\"").unwrap() + 5;
        std::fs::write(&path, &text[..cut]).unwrap();
    });
    row("adapter: adapter_config.json cut short (`eval`)", mope(&["eval", &s(&config)]), None);
    rows
}

/// The table as the document shows it.
fn table(rows: &[(&str, String)]) -> String {
    let mut out = format!("{BEGIN}\n| damage | what `mope` says |\n|---|---|\n");
    for (what, said) in rows {
        out.push_str(&format!("| {what} | `` {said} `` |\n"));
    }
    out + END
}

#[test]
fn the_damage_table_is_what_mope_says() {
    let expected = table(&damages());
    let doc = std::fs::read_to_string(DOC).unwrap();
    let (start, end) = (doc.find(BEGIN).expect("the table's start marker"), doc.find(END).expect("the table's end marker") + END.len());
    if std::env::var_os("MOPE_WRITE_DAMAGE_TABLE").is_some() {
        std::fs::write(DOC, format!("{}{expected}{}", &doc[..start], &doc[end..])).unwrap();
        return;
    }
    assert!(
        doc[start..end] == expected,
        "docs/reliability.md's damage table differs from what mope says; rewrite it with \
         `MOPE_WRITE_DAMAGE_TABLE=1 cargo test -p train --test damage`:\n{expected}"
    );
}
