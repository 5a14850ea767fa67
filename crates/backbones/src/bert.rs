//! BERT-family text encoders (BERT, MiniLM, …) from a Hugging Face snapshot directory:
//! `config.json` and `model.safetensors`, loaded into a [`TokenEncoder`].
//!
//! Key map (Hugging Face → burn; `Linear` weights are transposed, `LayerNorm` `weight/bias` (or
//! the older `gamma/beta`) become `gamma/beta`); an optional `bert.` prefix is accepted:
//!
//! | Hugging Face | burn ([`TokenEncoder`]) |
//! |---|---|
//! | `embeddings.word_embeddings.weight` | `word_embeddings.weight` |
//! | `embeddings.position_embeddings.weight` | `position_embeddings.weight` |
//! | `embeddings.token_type_embeddings.weight` | `token_type_embeddings.weight` |
//! | `embeddings.LayerNorm.{weight,bias}` | `embedding_norm.{gamma,beta}` |
//! | `encoder.layer.N.attention.self.{query,key,value}` | `layers.N.attention.{query,key,value}` |
//! | `encoder.layer.N.attention.output.dense` | `layers.N.attention.output` |
//! | `encoder.layer.N.attention.output.LayerNorm` | `layers.N.attention_norm` |
//! | `encoder.layer.N.intermediate.dense` | `layers.N.ffn_in` |
//! | `encoder.layer.N.output.dense` | `layers.N.ffn_out` |
//! | `encoder.layer.N.output.LayerNorm` | `layers.N.ffn_norm` |
//!
//! The pooler (`pooler.dense`) is not used: MoPE reads the final `[CLS]` state, sentence
//! transformers the mean of the tokens.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Deserialize;

use crate::error::BackboneError;
use crate::snapshot::{self, check_gelu, check_model_type, read_config, unsupported};
use crate::pooling::Pooling;
use crate::token_encoder::{TokenEncoder, TokenEncoderConfig};
use crate::weights::{LoadReport, Source, layer_norm_source, linear_source, load_safetensors};

/// The fields of a Hugging Face BERT `config.json` that define the architecture. Other fields
/// (dropout rates, ids, `architectures`, …) are read by Hugging Face only and ignored here.
#[derive(Debug, Clone, Deserialize)]
pub struct HfBertConfig {
    /// `model_type`, checked to be `bert`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Position embeddings.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    /// Activation, checked to be `gelu`.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Position embedding type, checked to be `absolute`.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}
fn absolute() -> String {
    "absolute".into()
}

impl HfBertConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self, BackboneError> {
        let config: Self = read_config(path)?;
        check_model_type(path, config.model_type.as_deref(), &["bert"])?;
        check_gelu(path, &config.hidden_act)?;
        if config.position_embedding_type != "absolute" {
            return Err(unsupported(path, "position_embedding_type", format!("\"{}\"", config.position_embedding_type), "only \"absolute\""));
        }
        Ok(config)
    }

    /// The encoder configuration with the given pooling.
    pub fn encoder_config(&self, pooling: Pooling) -> TokenEncoderConfig {
        TokenEncoderConfig::new(
            self.vocab_size,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
            self.num_hidden_layers,
        )
        .with_max_position(self.max_position_embeddings)
        .with_type_vocab_size(self.type_vocab_size)
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_pooling(pooling)
    }
}

/// The Hugging Face key of a [`TokenEncoder`] parameter (see the table in the module docs).
pub fn bert_key(prefix: &str, param: &str, layer_norm_names: (&str, &str)) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let norm = |base: String, leaf: &str| layer_norm_source(&format!("{prefix}{base}"), ".", leaf, layer_norm_names);
    let linear = |base: String, leaf: &str| linear_source(&format!("{prefix}{base}"), ".", leaf);
    match parts.as_slice() {
        [table @ ("word_embeddings" | "position_embeddings" | "token_type_embeddings"), "weight"] => {
            Some(Source::Copy(format!("{prefix}embeddings.{table}.weight")))
        }
        ["embedding_norm", leaf] => norm("embeddings.LayerNorm".into(), leaf),
        ["layers", n, rest @ ..] => {
            let base = format!("encoder.layer.{n}");
            match rest {
                ["attention", which @ ("query" | "key" | "value"), leaf] => {
                    linear(format!("{base}.attention.self.{which}"), leaf)
                }
                ["attention", "output", leaf] => linear(format!("{base}.attention.output.dense"), leaf),
                ["attention_norm", leaf] => norm(format!("{base}.attention.output.LayerNorm"), leaf),
                ["ffn_in", leaf] => linear(format!("{base}.intermediate.dense"), leaf),
                ["ffn_out", leaf] => linear(format!("{base}.output.dense"), leaf),
                ["ffn_norm", leaf] => norm(format!("{base}.output.LayerNorm"), leaf),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Loads a BERT-family encoder from a Hugging Face snapshot directory (`config.json`,
/// `model.safetensors`). The returned encoder's parameters require gradients; the classifiers of
/// `mope-core` freeze it.
pub fn load_bert<B: Backend>(
    dir: &Path,
    pooling: Pooling,
    device: &B::Device,
) -> Result<(TokenEncoder<B>, LoadReport), BackboneError> {
    let config = HfBertConfig::read(&dir.join("config.json"))?;
    let (weights, prefix, names) = snapshot::weights(dir, &["bert."])?;
    let norm_names = if names.iter().any(|n| n.ends_with("embeddings.LayerNorm.gamma")) { ("gamma", "beta") } else { ("weight", "bias") };
    let encoder = config.encoder_config(pooling).init::<B>(device);
    let (encoder, report) = load_safetensors(encoder, &weights, |param| bert_key(prefix, param, norm_names))?;
    Ok((encoder, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_follows_the_table() {
        let key = |p: &str| bert_key("", p, ("weight", "bias"));
        assert_eq!(key("word_embeddings.weight"), Some(Source::Copy("embeddings.word_embeddings.weight".into())));
        assert_eq!(key("embedding_norm.gamma"), Some(Source::Copy("embeddings.LayerNorm.weight".into())));
        assert_eq!(
            key("layers.3.attention.value.weight"),
            Some(Source::Transpose("encoder.layer.3.attention.self.value.weight".into()))
        );
        assert_eq!(key("layers.0.attention.output.bias"), Some(Source::Copy("encoder.layer.0.attention.output.dense.bias".into())));
        assert_eq!(key("layers.1.ffn_norm.beta"), Some(Source::Copy("encoder.layer.1.output.LayerNorm.bias".into())));
        assert_eq!(
            bert_key("bert.", "layers.1.ffn_in.weight", ("gamma", "beta")),
            Some(Source::Transpose("bert.encoder.layer.1.intermediate.dense.weight".into()))
        );
        assert_eq!(bert_key("", "layers.1.attention_norm.gamma", ("gamma", "beta")), Some(Source::Copy("encoder.layer.1.attention.output.LayerNorm.gamma".into())));
        assert_eq!(key("head.weight"), None);
    }
}
