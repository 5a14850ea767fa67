//! The mapper of MoPE: projects the complementary modality's representation into mapped prompt
//! tokens of the main encoder's width.
//!
//! ```text
//! h   = GELU(W0 · y + b0)                        [batch, d_hidden]
//! m_w = Dropout(GELU(W_w · h + b_w))             [batch, num_tokens · w] → [batch, num_tokens, w]
//! ```
//! with one output projection `W_w` per token width `w` of the prompted encoder (one for a ViT or
//! BERT; one per stage for Swin, as the official code's `prompt_proj_s`).
//! The official code has a BatchNorm after `W0` that is stuck in evaluation mode with its initial
//! statistics, i.e. a fixed scale of `1/sqrt(1 + 1e-5)` absorbed by `W0`; it is left out.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Gelu, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

/// Configuration of a [`PromptMapper`].
#[derive(Config, Debug)]
pub struct PromptMapperConfig {
    /// Width of the complementary representation `y`.
    pub d_complementary: usize,
    /// Token widths of the main encoder, one output projection each (one width for ViT/BERT).
    pub widths: Vec<usize>,
    /// Number of mapped prompt tokens produced.
    #[config(default = 1)]
    pub num_tokens: usize,
    /// Hidden width (official: 384 for a 768-wide BERT feature).
    #[config(default = 384)]
    pub d_hidden: usize,
    /// Dropout on the mapped tokens.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Maps a complementary representation to prompt tokens.
#[derive(Module, Debug)]
pub struct PromptMapper<B: Backend> {
    /// `d_complementary → d_hidden`.
    pub hidden: Linear<B>,
    /// `d_hidden → num_tokens · w`, one per width.
    pub outputs: Vec<Linear<B>>,
    activation: Gelu,
    dropout: Dropout,
    num_tokens: usize,
}

impl PromptMapperConfig {
    /// Initialises the mapper on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptMapper<B> {
        assert!(self.num_tokens > 0, "a mapper produces at least one token");
        assert!(!self.widths.is_empty(), "a mapper needs at least one output width");
        PromptMapper {
            hidden: LinearConfig::new(self.d_complementary, self.d_hidden).init(device),
            outputs: self.widths.iter().map(|&w| LinearConfig::new(self.d_hidden, self.num_tokens * w).init(device)).collect(),
            activation: Gelu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            num_tokens: self.num_tokens,
        }
    }
}

impl<B: Backend> PromptMapper<B> {
    /// Maps `y` to prompt tokens of each width, in the order of the configured widths.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`
    /// - output: one `[batch, num_tokens, w]` per width `w`
    pub fn forward(&self, complementary: Tensor<B, 2>) -> Vec<Tensor<B, 3>> {
        let [batch, d_in] = complementary.dims();
        let expected = self.hidden.weight.dims()[0];
        assert_eq!(
            d_in, expected,
            "complementary representation has width {d_in}, the mapper expects {expected}"
        );
        let h = self.activation.forward(self.hidden.forward(complementary));
        self.outputs
            .iter()
            .map(|output| {
                let m = self.dropout.forward(self.activation.forward(output.forward(h.clone())));
                m.reshape([batch as i32, self.num_tokens as i32, -1])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn maps_to_tokens_as_documented() {
        let device = Default::default();
        let mapper = PromptMapperConfig::new(12, vec![8, 16]).with_num_tokens(2).with_d_hidden(5).init::<Flex>(&device);
        let y = Tensor::<Flex, 2>::random([3, 12], Distribution::Normal(0.0, 1.0), &device);
        let out = mapper.forward(y.clone());
        assert_eq!(out.iter().map(|t| t.dims()).collect::<Vec<_>>(), [[3, 2, 8], [3, 2, 16]]);
        // No autodiff backend: dropout is off, so the formula holds exactly.
        let gelu = |t| burn::tensor::activation::gelu(t);
        let h = gelu(mapper.hidden.forward(y));
        for (i, width) in [8, 16].into_iter().enumerate() {
            let expected = gelu(mapper.outputs[i].forward(h.clone())).reshape([3, 2, width]);
            out[i].to_data().assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
        }
    }
}
