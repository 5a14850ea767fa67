//! Expert-specific prompt tokens (EPTs): the learned prompts of one expert, one set per prompted
//! layer, VPT-deep style (each replaces the previous layer's prompt outputs).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, backend::Backend};

/// The EPTs of one expert.
#[derive(Module, Debug)]
pub struct ExpertPromptTokens<B: Backend> {
    /// One `[prompt_len, width]` set per prompted layer, bottom to top.
    pub steps: Vec<Param<Tensor<B, 2>>>,
}

impl<B: Backend> ExpertPromptTokens<B> {
    /// `prompt_len` tokens for each width in `widths` (one per prompted layer), drawn uniformly
    /// from `[-range, range]`.
    pub fn init(widths: &[usize], prompt_len: usize, range: f64, device: &B::Device) -> Self {
        let init = Initializer::Uniform { min: -range, max: range };
        Self { steps: widths.iter().map(|&w| init.init([prompt_len, w], device)).collect() }
    }

    /// The tokens of prompted layer `step`.
    ///
    /// # Shapes
    /// - output `[prompt_len, width]`
    pub fn at(&self, step: usize) -> Tensor<B, 2> {
        self.steps[step].val()
    }
}
