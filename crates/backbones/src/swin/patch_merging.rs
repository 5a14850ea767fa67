//! Swin's patch merging: each 2×2 group of patches becomes one token of twice the width.
//! Prompt tokens are tiled four times along the channels so that they pass through the same
//! norm and reduction (as the official prompted Swin does).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use ops::FastLinear;

use crate::linear_layer::linear;

/// Patch merging at a fixed resolution.
#[derive(Module, Debug)]
pub struct PatchMerging<B: Backend> {
    /// Norm over the `4 · d_model` concatenation.
    pub norm: LayerNorm<B>,
    /// `4 · d_model → 2 · d_model`, no bias.
    pub reduction: Linear<B>,
    #[module(skip)]
    resolution: [usize; 2],
}

impl<B: Backend> PatchMerging<B> {
    /// A randomly initialised merging of `d_model`-wide patches at `resolution`.
    pub fn new(d_model: usize, resolution: [usize; 2], layer_norm_eps: f64, device: &B::Device) -> Self {
        assert!(
            resolution[0].is_multiple_of(2) && resolution[1].is_multiple_of(2),
            "patch merging needs an even resolution, got {resolution:?}"
        );
        Self {
            norm: LayerNormConfig::new(4 * d_model).with_epsilon(layer_norm_eps).init(device),
            reduction: LinearConfig::new(4 * d_model, 2 * d_model).with_bias(false).init(device),
            resolution,
        }
    }
}

impl<B: FastLinear> PatchMerging<B> {
    /// # Shapes
    /// - `x`: `[batch, num_prompts + H·W, d_model]`
    /// - output: `[batch, num_prompts + H·W / 4, 2 · d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, d_model] = x.dims();
        let [h, w] = self.resolution;
        let prompts_len = len - h * w;
        let grid = x.clone().narrow(1, prompts_len, h * w).reshape([batch, h / 2, 2, w / 2, 2, d_model]);
        let pick = |row: usize, col: usize| grid.clone().narrow(2, row, 1).narrow(4, col, 1).reshape([batch, h / 2, w / 2, d_model]);
        // Swin's order: (even row, even col), (odd, even), (even, odd), (odd, odd).
        let merged = Tensor::cat(vec![pick(0, 0), pick(1, 0), pick(0, 1), pick(1, 1)], 3).reshape([batch, h * w / 4, 4 * d_model]);
        let merged = if prompts_len > 0 {
            let prompts = x.narrow(1, 0, prompts_len).repeat_dim(2, 4);
            Tensor::cat(vec![prompts, merged], 1)
        } else {
            merged
        };
        linear(&self.reduction, self.norm.forward(merged))
    }
}
