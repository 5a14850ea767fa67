//! One transformer encoder layer: multi-head self-attention and a GELU feed-forward block, with
//! residual connections and layer norms either after each block (post-norm, BERT) or before it
//! (pre-norm, ViT).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use ops::{Kernels, gelu, layer_norm};

use crate::self_attention::SelfAttention;
use crate::linear_layer::linear;
use crate::unpadded::Unpadded;

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
                let attend = |rows| self.attention.forward_unpadded(rows, &unpadded, mask.clone());
                unpadded.unpack(self.blocks(unpadded.pack(x), attend))
            }
            (_, mask) => self.blocks(x, |h| self.attention.forward(h, mask.clone())),
        }
    }

    /// The attention block (`attend`) and the feed-forward block, with residuals and norms.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]` (a padded batch or the rows of its real tokens); output the same
    fn blocks<const D: usize>(&self, x: Tensor<B, D>, attend: impl Fn(Tensor<B, D>) -> Tensor<B, D>) -> Tensor<B, D> {
        let attend = |h: Tensor<B, D>| self.dropout.forward(attend(h));
        let feed_forward =
            |h: Tensor<B, D>| self.dropout.forward(linear(&self.ffn_out, gelu(linear(&self.ffn_in, h))));
        // burn's `LayerNorm` parameters, normalised by one autodiff operation (`ops::layer_norm`).
        let norm = |norm: &LayerNorm<B>, h: Tensor<B, D>| layer_norm(h, norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()), self.layer_norm_eps);
        if self.norm_first {
            let x = x.clone() + attend(norm(&self.attention_norm, x));
            x.clone() + feed_forward(norm(&self.ffn_norm, x))
        } else {
            let x = norm(&self.attention_norm, x.clone() + attend(x));
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
