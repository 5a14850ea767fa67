//! Deep prompt insertion (VPT-deep style): before each layer, the prompt outputs of the previous
//! layer are replaced by fresh prompt tokens, placed right after the encoder's prefix tokens.

use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use ops::{FastSplice, splice_by_cat, splice_tokens};

use crate::encoder::{EncoderTokens, PromptableEncoder};

/// Supplies the prompt tokens of each layer.
pub trait LayerPromptSource<B: Backend> {
    /// Prompt tokens to insert before layer `layer`, or `None` to leave the sequence as it is
    /// (the previous layer's prompt outputs, if any, then flow through this layer).
    ///
    /// `hidden` is the layer's input *before* insertion, so a router can read it.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`
    /// - output: `[batch, num_prompt_tokens, d_model]`
    fn prompts(
        &mut self,
        layer: usize,
        hidden: &Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
    ) -> Option<Tensor<B, 3>>;

    /// Whether fresh prompts will be inserted before `layer` without anything reading the
    /// outputs of the previous layer at the old prompt positions (a router reading the mean of
    /// `hidden` reads them). The previous layer may then skip computing those outputs
    /// ([`PromptableEncoder::layer_discarding`]). `false` by default.
    fn replaces_unread(&self, layer: usize) -> bool {
        let _ = layer;
        false
    }
}

/// A source that inserts nothing: the plain frozen forward.
impl<B: Backend> LayerPromptSource<B> for () {
    fn prompts(
        &mut self,
        _layer: usize,
        _hidden: &Tensor<B, 3>,
        _mask_pad: Option<&Tensor<B, 2, Bool>>,
    ) -> Option<Tensor<B, 3>> {
        None
    }
}

/// Output of [`forward_prompted`].
#[derive(Debug, Clone)]
pub struct PromptedTokens<B: Backend> {
    /// Final hidden states, prompt outputs included where pooling reads them; what a padding
    /// position or an unread prompt position holds is unspecified (encoders may skip those rows
    /// and leave zeros there). Shape `[batch, seq_len, d_model]`.
    pub tokens: Tensor<B, 3>,
    /// Padding mask matching `tokens`. Shape `[batch, seq_len]`.
    pub mask_pad: Option<Tensor<B, 2, Bool>>,
    /// Number of prompt tokens after the prefix tokens in `tokens`.
    pub num_prompts: usize,
    /// Pooled representation. Shape `[batch, d_model]`.
    pub pooled: Tensor<B, 2>,
}

/// Runs `encoder` on `embedded`, inserting the prompts of `source` before every layer.
///
/// A layer whose prompt outputs nothing reads (the next layer replaces them unread, or pooling
/// leaves them out after the last layer) runs with those rows as attention keys and values only
/// ([`PromptableEncoder::layer_discarding`]); the output's `tokens` are then unspecified at the
/// prompt positions.
///
/// # Shapes
/// - `embedded.tokens`: `[batch, seq_len, d_model]`
/// - output tokens: `[batch, seq_len + num_prompts, d_model]`, pooled `[batch, d_model]`
///
/// # Panics
/// If a prompt's batch size or width differs from the hidden states'.
pub fn forward_prompted<B: FastSplice, E: PromptableEncoder<B>>(
    encoder: &E,
    embedded: EncoderTokens<B>,
    source: &mut impl LayerPromptSource<B>,
) -> PromptedTokens<B> {
    let prefix = encoder.num_prefix_tokens();
    let EncoderTokens {
        tokens: mut x,
        mask_pad: mut mask,
    } = embedded;
    let mut num_prompts = 0;
    // The previous layer left its prompt outputs uncomputed: this layer must replace them.
    let mut replace = false;
    for layer in 0..encoder.num_layers() {
        let prompt = source.prompts(layer, &x, mask.as_ref());
        assert!(prompt.is_some() || !replace, "the prompt source said layer {layer} replaces the previous prompt outputs, then gave no prompts");
        if let Some(prompt) = prompt {
            let [batch, _, d_model] = x.dims();
            let [p_batch, p_len, p_width] = prompt.dims();
            assert!(
                p_batch == batch && p_width == d_model,
                "prompt of layer {layer} has shape [{p_batch}, {p_len}, {p_width}], \
                 expected [{batch}, _, {d_model}] to match the hidden states"
            );
            let rest = prefix + num_prompts;
            x = splice_tokens(x, prefix, rest, prompt);
            mask = mask.map(|m| {
                // Prompt tokens are never padding.
                let visible = Tensor::<B, 2, Int>::zeros([batch, p_len], &m.device()).bool();
                splice_by_cat(m, prefix, rest, visible)
            });
            num_prompts = p_len;
        }
        let unread = match layer + 1 {
            next if next < encoder.num_layers() => source.replaces_unread(next),
            _ => !encoder.pool_reads_prompts(),
        };
        replace = unread && num_prompts > 0;
        x = if replace {
            encoder.layer_discarding(layer, x, mask.clone(), prefix..prefix + num_prompts)
        } else {
            encoder.layer(layer, x, mask.clone())
        };
    }
    let pooled = encoder.pool(x.clone(), mask.clone(), num_prompts);
    PromptedTokens {
        tokens: x,
        mask_pad: mask,
        num_prompts,
        pooled,
    }
}
