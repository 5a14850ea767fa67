//! Window self-attention of Swin with a learned relative position bias, and with optional prompt
//! tokens that every window of a sample attends to and that attend to every token of the window.
//!
//! Prompts follow VPT's prompted Swin: each window's sequence is `[prompts ; window tokens]`; the
//! relative position bias and the shift mask are zero for prompt rows and columns; a prompt's
//! output is the mean of its outputs over the windows of its sample.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, TensorData, activation::softmax, backend::Backend};
use ops::FastLinear;

use crate::linear_layer::linear;

/// Multi-head self-attention inside windows of `window × window` tokens.
#[derive(Module, Debug)]
pub struct WindowAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Output projection.
    pub output: Linear<B>,
    /// Relative position bias table `[(2·window − 1)², n_heads]`.
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    /// Row of the bias table for each pair of positions of a window `[window⁴]` (a constant,
    /// built once).
    relative_index: Tensor<B, 1, Int>,
    #[module(skip)]
    n_heads: usize,
    #[module(skip)]
    window: usize,
}

/// For each pair of positions in a window, the row of the bias table (Swin's relative index).
pub fn relative_position_index(window: usize) -> Vec<i64> {
    let n = window * window;
    let side = 2 * window as i64 - 1;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dy = (i / window) as i64 - (j / window) as i64 + window as i64 - 1;
            let dx = (i % window) as i64 - (j % window) as i64 + window as i64 - 1;
            index.push(dy * side + dx);
        }
    }
    index
}

impl<B: Backend> WindowAttention<B> {
    /// A randomly initialised attention of width `d_model`.
    pub fn new(d_model: usize, n_heads: usize, window: usize, device: &B::Device) -> Self {
        let linear = || LinearConfig::new(d_model, d_model).init(device);
        let side = 2 * window - 1;
        let n = window * window;
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            relative_position_bias_table: Initializer::Normal { mean: 0.0, std: 0.02 }.init([side * side, n_heads], device),
            relative_index: Tensor::from_data(TensorData::new(relative_position_index(window), [n * n]), device),
            n_heads,
            window,
        }
    }

    /// The relative position bias of one window, `[n_heads, N, N]` with `N = window²`.
    fn bias(&self) -> Tensor<B, 3> {
        let n = self.window * self.window;
        self.relative_position_bias_table.val().select(0, self.relative_index.clone()).reshape([n, n, self.n_heads]).permute([2, 0, 1])
    }
}

impl<B: FastLinear> WindowAttention<B> {
    /// Attention over windows, each preceded by its sample's `num_prompts` prompt tokens.
    ///
    /// # Shapes
    /// - `x`: `[windows, num_prompts + window², d_model]` (windows of all samples)
    /// - `mask`: `[windows_per_sample, window², window²]`, 0 or a large negative value (shifted windows)
    /// - output: as `x`
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 3>>, num_prompts: usize) -> Tensor<B, 3> {
        let [windows, len, d_model] = x.dims();
        let heads = self.n_heads;
        let d_head = d_model / heads;
        let split = |t: Tensor<B, 3>| t.reshape([windows, len, heads, d_head]).swap_dims(1, 2); // [w, h, len, d]
        let q = split(linear(&self.query, x.clone())) / (d_head as f64).sqrt();
        let k = split(linear(&self.key, x.clone()));
        let v = split(linear(&self.value, x));
        let mut scores = q.matmul(k.swap_dims(2, 3)); // [w, h, len, len]
        let n = self.window * self.window;
        // Bias and mask apply to window tokens only; prompt rows and columns get zero.
        let pad = |t: Tensor<B, 3>| -> Tensor<B, 3> {
            if num_prompts == 0 {
                return t;
            }
            let [a, _, _] = t.dims();
            let device = t.device();
            let top = Tensor::zeros([a, num_prompts, n], &device);
            let t = Tensor::cat(vec![top, t], 1); // [a, len, n]
            Tensor::cat(vec![Tensor::zeros([a, len, num_prompts], &device), t], 2) // [a, len, len]
        };
        scores = scores + pad(self.bias()).unsqueeze_dim::<4>(0);
        if let Some(mask) = mask {
            let mask = pad(mask); // [nW, len, len]
            let [per_sample, _, _] = mask.dims();
            scores = (scores.reshape([windows / per_sample, per_sample, heads, len, len]) + mask.unsqueeze_dim::<4>(1).unsqueeze_dim::<5>(0))
                .reshape([windows, heads, len, len]);
        }
        let context = softmax(scores, 3).matmul(v); // [w, h, len, d]
        linear(&self.output, context.swap_dims(1, 2).reshape([windows, len, d_model]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_is_swin_s() {
        let index = relative_position_index(2);
        // Window 2: offsets in -1..=1 per axis, table side 3; (0,0) vs itself is the centre, 4.
        assert_eq!(index.len(), 16);
        assert_eq!(index[0], 4);
        assert_eq!(index[1], 3); // same row, one column to the right: dx = -1
        assert_eq!(index[2], 1); // one row down: dy = -1
        assert_eq!(index[3], 0);
        assert!(index.iter().all(|&i| (0..9).contains(&i)));
    }
}
