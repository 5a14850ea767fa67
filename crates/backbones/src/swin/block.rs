//! One Swin block: (shifted) window attention and a GELU feed-forward, pre-norm, with prompt
//! tokens kept at the front of the sequence and shared by all windows of their sample.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use super::window_attention::WindowAttention;
use ops::{FastGelu, FastLinear, gelu};
use crate::linear_layer::linear;

/// How a sample's prompt tokens are laid out across attention windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PromptLayout {
    /// Every window of a sample sees that sample's prompts (correct; the default).
    #[default]
    PerSample,
    /// The official MoPE/VPT code's layout: prompts tiled window-major while windows are
    /// batch-major, so with a batch of several samples most windows see another sample's prompts.
    /// For comparison with the original results only.
    OfficialWindowMajor,
}

/// A Swin block at a fixed resolution.
#[derive(Module, Debug)]
pub struct SwinBlock<B: Backend> {
    /// Norm before attention.
    pub layernorm_before: LayerNorm<B>,
    /// Window attention.
    pub attention: WindowAttention<B>,
    /// Norm before the feed-forward.
    pub layernorm_after: LayerNorm<B>,
    /// Feed-forward input projection.
    pub ffn_in: Linear<B>,
    /// Feed-forward output projection.
    pub ffn_out: Linear<B>,
    /// Shift mask of the shifted windows `[windows, window², window²]` (a constant, built once);
    /// `None` for unshifted blocks.
    shift_mask: Option<Tensor<B, 3>>,
    #[module(skip)]
    resolution: [usize; 2],
    #[module(skip)]
    window: usize,
    #[module(skip)]
    shift: usize,
    #[module(skip)]
    layout: PromptLayout,
}

/// `torch.roll` along `dim`: `out[i] = x[(i − shift) mod n]`.
fn roll<B: Backend, const D: usize>(x: Tensor<B, D>, shift: i64, dim: usize) -> Tensor<B, D> {
    let n = x.dims()[dim] as i64;
    let s = shift.rem_euclid(n) as usize;
    if s == 0 {
        return x;
    }
    let n = n as usize;
    Tensor::cat(vec![x.clone().narrow(dim, n - s, s), x.narrow(dim, 0, n - s)], dim)
}

/// The shift mask of shifted windows: 0 within a region, −100 across regions (as Swin).
///
/// # Shapes
/// - output: `[windows, window², window²]` as row-major values
fn shift_mask(resolution: [usize; 2], window: usize, shift: usize) -> (Vec<f32>, [usize; 3]) {
    let [h, w] = resolution;
    let region = |i: usize, size: usize| if i < size - window { 0 } else if i < size - shift { 1 } else { 2 };
    let label = |y: usize, x: usize| region(y, h) * 3 + region(x, w);
    let (nh, nw, n) = (h / window, w / window, window * window);
    let mut mask = vec![0f32; nh * nw * n * n];
    for wy in 0..nh {
        for wx in 0..nw {
            let labels: Vec<usize> = (0..n).map(|i| label(wy * window + i / window, wx * window + i % window)).collect();
            let base = (wy * nw + wx) * n * n;
            for i in 0..n {
                for j in 0..n {
                    if labels[i] != labels[j] {
                        mask[base + i * n + j] = -100.0;
                    }
                }
            }
        }
    }
    (mask, [nh * nw, n, n])
}

impl<B: Backend> SwinBlock<B> {
    /// A randomly initialised block. Windows shrink to the resolution, and shifting is off,
    /// when the resolution is not larger than the window (as Swin).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d_model: usize,
        n_heads: usize,
        d_ff: usize,
        resolution: [usize; 2],
        window: usize,
        shifted: bool,
        layer_norm_eps: f64,
        layout: PromptLayout,
        device: &B::Device,
    ) -> Self {
        let smallest = resolution[0].min(resolution[1]);
        let (window, shift) = if smallest <= window { (smallest, 0) } else { (window, if shifted { window / 2 } else { 0 }) };
        assert!(
            resolution[0].is_multiple_of(window) && resolution[1].is_multiple_of(window),
            "resolution {resolution:?} is not a multiple of the window {window}"
        );
        let norm = || LayerNormConfig::new(d_model).with_epsilon(layer_norm_eps).init(device);
        Self {
            layernorm_before: norm(),
            attention: WindowAttention::new(d_model, n_heads, window, device),
            layernorm_after: norm(),
            ffn_in: LinearConfig::new(d_model, d_ff).init(device),
            ffn_out: LinearConfig::new(d_ff, d_model).init(device),
            shift_mask: (shift > 0).then(|| {
                let (values, shape) = shift_mask(resolution, window, shift);
                Tensor::from_data(TensorData::new(values, shape), device)
            }),
            resolution,
            window,
            shift,
            layout,
        }
    }
}

impl<B: FastGelu + FastLinear> SwinBlock<B> {
    /// Runs the block. The tokens after the first `seq_len − H·W` (the prompts) are the
    /// `H × W` patches in row-major order.
    ///
    /// # Shapes
    /// - `x`: `[batch, num_prompts + H·W, d_model]`; output the same
    ///
    /// # Panics
    /// If the sequence holds fewer tokens than patches.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, d_model] = x.dims();
        let [h, w] = self.resolution;
        assert!(len >= h * w, "a {h}x{w} Swin block got {len} tokens");
        let prompts_len = len - h * w;
        let (ws, shift) = (self.window, self.shift as i64);
        let per_sample = (h / ws) * (w / ws);

        let shortcut = x.clone();
        let x = self.layernorm_before.forward(x);
        let mut patches = x.clone().narrow(1, prompts_len, h * w).reshape([batch, h, w, d_model]);
        if shift > 0 {
            patches = roll(roll(patches, -shift, 1), -shift, 2);
        }
        // Windows, batch-major: [batch · per_sample, ws², d_model].
        let windows = patches
            .reshape([batch, h / ws, ws, w / ws, ws, d_model])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([batch * per_sample, ws * ws, d_model]);
        let sequence = if prompts_len > 0 {
            let prompts = x.narrow(1, 0, prompts_len);
            let tiled = match self.layout {
                PromptLayout::PerSample => prompts.unsqueeze_dim::<4>(1).expand([batch, per_sample, prompts_len, d_model]),
                PromptLayout::OfficialWindowMajor => prompts.unsqueeze_dim::<4>(0).expand([per_sample, batch, prompts_len, d_model]),
            };
            Tensor::cat(vec![tiled.reshape([batch * per_sample, prompts_len, d_model]), windows], 1)
        } else {
            windows
        };
        let out = self.attention.forward(sequence, self.shift_mask.clone(), prompts_len);

        let mut patches = out
            .clone()
            .narrow(1, prompts_len, ws * ws)
            .reshape([batch, h / ws, w / ws, ws, ws, d_model])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([batch, h, w, d_model]);
        if shift > 0 {
            patches = roll(roll(patches, shift, 1), shift, 2);
        }
        let patches = patches.reshape([batch, h * w, d_model]);
        let attended = if prompts_len > 0 {
            let prompt_out = out.narrow(1, 0, prompts_len);
            // A prompt's output is the mean over the windows that carried it.
            let prompt_out = match self.layout {
                PromptLayout::PerSample => prompt_out.reshape([batch, per_sample, prompts_len, d_model]).mean_dim(1),
                PromptLayout::OfficialWindowMajor => prompt_out.reshape([per_sample, batch, prompts_len, d_model]).mean_dim(0),
            }
            .reshape([batch, prompts_len, d_model]);
            Tensor::cat(vec![prompt_out, patches], 1)
        } else {
            patches
        };
        let x = shortcut + attended;
        let hidden = gelu(linear(&self.ffn_in, self.layernorm_after.forward(x.clone())));
        x + linear(&self.ffn_out, hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_follows_torch() {
        let x = Tensor::<burn::backend::Flex, 1>::from_floats([0.0, 1.0, 2.0, 3.0], &Default::default());
        let rolled: Vec<f32> = roll(x.clone(), -1, 0).to_data().to_vec().unwrap();
        assert_eq!(rolled, [1.0, 2.0, 3.0, 0.0]);
        let rolled: Vec<f32> = roll(x, 1, 0).to_data().to_vec().unwrap();
        assert_eq!(rolled, [3.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn shift_mask_separates_regions() {
        // 4×4 resolution, window 2, shift 1: the last window mixes three regions.
        let (mask, shape) = shift_mask([4, 4], 2, 1);
        assert_eq!(shape, [4, 4, 4]);
        assert!(mask[..16].iter().all(|&v| v == 0.0), "the first window lies in one region");
        let last = &mask[3 * 16..];
        // Tokens (0,0) and (1,1) of the last window are in different regions.
        assert_eq!(last[3], -100.0);
        assert_eq!(last[0], 0.0);
    }
}
