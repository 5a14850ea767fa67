//! Parity of the BERT-family encoder and tokenizer with Hugging Face transformers, on a tiny
//! random model (fixtures made by `fixtures/make_fixtures.py`, always run) and on the real
//! all-MiniLM-L6-v2 weights (run when `cargo xtask fetch-assets` has fetched them; CI does).
//! Also: broken weight files are refused with the file and key named.

mod common;

use std::path::Path;

use common::{fixtures, reference, relative_error, weights_dir};

use backbones::{Pooling, TextTokenizer, TokenBatch, by_name, load_bert};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use mope_core::{PromptableEncoder, forward_prompted};

type B = Flex;

fn sentences(dir: &Path) -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sentences.json")).unwrap()).unwrap()
}

#[test]
fn tiny_bert_matches_transformers() {
    let dir = fixtures().join("tiny-bert");
    let expected = dir.join("expected.safetensors");
    let device = Default::default();
    let (encoder, report) = load_bert::<B>(&dir, Pooling::Mean, &device).unwrap();
    assert_eq!(report.unused, ["pooler.dense.bias", "pooler.dense.weight"], "only the pooler is left out");

    let texts = sentences(&dir);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (ids, shape) = reference(&expected, "input_ids");
    let (mask, _) = reference(&expected, "attention_mask");
    for tokenizer in [TextTokenizer::from_file(&dir.join("tokenizer.json"), 40).unwrap(), TextTokenizer::from_vocab(&dir.join("vocab.txt"), 40).unwrap()] {
        let batch = tokenizer.encode::<B>(&texts, &device).unwrap();
        assert_eq!(batch.ids.dims(), [shape[0], shape[1]]);
        let ours: Vec<f64> = batch.ids.to_data().convert::<i64>().to_vec::<i64>().unwrap().iter().map(|&v| v as f64).collect();
        assert_eq!(ours, ids, "token ids equal transformers' BertTokenizerFast");
        let pad: Vec<bool> = batch.mask_pad.to_data().to_vec().unwrap();
        assert_eq!(pad, mask.iter().map(|&m| m == 0.0).collect::<Vec<_>>());
    }

    let batch = TokenBatch::<B> {
        ids: Tensor::from_data(TensorData::new(ids.iter().map(|&v| v as i64).collect::<Vec<_>>(), [shape[0], shape[1]]), &device),
        mask_pad: Tensor::from_data(TensorData::new(mask.iter().map(|&m| m == 0.0).collect::<Vec<_>>(), [shape[0], shape[1]]), &device),
    };
    let out = forward_prompted(&encoder, encoder.embed(&batch), &mut ());
    let (hidden, hidden_shape) = reference(&expected, "last_hidden_state");
    assert_eq!(out.tokens.dims().to_vec(), hidden_shape);
    // Real tokens only: a padding position's output is never read, and the encoder skips it
    // (`backbones::unpadded`), leaving zeros there where transformers computes a value.
    let (width, tokens) = (hidden_shape[2], out.tokens.to_data().to_vec::<f32>().unwrap());
    let padding = rows_where(&tokens, width, &mask, false);
    assert!(!padding.is_empty() && padding.iter().all(|&v| v == 0.0), "padding positions hold zeros");
    let err = relative_error(&rows_where(&tokens, width, &mask, true), &rows_where(&hidden, width, &mask, true));
    println!("bert_parity: last hidden state (real tokens) relative error {err:.2e}");
    assert!(err < 1e-4, "last hidden state relative error {err:e}");
    let (pooled, _) = reference(&expected, "mean_pooled");
    let err = relative_error(&out.pooled.to_data().to_vec::<f32>().unwrap(), &pooled);
    println!("bert_parity: mean-pooled relative error {err:.2e}");
    assert!(err < 1e-4, "mean-pooled relative error {err:e}");
}

/// The rows of `values` (`width` wide) whose attention-mask entry is 1 (`real`) or 0.
fn rows_where<T: Copy>(values: &[T], width: usize, mask: &[f64], real: bool) -> Vec<T> {
    values.chunks(width).zip(mask).filter(|(_, m)| (**m != 0.0) == real).flat_map(|(row, _)| row.to_vec()).collect()
}

/// A copy of the tiny BERT whose weights file is rewritten by `edit`.
fn broken_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let src = fixtures().join("tiny-bert");
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
    }
    edit(&dir.path().join("model.safetensors"));
    dir
}

fn load_error(dir: &Path) -> String {
    load_bert::<B>(dir, Pooling::Cls, &Default::default()).map(|_| ()).unwrap_err().to_string()
}

/// An edit of one tensor of a weights file: name, type, shape, bytes; false drops the tensor.
type TensorEdit = dyn Fn(&str, safetensors::Dtype, &mut Vec<usize>, &mut Vec<u8>) -> bool;

#[test]
fn broken_weight_files_name_the_file_and_key() {
    // Rewrites the weights file tensor by tensor: `edit` (name, type, shape, bytes) may change a
    // tensor's shape and bytes, and drops it by returning false.
    let rewrite = |path: &Path, edit: &TensorEdit| {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut owned = Vec::new();
        for (name, view) in st.tensors() {
            let (mut shape, mut data) = (view.shape().to_vec(), view.data().to_vec());
            if edit(&name, view.dtype(), &mut shape, &mut data) {
                owned.push((name, view.dtype(), shape, data));
            }
        }
        let views: Vec<_> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    };

    let dir = broken_copy(|p| rewrite(p, &|name, _, _, _| name != "encoder.layer.1.attention.self.key.weight"));
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors: missing tensor `encoder.layer.1.attention.self.key.weight` (for parameter `layers.1.attention.key.weight`)"), "{msg}");

    let dir = broken_copy(|p| {
        rewrite(p, &|name, _, shape, data| {
            if name == "encoder.layer.0.intermediate.dense.weight" {
                shape[0] -= 1;
                data.truncate(shape.iter().product::<usize>() * 4);
            }
            true
        })
    });
    let msg = load_error(dir.path());
    assert!(msg.contains("tensor `encoder.layer.0.intermediate.dense.weight` has shape [36, 32], parameter `layers.0.ffn_in.weight` expects [37, 32]"), "{msg}");

    // Three values of a query weight NaN and one Inf: named with the count, never trained on.
    let dir = broken_copy(|p| {
        rewrite(p, &|name, dtype, _, data| {
            if name == "encoder.layer.0.attention.self.query.weight" {
                assert_eq!(dtype, safetensors::Dtype::F32);
                for (i, value) in [f32::NAN, f32::NAN, f32::INFINITY, f32::NAN].into_iter().enumerate() {
                    data[i * 4..i * 4 + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            true
        })
    });
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors: tensor `encoder.layer.0.attention.self.query.weight`: 4 of its 1024 values are NaN or infinite"), "{msg}");

    let dir = broken_copy(|p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() - 100]).unwrap();
    });
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors: not a valid safetensors file"), "{msg}");

    let dir = broken_copy(|_| {});
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"gelu\"", "\"relu\"");
    std::fs::write(&config, text).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("config.json: `hidden_act` = \"relu\" is not supported"), "{msg}");

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(&config, std::fs::read_to_string(fixtures().join("tiny-bert/config.json")).unwrap()).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors: not found"), "{msg}");
}

#[test]
fn minilm_real_weights_match_transformers() {
    let preset = by_name("all-minilm-l6-v2").unwrap();
    let weights = weights_dir();
    if preset.dir(&weights).is_err() {
        eprintln!(
            "SKIPPED minilm_real_weights_match_transformers: no all-MiniLM-L6-v2 weights in {} (run `cargo xtask fetch-assets`)",
            weights.display()
        );
        return;
    }
    let device = Default::default();
    let (encoder, tokenizer) = preset.load_text::<B>(&preset.dir(&weights).unwrap(), &device).unwrap();
    let dir = fixtures().join("minilm");
    let texts = sentences(&dir);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tokenizer.encode::<B>(&texts, &device).unwrap();
    let (ids, _) = reference(&dir.join("expected.safetensors"), "input_ids");
    let ours: Vec<f64> = batch.ids.to_data().convert::<i64>().to_vec::<i64>().unwrap().iter().map(|&v| v as f64).collect();
    assert_eq!(ours, ids, "token ids equal transformers' (no fixed padding to 128)");
    let pooled = forward_prompted(&encoder, encoder.embed(&batch), &mut ()).pooled;
    let (expected, _) = reference(&dir.join("expected.safetensors"), "mean_pooled");
    let ours = pooled.to_data().to_vec::<f32>().unwrap();
    let err = relative_error(&ours, &expected);
    println!("bert_parity: sentence embedding relative error {err:.2e}");
    assert!(err < 1e-4, "sentence embedding relative error {err:e}");

    // Sentence similarity, as sentence-transformers users see it (cosine of mean-pooled states).
    let d = encoder.d_model();
    let cos = |i: usize, j: usize| {
        let (a, b) = (&ours[i * d..(i + 1) * d], &ours[j * d..(j + 1) * d]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    };
    let (related, unrelated) = (cos(0, 1), cos(0, 2));
    println!("cos(related) = {related:.3}, cos(unrelated) = {unrelated:.3}");
    assert!(related > 0.5 && unrelated < 0.2, "related {related}, unrelated {unrelated}");
}
