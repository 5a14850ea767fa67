//! Vision Transformer (Dosovitskiy et al. 2021): patch embedding by a strided convolution, a
//! `[CLS]` token, learned position embeddings, pre-norm [`TransformerLayer`]s and a final layer
//! norm. Loads Hugging Face `ViTModel` / `ViTForImageClassification` checkpoints (also DeiT
//! without distillation token, which uses the same layout).
//!
//! Key map (Hugging Face → burn; `Linear` weights transposed; an optional `vit.` prefix accepted):
//!
//! | Hugging Face | burn ([`ViT`]) |
//! |---|---|
//! | `embeddings.cls_token` | `cls_token` |
//! | `embeddings.position_embeddings` | `position_embeddings` |
//! | `embeddings.patch_embeddings.projection.{weight,bias}` | `patch_embedding.{weight,bias}` |
//! | `encoder.layer.N.attention.attention.{query,key,value}` | `layers.N.attention.{query,key,value}` |
//! | `encoder.layer.N.attention.output.dense` | `layers.N.attention.output` |
//! | `encoder.layer.N.layernorm_before` | `layers.N.attention_norm` |
//! | `encoder.layer.N.intermediate.dense` | `layers.N.ffn_in` |
//! | `encoder.layer.N.output.dense` | `layers.N.ffn_out` |
//! | `encoder.layer.N.layernorm_after` | `layers.N.ffn_norm` |
//! | `layernorm.{weight,bias}` | `final_norm.{gamma,beta}` |

use std::ops::Range;
use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::Kernels;
use serde::Deserialize;

use crate::error::BackboneError;
use crate::pooling::Pooling;
use crate::transformer::{TransformerLayer, TransformerLayerConfig};
use crate::snapshot::{self, check_gelu, check_model_type, read_config, unsupported};
use crate::weights::{LoadReport, Source, layer_norm_source, linear_source, load_safetensors};

/// Configuration of a [`ViT`]. Names follow burn; Hugging Face's are in the docs.
#[derive(Config, Debug)]
pub struct ViTConfig {
    /// Input side in pixels (`image_size`).
    pub image_size: usize,
    /// Patch side in pixels (`patch_size`).
    pub patch_size: usize,
    /// Token width (`hidden_size`).
    pub d_model: usize,
    /// Attention heads (`num_attention_heads`).
    pub n_heads: usize,
    /// Feed-forward width (`intermediate_size`).
    pub d_ff: usize,
    /// Layers (`num_hidden_layers`).
    pub num_layers: usize,
    /// Input channels (`num_channels`).
    #[config(default = 3)]
    pub num_channels: usize,
    /// Layer-norm epsilon (Hugging Face: 1e-12; timm: 1e-6).
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Pooling of the normalised output.
    #[config(default = "Pooling::Cls")]
    pub pooling: Pooling,
}

impl ViTConfig {
    /// ViT-B/16 at 224 × 224 (`google/vit-base-patch16-224`).
    pub fn vit_base_patch16_224() -> Self {
        Self::new(224, 16, 768, 12, 3072, 12)
    }

    /// Number of patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Initialises the encoder on `device` (random weights; load pretrained ones afterwards).
    ///
    /// # Panics
    /// If the image side is not a multiple of the patch side.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ViT<B> {
        assert!(
            self.image_size.is_multiple_of(self.patch_size),
            "image_size = {} is not a multiple of patch_size = {}",
            self.image_size,
            self.patch_size
        );
        let layer = TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_layer_norm_eps(self.layer_norm_eps)
            .with_norm_first(true);
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        ViT {
            patch_embedding: Conv2dConfig::new([self.num_channels, self.d_model], [self.patch_size, self.patch_size])
                .with_stride([self.patch_size, self.patch_size])
                .init(device),
            cls_token: init.init([1, 1, self.d_model], device),
            position_embeddings: init.init([1, self.num_patches() + 1, self.d_model], device),
            layers: (0..self.num_layers).map(|_| layer.init(device)).collect(),
            final_norm: LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps).init(device),
            pooling: self.pooling,
            image_size: self.image_size,
        }
    }
}

/// A Vision Transformer encoder.
#[derive(Module, Debug)]
pub struct ViT<B: Backend> {
    /// Patch embedding, a `patch_size`-strided convolution `[d_model, channels, p, p]`.
    pub patch_embedding: Conv2d<B>,
    /// `[CLS]` token `[1, 1, d_model]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Position embeddings `[1, num_patches + 1, d_model]`.
    pub position_embeddings: Param<Tensor<B, 3>>,
    /// Pre-norm transformer layers.
    pub layers: Vec<TransformerLayer<B>>,
    /// Final layer norm.
    pub final_norm: LayerNorm<B>,
    #[module(skip)]
    pooling: Pooling,
    #[module(skip)]
    image_size: usize,
}

impl<B: Backend> ViT<B> {
    /// The side of the square images it reads, in pixels (its `config.json`'s `image_size`).
    pub fn image_size(&self) -> usize {
        self.image_size
    }
}

impl<B: Kernels> PromptableEncoder<B> for ViT<B> {
    /// Normalised pixels `[batch, channels, image_size, image_size]`.
    type Input = Tensor<B, 4>;

    fn d_model(&self) -> usize {
        self.cls_token.dims()[2]
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn num_prefix_tokens(&self) -> usize {
        1
    }

    /// # Shapes
    /// - `pixels`: `[batch, channels, image_size, image_size]`
    /// - output tokens: `[batch, num_patches + 1, d_model]`, no mask
    ///
    /// # Panics
    /// If the image is not `image_size` pixels on each side.
    fn embed(&self, pixels: &Tensor<B, 4>) -> EncoderTokens<B> {
        let [batch, _, height, width] = pixels.dims();
        assert!(
            height == self.image_size && width == self.image_size,
            "image is {height}x{width}, the ViT expects {0}x{0}",
            self.image_size
        );
        let patches = self.patch_embedding.forward(pixels.clone()); // [batch, d_model, h, w]
        let [_, d_model, h, w] = patches.dims();
        let patches = patches.reshape([batch, d_model, h * w]).swap_dims(1, 2); // [batch, N, d_model]
        let cls = self.cls_token.val().expand([batch, 1, d_model]);
        let tokens = Tensor::cat(vec![cls, patches], 1) + self.position_embeddings.val();
        EncoderTokens { tokens, mask_pad: None }
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
        self.pooling.apply(self.final_norm.forward(tokens), mask_pad, 1, num_prompts)
    }

    /// # Shapes
    /// - `tokens`: `[batch, 1 + prompts + side², d_model]`; output `[batch, d_model, side, side]`
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        Some(mope_core::square_feature_map(self.final_norm.forward(tokens), 1 + num_prompts))
    }
}

/// The architecture fields of a Hugging Face ViT `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct HfViTConfig {
    /// `model_type`, checked to be `vit` (or `deit`).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Input side.
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Channels.
    #[serde(default = "three")]
    pub num_channels: usize,
    /// Width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "vit_eps")]
    pub layer_norm_eps: f64,
    /// Activation, checked to be `gelu`.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Whether q/k/v have biases, checked to be true.
    #[serde(default = "yes")]
    pub qkv_bias: bool,
}

fn three() -> usize {
    3
}
fn vit_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}
fn yes() -> bool {
    true
}

impl HfViTConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self, BackboneError> {
        let config: Self = read_config(path)?;
        check_model_type(path, config.model_type.as_deref(), &["vit", "deit"])?;
        check_gelu(path, &config.hidden_act)?;
        if !config.qkv_bias {
            return Err(unsupported(path, "qkv_bias", "false", "query/key/value biases are required"));
        }
        Ok(config)
    }

    /// The encoder configuration with the given pooling.
    pub fn encoder_config(&self, pooling: Pooling) -> ViTConfig {
        ViTConfig::new(
            self.image_size,
            self.patch_size,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
            self.num_hidden_layers,
        )
        .with_num_channels(self.num_channels)
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_pooling(pooling)
    }
}

/// The Hugging Face key of a [`ViT`] parameter (see the table in the module docs).
pub fn vit_key(prefix: &str, param: &str) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let copy = |key: String| Some(Source::Copy(format!("{prefix}{key}")));
    let norm = |base: String, leaf: &str| layer_norm_source(&format!("{prefix}{base}"), ".", leaf, ("weight", "bias"));
    let linear = |base: String, leaf: &str| linear_source(&format!("{prefix}{base}"), ".", leaf);
    match parts.as_slice() {
        ["cls_token"] => copy("embeddings.cls_token".into()),
        ["position_embeddings"] => copy("embeddings.position_embeddings".into()),
        ["patch_embedding", leaf @ ("weight" | "bias")] => copy(format!("embeddings.patch_embeddings.projection.{leaf}")),
        ["final_norm", leaf] => norm("layernorm".into(), leaf),
        ["layers", n, rest @ ..] => {
            let base = format!("encoder.layer.{n}");
            match rest {
                ["attention", which @ ("query" | "key" | "value"), leaf] => linear(format!("{base}.attention.attention.{which}"), leaf),
                ["attention", "output", leaf] => linear(format!("{base}.attention.output.dense"), leaf),
                ["attention_norm", leaf] => norm(format!("{base}.layernorm_before"), leaf),
                ["ffn_in", leaf] => linear(format!("{base}.intermediate.dense"), leaf),
                ["ffn_out", leaf] => linear(format!("{base}.output.dense"), leaf),
                ["ffn_norm", leaf] => norm(format!("{base}.layernorm_after"), leaf),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Loads a ViT from a Hugging Face snapshot directory (`config.json`, `model.safetensors`).
pub fn load_vit<B: Backend>(dir: &Path, pooling: Pooling, device: &B::Device) -> Result<(ViT<B>, LoadReport), BackboneError> {
    let config = HfViTConfig::read(&dir.join("config.json"))?;
    let (weights, prefix, _) = snapshot::weights(dir, &["vit.", "deit."])?;
    let vit = config.encoder_config(pooling).init::<B>(device);
    Ok(load_safetensors(vit, &weights, |param| vit_key(prefix, param))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn key_map_follows_the_table() {
        assert_eq!(vit_key("", "cls_token"), Some(Source::Copy("embeddings.cls_token".into())));
        assert_eq!(
            vit_key("vit.", "patch_embedding.weight"),
            Some(Source::Copy("vit.embeddings.patch_embeddings.projection.weight".into()))
        );
        assert_eq!(vit_key("", "layers.2.attention.key.weight"), Some(Source::Transpose("encoder.layer.2.attention.attention.key.weight".into())));
        assert_eq!(vit_key("", "layers.0.ffn_norm.gamma"), Some(Source::Copy("encoder.layer.0.layernorm_after.weight".into())));
        assert_eq!(vit_key("", "final_norm.beta"), Some(Source::Copy("layernorm.bias".into())));
        assert_eq!(vit_key("", "head.weight"), None);
    }

    #[test]
    fn shapes_of_a_small_vit() {
        let device = Default::default();
        let vit = ViTConfig::new(32, 8, 16, 2, 24, 2).init::<Flex>(&device);
        let tokens = vit.embed(&Tensor::zeros([3, 3, 32, 32], &device));
        assert_eq!(tokens.tokens.dims(), [3, 17, 16]);
        assert!(tokens.mask_pad.is_none());
        assert_eq!(ViTConfig::vit_base_patch16_224().num_patches(), 196);
    }
}
