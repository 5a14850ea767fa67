//! Multi-head self-attention of the transformer encoders (BERT, ViT, Whisper): the parameters of
//! burn's `MultiHeadAttention` (query, key, value and output projections, under the same names),
//! run as one operation with a hand-written backward ([`ops::attention`]), which is several
//! times cheaper than burn's composed attention on its CPU backend.
//!
//! Unlike burn's module it has no dropout inside the attention: the frozen encoders run with
//! dropout 0, and the layer's dropout on its block outputs is kept ([`crate::transformer`]).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use ops::{FastAttention, FastLinear, multi_head_attention};

use crate::linear_layer::linear;
use crate::unpadded::{KeptRows, Unpadded};

/// Multi-head self-attention.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection, `d_model → d_model`.
    pub query: Linear<B>,
    /// Key projection, `d_model → d_model`.
    pub key: Linear<B>,
    /// Value projection, `d_model → d_model`.
    pub value: Linear<B>,
    /// Output projection, `d_model → d_model`.
    pub output: Linear<B>,
    #[module(skip)]
    n_heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// A randomly initialised attention (burn's `Linear` initialisation, as burn's
    /// `MultiHeadAttention`), drawn in the order query, key, value, output.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `n_heads`.
    pub fn new(d_model: usize, n_heads: usize, device: &B::Device) -> Self {
        assert!(d_model.is_multiple_of(n_heads), "d_model = {d_model} is not a multiple of n_heads = {n_heads}");
        let linear = || LinearConfig::new(d_model, d_model).init(device);
        Self { query: linear(), key: linear(), value: linear(), output: linear(), n_heads }
    }
}

impl<B: FastAttention + FastLinear> SelfAttention<B> {
    /// Attends every token to every non-padding token of its sample.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]` (`true` = padding)
    /// - output: `[batch, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let (q, k, v) = (linear(&self.query, x.clone()), linear(&self.key, x.clone()), linear(&self.value, x));
        linear(&self.output, multi_head_attention(q, k, v, mask_pad, self.n_heads))
    }

    /// [`forward`](Self::forward) on the real tokens of a padded batch alone: the projections run
    /// on their rows, the attention on the padded layout (zeros at the padding, masked as keys).
    ///
    /// # Shapes
    /// - `rows`: `[tokens, d_model]`, the real tokens of `unpadded`; `mask_pad`: `[batch, seq_len]`
    /// - output: `[tokens, d_model]`
    pub fn forward_unpadded(&self, rows: Tensor<B, 2>, unpadded: &Unpadded<B>, mask_pad: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        let project = |layer: &Linear<B>| unpadded.unpack(linear(layer, rows.clone()));
        let (q, k, v) = (project(&self.query), project(&self.key), project(&self.value));
        linear(&self.output, unpadded.pack(multi_head_attention(q, k, v, Some(mask_pad), self.n_heads)))
    }

    /// [`forward`](Self::forward) for the kept rows of a batch alone ([`KeptRows`]): queries
    /// from `queries` (the kept tokens), keys and values from `keys` (every real token).
    ///
    /// # Shapes
    /// - `queries`: `[kept tokens, d_model]`, `keys`: `[real tokens, d_model]`,
    ///   `mask_pad`: `[batch, seq_len]`
    /// - output: `[kept tokens, d_model]`
    pub fn forward_kept(&self, queries: Tensor<B, 2>, keys: Tensor<B, 2>, rows: &KeptRows<B>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 2> {
        let q = rows.kept.unpack(linear(&self.query, queries));
        let (k, v) = (rows.real.unpack(linear(&self.key, keys.clone())), rows.real.unpack(linear(&self.value, keys)));
        linear(&self.output, rows.kept.pack(multi_head_attention(q, k, v, mask_pad, self.n_heads)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig};
    use burn::tensor::{Distribution, Tolerance};

    /// The same weights in burn's `MultiHeadAttention` and in ours give the same output, with
    /// and without padding.
    #[test]
    fn matches_burns_multi_head_attention() {
        let device = Default::default();
        let burns = MultiHeadAttentionConfig::new(12, 3).init::<Flex>(&device);
        let x = Tensor::<Flex, 3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let mask = Tensor::<Flex, 2, Bool>::from_bool([[false, false, false, true, true], [false; 5]].into(), &device);
        let masks = [None, Some(mask)];
        let expected = masks.clone().map(|mask| {
            let input = MhaInput::self_attn(x.clone());
            let input = match mask {
                Some(mask) => input.mask_pad(mask),
                None => input,
            };
            burns.forward(input).context
        });
        // Cloned after the forward pass: burn initialises parameters lazily, and a clone of an
        // uninitialised one would draw its own values.
        let ours = SelfAttention { query: burns.query.clone(), key: burns.key.clone(), value: burns.value.clone(), output: burns.output.clone(), n_heads: 3 };
        for (mask, expected) in masks.into_iter().zip(expected) {
            ours.forward(x.clone(), mask).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        }
    }
}
