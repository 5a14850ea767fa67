//! One transformer encoder layer: multi-head self-attention and a GELU feed-forward block, with
//! residual connections and layer norms either after each block (post-norm, BERT) or before it
//! (pre-norm, ViT).

use std::ops::Range;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use ops::{Kernels, gelu, layer_norm};

use crate::self_attention::SelfAttention;
use crate::linear_layer::linear;
use crate::unpadded::{KeptRows, Unpadded};

/// Configuration of a [`TransformerLayer`].
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    /// Token width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Hidden width of the feed-forward block.
    pub d_ff: usize,
    /// Dropout on the block outputs (the attention itself has none: [`SelfAttention`]).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Layer-norm epsilon (BERT: 1e-12, ViT: 1e-12 in Hugging Face, 1e-6 in timm).
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Pre-norm (`x + f(norm(x))`, ViT) instead of post-norm (`norm(x + f(x))`, BERT).
    #[config(default = false)]
    pub norm_first: bool,
}

/// A transformer encoder layer.
#[derive(Module, Debug)]
pub struct TransformerLayer<B: Backend> {
    /// Self-attention.
    pub attention: SelfAttention<B>,
    /// Norm of the attention block.
    pub attention_norm: LayerNorm<B>,
    /// Feed-forward input projection, `d_model → d_ff`.
    pub ffn_in: Linear<B>,
    /// Feed-forward output projection, `d_ff → d_model`.
    pub ffn_out: Linear<B>,
    /// Norm of the feed-forward block.
    pub ffn_norm: LayerNorm<B>,
    dropout: Dropout,
    norm_first: bool,
    /// The norms' epsilon (burn's `LayerNorm` keeps its own private).
    layer_norm_eps: f64,
}

impl TransformerLayerConfig {
    /// Initialises the layer on `device`.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `n_heads`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerLayer<B> {
        let norm = || LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps).init(device);
        TransformerLayer {
            attention: SelfAttention::new(self.d_model, self.n_heads, device),
            attention_norm: norm(),
            ffn_in: LinearConfig::new(self.d_model, self.d_ff).init(device),
            ffn_out: LinearConfig::new(self.d_ff, self.d_model).init(device),
            ffn_norm: norm(),
            dropout: DropoutConfig::new(self.dropout).init(),
            norm_first: self.norm_first,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

impl<B: Kernels> TransformerLayer<B> {
    /// Runs the layer. With padding, the row-wise work (projections, feed-forward, norms,
    /// residuals) runs on the real tokens alone ([`Unpadded`]); the padding positions of the
    /// output are then zero, which nothing reads (they are masked wherever tokens are mixed).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]` (`true` = padding)
    /// - output: `[batch, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        match (mask_pad.as_ref().and_then(Unpadded::from_mask), mask_pad) {
            (Some(unpadded), Some(mask)) => {
                let attend = |rows, _| self.attention.forward_unpadded(rows, &unpadded, mask.clone());
                unpadded.unpack(self.blocks(unpadded.pack(x), |h| h, attend))
            }
            (_, mask) => self.blocks(x, |h| h, |h, _| self.attention.forward(h, mask.clone())),
        }
    }

    /// [`forward`](Self::forward) when nothing reads the outputs at positions `discard`: those
    /// rows serve as attention keys and values only, and everything else of the layer (queries,
    /// output projection, feed-forward, norms, residuals) runs on the other real tokens
    /// ([`KeptRows`]). The output is zero at the discarded positions and the padding; the other
    /// rows are [`forward`](Self::forward)'s. For deep prompts that the next layer replaces this
    /// skips the prompt rows' share of the layer's work.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]` (`true` = padding)
    /// - output: `[batch, seq_len, d_model]`
    pub fn forward_discarding(&self, x: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3> {
        let [batch, seq_len, _] = x.dims();
        let rows = KeptRows::new(mask_pad.as_ref(), [batch, seq_len], discard, &x.device());
        let attend = |queries, keys| self.attention.forward_kept(queries, keys, &rows, mask_pad.clone());
        rows.kept.unpack(self.blocks(rows.real.pack(x), |h| rows.keep(h), attend))
    }

    /// The attention block (`attend(queries, keys)`) and the feed-forward block, with residuals
    /// and norms, for the rows `keep` selects of `x`; every row of `x` serves as a key.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]` (a padded batch or the rows of its real tokens); output: the
    ///   rows `keep` selects
    fn blocks<const D: usize>(
        &self,
        x: Tensor<B, D>,
        keep: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
        attend: impl Fn(Tensor<B, D>, Tensor<B, D>) -> Tensor<B, D>,
    ) -> Tensor<B, D> {
        let attend = |queries: Tensor<B, D>, keys: Tensor<B, D>| self.dropout.forward(attend(queries, keys));
        let feed_forward =
            |h: Tensor<B, D>| self.dropout.forward(linear(&self.ffn_out, gelu(linear(&self.ffn_in, h))));
        // burn's `LayerNorm` parameters, normalised by one autodiff operation (`ops::layer_norm`).
        let norm = |norm: &LayerNorm<B>, h: Tensor<B, D>| layer_norm(h, norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()), self.layer_norm_eps);
        if self.norm_first {
            let h = norm(&self.attention_norm, x.clone());
            let x = keep(x) + attend(keep(h.clone()), h);
            x.clone() + feed_forward(norm(&self.ffn_norm, x))
        } else {
            let x = norm(&self.attention_norm, keep(x.clone()) + attend(keep(x.clone()), x));
            norm(&self.ffn_norm, x.clone() + feed_forward(x))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    type B = Flex;

    #[test]
    fn padding_does_not_change_real_tokens() {
        let device = Default::default();
        let layer = TransformerLayerConfig::new(8, 2, 16).init::<B>(&device);
        let x = Tensor::<B, 3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let padded = Tensor::cat(vec![x.clone(), Tensor::random([1, 2, 8], Distribution::Normal(0.0, 5.0), &device)], 1);
        let mask = Tensor::<B, 2, Bool>::from_bool([[false, false, false, true, true]].into(), &device);
        let short = layer.forward(x, None);
        let long = layer.forward(padded, Some(mask)).narrow(1, 0, 3);
        long.to_data().assert_approx_eq::<f32>(&short.to_data(), Tolerance::default());
    }

    /// Discarding rows changes no other row's output, nor the gradient of anything computed from
    /// those rows: the discarded rows still serve as keys and values. Pre- and post-norm, with
    /// and without padding.
    #[test]
    fn discarded_rows_change_no_other_row_nor_its_gradient() {
        type AB = burn::backend::Autodiff<B>;
        let device = Default::default();
        let padded = Tensor::<AB, 2, Bool>::from_bool([[false, false, false, false, true], [false; 5]].into(), &device);
        for norm_first in [false, true] {
            let layer = TransformerLayerConfig::new(8, 2, 16).with_norm_first(norm_first).init::<AB>(&device);
            for mask in [None, Some(padded.clone())] {
                let x = Tensor::<B, 3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
                let weights = Tensor::<AB, 3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
                // Only rows outside 1..3 (and real) count, as in a loss that reads the kept rows.
                let mut counted = [[1.0f32; 5]; 2];
                counted.iter_mut().for_each(|row| row[1..3].fill(0.0));
                counted[0][4] = 0.0;
                let counted = Tensor::<AB, 2>::from_floats(counted, &device).unsqueeze_dim::<3>(2);
                let run = |discard: bool| {
                    let x = Tensor::<AB, 3>::from_inner(x.clone()).require_grad();
                    let y = if discard { layer.forward_discarding(x.clone(), mask.clone(), 1..3) } else { layer.forward(x.clone(), mask.clone()) };
                    let y = y * counted.clone();
                    let grads = (y.clone() * weights.clone()).sum().backward();
                    (y.inner(), x.grad(&grads).unwrap())
                };
                let ((y_all, grad_all), (y_kept, grad_kept)) = (run(false), run(true));
                y_kept.to_data().assert_approx_eq::<f32>(&y_all.to_data(), Tolerance::absolute(1e-6));
                grad_kept.to_data().assert_approx_eq::<f32>(&grad_all.to_data(), Tolerance::absolute(1e-6));
                // The discarded rows are keys: their inputs still receive gradient.
                let key_grad: f32 = grad_kept.narrow(1, 1, 2).abs().sum().into_scalar();
                assert!(key_grad > 1e-3, "norm_first {norm_first}: discarded rows got no gradient as keys");
            }
        }
    }

    #[test]
    fn post_norm_output_is_normalised_pre_norm_is_residual() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([2, 4, 8], Distribution::Normal(3.0, 2.0), &device);
        let post = TransformerLayerConfig::new(8, 2, 16).init::<B>(&device).forward(x.clone(), None);
        let mean: f32 = post.clone().mean_dim(2).abs().max().into_scalar();
        assert!(mean < 1e-4, "post-norm rows have zero mean, got {mean}");
        let pre = TransformerLayerConfig::new(8, 2, 16).with_norm_first(true).init::<B>(&device).forward(x, None);
        let mean: f32 = pre.mean_dim(2).abs().max().into_scalar();
        assert!(mean > 0.1, "pre-norm keeps the residual stream's offset, got {mean}");
    }
}
