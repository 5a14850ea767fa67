//! The contract between mope-core and a frozen encoder: what a backbone exposes so that prompt
//! tokens can be inserted before each of its layers.

use std::ops::Range;

use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};

/// Embedded input of an encoder, before its first layer.
#[derive(Debug, Clone)]
pub struct EncoderTokens<B: Backend> {
    /// Token embeddings, prefix tokens (such as `[CLS]`) first.
    ///
    /// Shape `[batch, seq_len, d_model]`.
    pub tokens: Tensor<B, 3>,
    /// Padding mask, `true` where a token is padding and must not be attended to.
    /// `None` when no token is padding (images).
    ///
    /// Shape `[batch, seq_len]`.
    pub mask_pad: Option<Tensor<B, 2, Bool>>,
}

/// A transformer encoder whose layers can be driven one at a time, so that deep prompts can be
/// inserted before each layer (see [`forward_prompted`](crate::forward_prompted)).
///
/// Implementors are frozen backbones; they own embeddings, layers, the final norm and pooling.
pub trait PromptableEncoder<B: Backend>: Module<B> {
    /// What the encoder reads: token ids and mask for text, pixels for images, samples for audio.
    type Input;

    /// Width of the pooled output (and of the hidden states when it does not change).
    fn d_model(&self) -> usize;

    /// Width of the hidden states entering layer `layer`, hence of the prompts inserted there.
    /// Constant (`d_model`) by default; hierarchical encoders such as Swin widen per stage.
    fn layer_width(&self, layer: usize) -> usize {
        let _ = layer;
        self.d_model()
    }

    /// Number of transformer layers (prompt insertion points).
    fn num_layers(&self) -> usize;

    /// Layers that receive fresh prompts when the configuration does not say; `None`: all.
    /// Swin returns every block but the first of each stage, as the official MoPE code prompts it.
    fn default_prompted_layers(&self) -> Option<Vec<usize>> {
        None
    }

    /// Number of leading tokens that prompts are inserted *after* (1 for a `[CLS]` token, 0 if none).
    fn num_prefix_tokens(&self) -> usize;

    /// Embeds the input.
    ///
    /// # Shapes
    /// - output tokens: `[batch, seq_len, d_model]`, mask `[batch, seq_len]`
    fn embed(&self, input: &Self::Input) -> EncoderTokens<B>;

    /// Runs layer `index` (0-based).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`
    /// - output: `[batch, seq_len, d_model]`
    fn layer(
        &self,
        index: usize,
        tokens: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3>;

    /// Runs layer `index` when nothing reads its outputs at the positions `discard` (prompt
    /// positions whose outputs the next layer's fresh prompts replace, or that pooling leaves
    /// out): those rows still serve as attention keys and values, but their outputs may hold
    /// anything, so an encoder may skip their queries, feed-forward and norms. The other rows
    /// equal [`layer`](Self::layer)'s. The default runs [`layer`](Self::layer).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`, `discard` within `0..seq_len`
    /// - output: `[batch, seq_len, d_model]`
    fn layer_discarding(
        &self,
        index: usize,
        tokens: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        discard: Range<usize>,
    ) -> Tensor<B, 3> {
        let _ = discard;
        self.layer(index, tokens, mask_pad)
    }

    /// Whether [`pool`](Self::pool) reads the prompt tokens' outputs (then the last layer
    /// computes them). `true` by default. [`feature_map`](Self::feature_map) must never read
    /// them: the last layer may leave them uncomputed.
    fn pool_reads_prompts(&self) -> bool {
        true
    }

    /// Whether [`freeze`](Self::freeze) leaves a part trainable, so that the pooled
    /// representation changes as training goes even without prompts. `false` by default.
    fn keeps_trainable_part(&self) -> bool {
        false
    }

    /// Freezes the pretrained parts. The default freezes every parameter; an encoder with a part
    /// that must be learned (such as a projection of foreign features into a pretrained
    /// transformer) keeps that part trainable, and it then belongs to the adapter.
    fn freeze(self) -> Self
    where
        Self: Sized,
    {
        self.no_grad()
    }

    /// Final normalisation and pooling to one vector per sample. `num_prompts` prompt tokens sit
    /// right after the prefix tokens; the encoder's pooling decides whether they are included.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`
    /// - output: `[batch, d_model]`
    fn pool(
        &self,
        tokens: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        num_prompts: usize,
    ) -> Tensor<B, 2>;

    /// The final patch tokens as a feature map, for dense prediction (segmentation): final
    /// normalisation applied, prefix and prompt tokens left out. `None` for encoders without a
    /// spatial grid (text, audio), the default.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len, d_model]` (the last layer's output)
    /// - output: `[batch, d_model, height, width]`
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        let _ = (tokens, num_prompts);
        None
    }
}

/// The tokens after the first `skip` as a square feature map (row-major patches), the layout of
/// ViT-style encoders.
///
/// # Shapes
/// - `tokens`: `[batch, skip + side², d_model]`; output `[batch, d_model, side, side]`
///
/// # Panics
/// If the remaining tokens are not a square number.
pub fn square_feature_map<B: Backend>(tokens: Tensor<B, 3>, skip: usize) -> Tensor<B, 4> {
    let [batch, seq_len, d_model] = tokens.dims();
    let patches = seq_len - skip;
    let side = (patches as f64).sqrt().round() as usize;
    assert_eq!(side * side, patches, "{patches} patch tokens do not form a square grid");
    tokens.narrow(1, skip, patches).reshape([batch, side, side, d_model]).permute([0, 3, 1, 2])
}
