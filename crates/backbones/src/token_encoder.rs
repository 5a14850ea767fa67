//! A BERT-shaped encoder over token ids: word, position and token-type embeddings, a layer norm,
//! then [`TransformerLayer`]s. With post-norm layers this is BERT / MiniLM; it is also the
//! smallest complete encoder for tests of the prompt machinery.

use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::Kernels;

use crate::pooling::Pooling;
use crate::transformer::{TransformerLayer, TransformerLayerConfig};

/// Configuration of a [`TokenEncoder`]. Field names follow Hugging Face's `BertConfig` where they
/// have one, so that a `config.json` maps onto it.
#[derive(Config, Debug)]
pub struct TokenEncoderConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token width (`hidden_size`).
    pub d_model: usize,
    /// Attention heads (`num_attention_heads`).
    pub n_heads: usize,
    /// Feed-forward width (`intermediate_size`).
    pub d_ff: usize,
    /// Layers (`num_hidden_layers`).
    pub num_layers: usize,
    /// Longest sequence, prompts included (`max_position_embeddings`).
    #[config(default = 512)]
    pub max_position: usize,
    /// Token types (`type_vocab_size`); 0 for none.
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Dropout (`hidden_dropout_prob`); active only on an autodiff backend.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Pooling of the output.
    #[config(default = "Pooling::Cls")]
    pub pooling: Pooling,
}

/// One batch of token ids.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// Token ids, `[CLS]` first. Shape `[batch, seq_len]`.
    pub ids: Tensor<B, 2, Int>,
    /// `true` at padding positions. Shape `[batch, seq_len]`.
    pub mask_pad: Tensor<B, 2, Bool>,
}

/// A BERT-shaped text encoder.
#[derive(Module, Debug)]
pub struct TokenEncoder<B: Backend> {
    /// Word embeddings `[vocab_size, d_model]`.
    pub word_embeddings: Embedding<B>,
    /// Absolute position embeddings `[max_position, d_model]`.
    pub position_embeddings: Embedding<B>,
    /// Token-type embeddings `[type_vocab_size, d_model]`.
    pub token_type_embeddings: Option<Embedding<B>>,
    /// Norm after the embedding sum.
    pub embedding_norm: LayerNorm<B>,
    /// Transformer layers.
    pub layers: Vec<TransformerLayer<B>>,
    dropout: Dropout,
    #[module(skip)]
    pooling: Pooling,
}

impl TokenEncoderConfig {
    /// Initialises the encoder on `device` (random weights; load pretrained ones afterwards).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenEncoder<B> {
        let layer = TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_dropout(self.dropout)
            .with_layer_norm_eps(self.layer_norm_eps);
        TokenEncoder {
            word_embeddings: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            position_embeddings: EmbeddingConfig::new(self.max_position, self.d_model).init(device),
            token_type_embeddings: (self.type_vocab_size > 0)
                .then(|| EmbeddingConfig::new(self.type_vocab_size, self.d_model).init(device)),
            embedding_norm: LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps).init(device),
            layers: (0..self.num_layers).map(|_| layer.init(device)).collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            pooling: self.pooling,
        }
    }
}

impl<B: Backend> TokenEncoder<B> {
    /// Longest input the position embeddings cover.
    pub fn max_position(&self) -> usize {
        self.position_embeddings.weight.dims()[0]
    }

    /// Embeds vectors that stand in for word embeddings (e.g. projected image features): adds
    /// position and token-type embeddings and applies the embedding norm, as for token ids.
    ///
    /// # Shapes
    /// - `vectors`: `[batch, seq_len, d_model]`; output tokens the same, no mask
    ///
    /// # Panics
    /// If the sequence is longer than the position embeddings.
    pub fn embed_vectors(&self, vectors: Tensor<B, 3>) -> EncoderTokens<B> {
        let [batch, seq_len, _] = vectors.dims();
        assert!(seq_len <= self.max_position(), "sequence of {seq_len} tokens exceeds max_position = {}", self.max_position());
        let device = vectors.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq_len as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, batch);
        let mut x = vectors + self.position_embeddings.forward(positions);
        if let Some(types) = &self.token_type_embeddings {
            x = x + types.forward(Tensor::zeros([batch, seq_len], &device));
        }
        EncoderTokens { tokens: self.dropout.forward(self.embedding_norm.forward(x)), mask_pad: None }
    }
}

impl<B: Kernels> PromptableEncoder<B> for TokenEncoder<B> {
    type Input = TokenBatch<B>;

    fn d_model(&self) -> usize {
        self.word_embeddings.weight.dims()[1]
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn num_prefix_tokens(&self) -> usize {
        1
    }

    /// # Shapes
    /// - `input.ids`: `[batch, seq_len]`; output tokens `[batch, seq_len, d_model]`
    ///
    /// # Panics
    /// If the sequence is longer than the position embeddings, or the mask's shape differs.
    fn embed(&self, input: &TokenBatch<B>) -> EncoderTokens<B> {
        let [batch, seq_len] = input.ids.dims();
        assert!(
            seq_len <= self.max_position(),
            "sequence of {seq_len} tokens exceeds max_position = {}",
            self.max_position()
        );
        assert_eq!(input.mask_pad.dims(), [batch, seq_len], "mask_pad must have the shape of ids [batch, seq_len]");
        let embedded = self.embed_vectors(self.word_embeddings.forward(input.ids.clone()));
        EncoderTokens { tokens: embedded.tokens, mask_pad: Some(input.mask_pad.clone()) }
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
        self.pooling.apply(tokens, mask_pad, self.num_prefix_tokens(), num_prompts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Tolerance, TensorData};
    use mope_core::forward_prompted;

    type B = Flex;

    fn batch(ids: Vec<i64>, pad: Vec<bool>, len: usize) -> TokenBatch<B> {
        let device = Default::default();
        let n = ids.len() / len;
        TokenBatch {
            ids: Tensor::from_data(TensorData::new(ids, [n, len]), &device),
            mask_pad: Tensor::from_data(TensorData::new(pad, [n, len]), &device),
        }
    }

    #[test]
    fn padded_and_unpadded_inputs_agree() {
        let device = Default::default();
        let encoder = TokenEncoderConfig::new(20, 8, 2, 16, 2).with_pooling(Pooling::Mean).init::<B>(&device);
        let short = batch(vec![1, 5, 6], vec![false; 3], 3);
        let long = batch(vec![1, 5, 6, 0, 0], vec![false, false, false, true, true], 5);
        let a = forward_prompted(&encoder, encoder.embed(&short), &mut ()).pooled;
        let b = forward_prompted(&encoder, encoder.embed(&long), &mut ()).pooled;
        assert_eq!(a.dims(), [1, 8]);
        b.to_data().assert_approx_eq::<f32>(&a.to_data(), Tolerance::default());
    }

    /// Fresh prompts before every layer, the same ones whether or not the source says it
    /// replaces the previous prompt outputs unread.
    struct EveryLayer<B: Backend> {
        prompts: Vec<Tensor<B, 3>>,
        unread: bool,
    }

    impl<B: Backend> mope_core::LayerPromptSource<B> for EveryLayer<B> {
        fn prompts(&mut self, layer: usize, _: &Tensor<B, 3>, _: Option<&Tensor<B, 2, Bool>>) -> Option<Tensor<B, 3>> {
            Some(self.prompts[layer].clone())
        }
        fn replaces_unread(&self, _: usize) -> bool {
            self.unread
        }
    }

    /// Skipping the prompt rows that the next layer replaces (and, with mean pooling, those of
    /// the last layer) changes neither the pooled output nor the prompts' gradients.
    #[test]
    fn unread_prompt_outputs_change_neither_the_output_nor_the_prompts_gradients() {
        type AB = burn::backend::Autodiff<B>;
        let device = Default::default();
        for pooling in [Pooling::Cls, Pooling::Mean] {
            let encoder = TokenEncoderConfig::new(20, 8, 2, 16, 3).with_pooling(pooling).init::<AB>(&device);
            let input = TokenBatch::<AB> {
                ids: Tensor::from_data(TensorData::new(vec![1i64, 5, 6, 7, 1, 8, 0, 0], [2, 4]), &device),
                mask_pad: Tensor::from_data(TensorData::new(vec![false, false, false, false, false, false, true, true], [2, 4]), &device),
            };
            let prompts: Vec<Tensor<B, 3>> = (0..3).map(|_| Tensor::random([2, 2, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device)).collect();
            let run = |unread: bool| {
                let prompts: Vec<Tensor<AB, 3>> = prompts.iter().map(|p| Tensor::from_inner(p.clone()).require_grad()).collect();
                let mut source = EveryLayer { prompts: prompts.clone(), unread };
                let pooled = forward_prompted(&encoder, encoder.embed(&input), &mut source).pooled;
                let grads = (pooled.clone() * pooled.clone()).sum().backward();
                (pooled.inner(), prompts.iter().map(|p| p.grad(&grads).unwrap()).collect::<Vec<_>>())
            };
            let ((pooled_all, grads_all), (pooled_kept, grads_kept)) = (run(false), run(true));
            pooled_kept.to_data().assert_approx_eq::<f32>(&pooled_all.to_data(), Tolerance::absolute(1e-6));
            for (kept, all) in grads_kept.iter().zip(&grads_all) {
                kept.to_data().assert_approx_eq::<f32>(&all.to_data(), Tolerance::absolute(1e-6));
            }
        }
    }

    #[test]
    #[should_panic(expected = "sequence of 6 tokens exceeds max_position = 5")]
    fn too_long_input_names_both_lengths() {
        let device = Default::default();
        let encoder = TokenEncoderConfig::new(20, 8, 2, 16, 1).with_max_position(5).init::<B>(&device);
        encoder.embed(&batch(vec![1; 6], vec![false; 6], 6));
    }
}
