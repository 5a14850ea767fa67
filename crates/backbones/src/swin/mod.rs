//! Swin Transformer (Liu et al. 2021), the image backbone of the official MoPE code (Swin-B,
//! patch 4, window 7, 224×224), loading Hugging Face `SwinModel` / `SwinForImageClassification`
//! checkpoints, with deep prompts inside shifted windows.
//!
//! As one flat list of prompted layers, block `l` of the encoder is block `b` of stage `s`; the
//! patch merging of stage `s` runs right after its last block, prompts included. Prompts sit at
//! the front of the sequence (no prefix tokens) and are shared by all windows of their sample
//! ([`PromptLayout::PerSample`]; the official code's cross-sample layout is available as
//! [`PromptLayout::OfficialWindowMajor`] for comparison). The token width grows per stage, so
//! prompts of block `l` have width [`PromptableEncoder::layer_width`].
//!
//! Key map (Hugging Face → burn; `Linear` weights transposed; an optional `swin.` prefix):
//!
//! | Hugging Face | burn ([`Swin`]) |
//! |---|---|
//! | `embeddings.patch_embeddings.projection` | `patch_embedding` |
//! | `embeddings.norm` | `embedding_norm` |
//! | `encoder.layers.s.blocks.b.layernorm_{before,after}` | `blocks.l.layernorm_{before,after}` |
//! | `encoder.layers.s.blocks.b.attention.self.{query,key,value}` | `blocks.l.attention.{query,key,value}` |
//! | `encoder.layers.s.blocks.b.attention.self.relative_position_bias_table` | `blocks.l.attention.relative_position_bias_table` |
//! | `encoder.layers.s.blocks.b.attention.output.dense` | `blocks.l.attention.output` |
//! | `encoder.layers.s.blocks.b.intermediate.dense`, `output.dense` | `blocks.l.ffn_in`, `blocks.l.ffn_out` |
//! | `encoder.layers.s.downsample.{norm,reduction}` | `merges.s.{norm,reduction}` |
//! | `layernorm` | `final_norm` |

pub mod block;
pub mod patch_merging;
pub mod window_attention;

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use serde::Deserialize;

pub use block::{PromptLayout, SwinBlock};
pub use patch_merging::PatchMerging;
use ops::{FastGelu, FastLinear};

use crate::error::BackboneError;
use crate::pooling::Pooling;
use crate::snapshot::{self, check_gelu, check_model_type, read_config, unsupported};
use crate::weights::{LoadReport, Source, layer_norm_source, linear_source, load_safetensors};

/// Configuration of a [`Swin`].
#[derive(Config, Debug)]
pub struct SwinConfig {
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Width of the first stage (doubles at every stage).
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    /// Window side in tokens.
    pub window_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// Feed-forward width over token width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Layer-norm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Pooling of the normalised output (the official MoPE head: mean over all tokens, prompts
    /// included; Hugging Face's pooler: mean over patches).
    #[config(default = "Pooling::MeanWithPrompts")]
    pub pooling: Pooling,
    /// Prompt layout across windows.
    #[config(default = "PromptLayout::PerSample")]
    pub prompt_layout: PromptLayout,
}

impl SwinConfig {
    /// Swin-B, patch 4, window 7, 224×224 (the official MoPE backbone).
    pub fn swin_base_patch4_window7_224() -> Self {
        Self::new(224, 4, 128, vec![2, 2, 18, 2], vec![4, 8, 16, 32], 7)
    }

    /// Token width of each stage.
    pub fn stage_widths(&self) -> Vec<usize> {
        (0..self.depths.len()).map(|s| self.embed_dim << s).collect()
    }

    /// Initialises the encoder on `device` (random weights; load pretrained ones afterwards).
    ///
    /// # Panics
    /// If `depths` and `num_heads` differ in length or the resolutions do not divide.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Swin<B> {
        assert_eq!(self.depths.len(), self.num_heads.len(), "depths and num_heads must have one entry per stage");
        let grid = self.image_size / self.patch_size;
        let mut blocks = Vec::new();
        let mut merges = Vec::new();
        let mut stage_of = Vec::new();
        for (s, (&depth, &heads)) in self.depths.iter().zip(&self.num_heads).enumerate() {
            let width = self.embed_dim << s;
            let side = grid >> s;
            for b in 0..depth {
                blocks.push(SwinBlock::new(
                    width,
                    heads,
                    (width as f64 * self.mlp_ratio) as usize,
                    [side, side],
                    self.window_size,
                    b % 2 == 1,
                    self.layer_norm_eps,
                    self.prompt_layout,
                    device,
                ));
                stage_of.push(s);
            }
            if s + 1 < self.depths.len() {
                merges.push(PatchMerging::new(width, [side, side], self.layer_norm_eps, device));
            }
        }
        Swin {
            patch_embedding: Conv2dConfig::new([self.num_channels, self.embed_dim], [self.patch_size, self.patch_size])
                .with_stride([self.patch_size, self.patch_size])
                .init(device),
            embedding_norm: LayerNormConfig::new(self.embed_dim).with_epsilon(self.layer_norm_eps).init(device),
            blocks,
            merges,
            final_norm: LayerNormConfig::new(self.embed_dim << (self.depths.len() - 1))
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            stage_of,
            widths: self.stage_widths(),
            image_size: self.image_size,
            pooling: self.pooling,
        }
    }
}

/// A Swin Transformer encoder.
#[derive(Module, Debug)]
pub struct Swin<B: Backend> {
    /// Patch embedding, a `patch_size`-strided convolution.
    pub patch_embedding: Conv2d<B>,
    /// Norm after the patch embedding.
    pub embedding_norm: LayerNorm<B>,
    /// Every block of every stage, in order.
    pub blocks: Vec<SwinBlock<B>>,
    /// Patch merging after each stage but the last.
    pub merges: Vec<PatchMerging<B>>,
    /// Final norm.
    pub final_norm: LayerNorm<B>,
    #[module(skip)]
    stage_of: Vec<usize>,
    #[module(skip)]
    widths: Vec<usize>,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    pooling: Pooling,
}

impl<B: Backend> Swin<B> {
    /// The side of the square images it reads, in pixels (its `config.json`'s `image_size`).
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Layers (flat block indices) that start a stage: the official MoPE code does not re-prompt
    /// them, so the previous stage's prompt outputs flow through patch merging into them.
    pub fn stage_starts(&self) -> Vec<usize> {
        (0..self.blocks.len()).filter(|&l| l == 0 || self.stage_of[l] != self.stage_of[l - 1]).collect()
    }
}

impl<B: FastGelu + FastLinear> PromptableEncoder<B> for Swin<B> {
    /// Normalised pixels `[batch, channels, image_size, image_size]`.
    type Input = Tensor<B, 4>;

    /// Width of the output (the last stage).
    fn d_model(&self) -> usize {
        *self.widths.last().expect("at least one stage")
    }

    fn layer_width(&self, layer: usize) -> usize {
        self.widths[self.stage_of[layer]]
    }

    fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Every block but the first of each stage (20 of Swin-B's 24), as the official MoPE code.
    fn default_prompted_layers(&self) -> Option<Vec<usize>> {
        let starts = self.stage_starts();
        Some((0..self.blocks.len()).filter(|l| !starts.contains(l)).collect())
    }

    fn num_prefix_tokens(&self) -> usize {
        0
    }

    /// # Shapes
    /// - `pixels`: `[batch, channels, image_size, image_size]`
    /// - output tokens: `[batch, (image_size / patch_size)², embed_dim]`, no mask
    ///
    /// # Panics
    /// If the image is not `image_size` pixels on each side.
    fn embed(&self, pixels: &Tensor<B, 4>) -> EncoderTokens<B> {
        let [batch, _, height, width] = pixels.dims();
        assert!(
            height == self.image_size && width == self.image_size,
            "image is {height}x{width}, the Swin expects {0}x{0}",
            self.image_size
        );
        let patches = self.patch_embedding.forward(pixels.clone());
        let [_, d_model, h, w] = patches.dims();
        let tokens = patches.reshape([batch, d_model, h * w]).swap_dims(1, 2);
        EncoderTokens { tokens: self.embedding_norm.forward(tokens), mask_pad: None }
    }

    /// Runs block `index`, then its stage's patch merging if it is the stage's last block.
    fn layer(&self, index: usize, tokens: Tensor<B, 3>, _mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let x = self.blocks[index].forward(tokens);
        let stage = self.stage_of[index];
        let last_of_stage = index + 1 == self.blocks.len() || self.stage_of[index + 1] != stage;
        match self.merges.get(stage) {
            Some(merge) if last_of_stage => merge.forward(x),
            _ => x,
        }
    }

    fn pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        self.pooling.apply(self.final_norm.forward(tokens), mask_pad, 0, num_prompts)
    }

    /// The last stage's patches (7×7 for a 224 input).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, prompts + side², d_model]`; output `[batch, d_model, side, side]`
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        Some(mope_core::square_feature_map(self.final_norm.forward(tokens), num_prompts))
    }
}

/// The architecture fields of a Hugging Face Swin `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct HfSwinConfig {
    /// `model_type`, checked to be `swin`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Input side.
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Channels.
    #[serde(default = "three")]
    pub num_channels: usize,
    /// Width of the first stage.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Heads per stage.
    pub num_heads: Vec<usize>,
    /// Window side.
    pub window_size: usize,
    /// Feed-forward ratio.
    #[serde(default = "four")]
    pub mlp_ratio: f64,
    /// Layer-norm epsilon.
    #[serde(default = "swin_eps")]
    pub layer_norm_eps: f64,
    /// Activation, checked to be `gelu`.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Absolute position embeddings, checked to be off.
    #[serde(default)]
    pub use_absolute_embeddings: bool,
}

fn three() -> usize {
    3
}
fn four() -> f64 {
    4.0
}
fn swin_eps() -> f64 {
    1e-5
}
fn gelu() -> String {
    "gelu".into()
}

impl HfSwinConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self, BackboneError> {
        let config: Self = read_config(path)?;
        check_model_type(path, config.model_type.as_deref(), &["swin"])?;
        check_gelu(path, &config.hidden_act)?;
        if config.use_absolute_embeddings {
            return Err(unsupported(path, "use_absolute_embeddings", "true", "Swin without absolute position embeddings"));
        }
        Ok(config)
    }

    /// The encoder configuration.
    pub fn encoder_config(&self, pooling: Pooling, prompt_layout: PromptLayout) -> SwinConfig {
        SwinConfig::new(self.image_size, self.patch_size, self.embed_dim, self.depths.clone(), self.num_heads.clone(), self.window_size)
            .with_num_channels(self.num_channels)
            .with_mlp_ratio(self.mlp_ratio)
            .with_layer_norm_eps(self.layer_norm_eps)
            .with_pooling(pooling)
            .with_prompt_layout(prompt_layout)
    }
}

/// The Hugging Face key of a [`Swin`] parameter, for stages of `depths` blocks.
pub fn swin_key(prefix: &str, param: &str, depths: &[usize]) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let copy = |key: String| Some(Source::Copy(format!("{prefix}{key}")));
    let norm = |base: String, leaf: &str| layer_norm_source(&format!("{prefix}{base}"), ".", leaf, ("weight", "bias"));
    let linear = |base: String, leaf: &str| linear_source(&format!("{prefix}{base}"), ".", leaf);
    match parts.as_slice() {
        ["patch_embedding", leaf @ ("weight" | "bias")] => copy(format!("embeddings.patch_embeddings.projection.{leaf}")),
        ["embedding_norm", leaf] => norm("embeddings.norm".into(), leaf),
        ["final_norm", leaf] => norm("layernorm".into(), leaf),
        ["merges", s, "norm", leaf] => norm(format!("encoder.layers.{s}.downsample.norm"), leaf),
        ["merges", s, "reduction", "weight"] => Some(Source::Transpose(format!("{prefix}encoder.layers.{s}.downsample.reduction.weight"))),
        ["blocks", l, rest @ ..] => {
            let mut l: usize = l.parse().ok()?;
            let mut stage = 0;
            while stage < depths.len() && l >= depths[stage] {
                l -= depths[stage];
                stage += 1;
            }
            let base = format!("encoder.layers.{stage}.blocks.{l}");
            match rest {
                [norm_name @ ("layernorm_before" | "layernorm_after"), leaf] => norm(format!("{base}.{norm_name}"), leaf),
                ["attention", "relative_position_bias_table"] => copy(format!("{base}.attention.self.relative_position_bias_table")),
                ["attention", which @ ("query" | "key" | "value"), leaf] => linear(format!("{base}.attention.self.{which}"), leaf),
                ["attention", "output", leaf] => linear(format!("{base}.attention.output.dense"), leaf),
                ["ffn_in", leaf] => linear(format!("{base}.intermediate.dense"), leaf),
                ["ffn_out", leaf] => linear(format!("{base}.output.dense"), leaf),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Loads a Swin from a Hugging Face snapshot directory (`config.json`, `model.safetensors`).
pub fn load_swin<B: Backend>(
    dir: &Path,
    pooling: Pooling,
    prompt_layout: PromptLayout,
    device: &B::Device,
) -> Result<(Swin<B>, LoadReport), BackboneError> {
    let config = HfSwinConfig::read(&dir.join("config.json"))?;
    let (weights, prefix, _) = snapshot::weights(dir, &["swin."])?;
    let swin = config.encoder_config(pooling, prompt_layout).init::<B>(device);
    Ok(load_safetensors(swin, &weights, |param| swin_key(prefix, param, &config.depths))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_flattens_stages() {
        let depths = [2, 2, 18, 2];
        let key = |p: &str| swin_key("", p, &depths).map(|s| s.key().to_string());
        assert_eq!(key("blocks.0.layernorm_before.gamma").as_deref(), Some("encoder.layers.0.blocks.0.layernorm_before.weight"));
        assert_eq!(key("blocks.3.attention.query.weight").as_deref(), Some("encoder.layers.1.blocks.1.attention.self.query.weight"));
        assert_eq!(
            key("blocks.21.attention.relative_position_bias_table").as_deref(),
            Some("encoder.layers.2.blocks.17.attention.self.relative_position_bias_table")
        );
        assert_eq!(key("blocks.23.ffn_out.bias").as_deref(), Some("encoder.layers.3.blocks.1.output.dense.bias"));
        assert_eq!(key("merges.2.reduction.weight").as_deref(), Some("encoder.layers.2.downsample.reduction.weight"));
        assert_eq!(key("final_norm.beta").as_deref(), Some("layernorm.bias"));
    }

    #[test]
    fn swin_b_has_24_blocks_and_4_widths() {
        let config = SwinConfig::swin_base_patch4_window7_224();
        assert_eq!(config.stage_widths(), [128, 256, 512, 1024]);
        assert_eq!(config.depths.iter().sum::<usize>(), 24);
    }
}
