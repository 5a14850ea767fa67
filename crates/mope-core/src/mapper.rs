//! The mapper of MoPE: projects the complementary modality's representation into mapped prompt
//! tokens of the main encoder's width.
//!
//! ```text
//! h = GELU(W0 · y + b0)                       [batch, d_hidden]
//! m = Dropout(GELU(W1 · h + b1))              [batch, num_tokens · d_model] → [batch, num_tokens, d_model]
//! ```
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
    /// Width of the main encoder's tokens.
    pub d_model: usize,
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
    /// `d_hidden → num_tokens · d_model`.
    pub output: Linear<B>,
    activation: Gelu,
    dropout: Dropout,
    num_tokens: usize,
}

impl PromptMapperConfig {
    /// Initialises the mapper on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptMapper<B> {
        assert!(self.num_tokens > 0, "a mapper produces at least one token");
        PromptMapper {
            hidden: LinearConfig::new(self.d_complementary, self.d_hidden).init(device),
            output: LinearConfig::new(self.d_hidden, self.num_tokens * self.d_model).init(device),
            activation: Gelu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            num_tokens: self.num_tokens,
        }
    }
}

impl<B: Backend> PromptMapper<B> {
    /// Maps `y` to prompt tokens.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`
    /// - output: `[batch, num_tokens, d_model]`
    pub fn forward(&self, complementary: Tensor<B, 2>) -> Tensor<B, 3> {
        let [batch, d_in] = complementary.dims();
        let expected = self.hidden.weight.dims()[0];
        assert_eq!(
            d_in, expected,
            "complementary representation has width {d_in}, the mapper expects {expected}"
        );
        let h = self.activation.forward(self.hidden.forward(complementary));
        let m = self.dropout.forward(self.activation.forward(self.output.forward(h)));
        m.reshape([batch as i32, self.num_tokens as i32, -1])
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
        let mapper = PromptMapperConfig::new(12, 8).with_num_tokens(2).with_d_hidden(5).init::<Flex>(&device);
        let y = Tensor::<Flex, 2>::random([3, 12], Distribution::Normal(0.0, 1.0), &device);
        let out = mapper.forward(y.clone());
        assert_eq!(out.dims(), [3, 2, 8]);
        // No autodiff backend: dropout is off, so the formula holds exactly.
        let gelu = |t| burn::tensor::activation::gelu(t);
        let expected = gelu(mapper.output.forward(gelu(mapper.hidden.forward(y)))).reshape([3, 2, 8]);
        out.to_data().assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
    }
}
