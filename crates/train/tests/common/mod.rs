//! What the tests of the `mope` binary share: running it, reading what it wrote, and a small
//! image dataset with an experiment over it.
#![allow(dead_code)] // each test binary uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `mope` without any glibc allocator setting of the caller's (it sets its own).
pub fn mope(args: &[&str]) -> Output {
    mope_with_allocator(args, &[])
}

/// Runs `mope` with exactly the glibc allocator settings `allocator`.
pub fn mope_with_allocator(args: &[&str], allocator: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mope"));
    for (name, _) in train::MALLOC_SETTINGS {
        command.env_remove(name);
    }
    command.envs(allocator.iter().copied()).args(args).output().expect("mope runs")
}

pub fn read_result(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn write_spec(dir: &Path, body: &str) -> String {
    let path = dir.join("exp.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

/// An image dataset in the folder-per-class layout: 8 images of 32×32 in each of three colours.
pub fn write_shapes(data: &Path) {
    for (class, colour) in [("red", [220u8, 30, 30]), ("green", [30, 200, 30]), ("blue", [30, 30, 220])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..8u8 {
            let [r, g, b] = colour;
            image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([r.saturating_sub(i * 5), g, b.saturating_sub((x % 8) as u8)])).save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// The tiny ViT fixture's snapshot (`config.json`, `model.safetensors`).
pub fn tiny_vit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../backbones/tests/fixtures/tiny-vit")
}

/// An experiment over the shapes folder (written into `dir`): deep prompt tuning of the tiny ViT
/// for `epochs` epochs.
pub fn shapes_prompt_tuning(dir: &Path, epochs: usize) -> String {
    shapes_prompt_tuning_with(dir, epochs, &tiny_vit())
}

/// [`shapes_prompt_tuning`] with the ViT snapshot in `vit`.
pub fn shapes_prompt_tuning_with(dir: &Path, epochs: usize, vit: &Path) -> String {
    let data = dir.join("shapes");
    if !data.exists() {
        write_shapes(&data);
    }
    write_spec(
        dir,
        &format!(
            "[data]\ndataset = \"image-folder\"\nroot = \"{}\"\ncache_dir = \"\"\n[model]\nmethod = \"prompt-tuning\"\n\
             experts = [\"vit-base-patch16-224={}\"]\n[pmoe]\nprompt_len = 2\n[train]\nepochs = {epochs}\nbatch_size = 4\ndrop_last = false\n",
            data.display(),
            vit.display()
        ),
    )
}

/// The tensors of a run's best adapter: the bytes after the safetensors header (whose metadata
/// map has no fixed order).
pub fn adapter_tensors(run: &Path) -> Vec<u8> {
    let adapter = std::fs::read(run.join("best/adapter_model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(adapter[..8].try_into().unwrap()) as usize;
    adapter[header..].to_vec()
}


/// A copy of the folder `from` (recursively) at `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() { copy_tree(&path, &target) } else { std::fs::copy(&path, &target).map(|_| ()).unwrap() }
    }
}
