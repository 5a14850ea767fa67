//! Helpers shared by the parity tests: reading reference tensors written by
//! `fixtures/make_fixtures.py`, and the relative error they are compared with.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Directory of the committed fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Directory of the real weights fetched by `cargo xtask fetch-assets` (or `$MOPE_WEIGHTS_DIR`).
pub fn weights_dir() -> PathBuf {
    std::env::var_os("MOPE_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets/models"))
}

/// A tensor of a reference safetensors file, as f64 values, and its shape.
pub fn reference(file: &Path, key: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(key).unwrap_or_else(|_| panic!("{}: no tensor {key}", file.display()));
    let values = match view.dtype() {
        safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        safetensors::Dtype::I64 => view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (values, view.shape().to_vec())
}

/// `max |ours - theirs| / max |theirs|`: the error measure of every parity test.
pub fn relative_error(ours: &[f32], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "different numbers of values");
    let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
    ours.iter().zip(theirs).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs())) / scale
}

/// `2 sin(0.05 (x + 2y) + c + 0.7 b)` for image `b`, channel `c`, pixel `(x, y)`: pixels the
/// fixture scripts compute identically (`fixtures/formula.py`).
pub fn formula_image(batch: usize, size: usize) -> burn::tensor::Tensor<burn::backend::Flex, 4> {
    let mut values = Vec::with_capacity(batch * 3 * size * size);
    for b in 0..batch {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let arg = 0.05f32 * (x as f32 + 2.0 * y as f32) + c as f32 + 0.7f32 * b as f32;
                    values.push(2.0 * arg.sin());
                }
            }
        }
    }
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(values, [batch, 3, size, size]), &Default::default())
}
