//! The mean of each sample's real tokens, padding left out: sentence-transformers' pooling, and
//! what MoPE's routers read of the main encoder's hidden state.

use burn::tensor::{Bool, Tensor, backend::Backend};

/// Mean over the non-padding tokens, as a product with each sample's averaging weights (`1 / n`
/// on its `n` real tokens): its backward is one more product, where burn's `mean_dim` fills a
/// tensor of ones and multiplies it by the broadcast gradient element by element (`flex`).
///
/// # Shapes
/// - `hidden`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`; output `[batch, d_model]`
pub fn masked_mean<B: Backend>(hidden: Tensor<B, 3>, mask_pad: Option<&Tensor<B, 2, Bool>>) -> Tensor<B, 2> {
    let [_, seq_len, _] = hidden.dims();
    let weights = match mask_pad {
        None => Tensor::<B, 3>::full([1, 1, seq_len], 1.0 / seq_len.max(1) as f64, &hidden.device()),
        Some(mask) => {
            let keep = mask.clone().bool_not().float().unsqueeze_dim::<3>(1); // [batch, 1, seq_len]
            let count = keep.clone().sum_dim(2).clamp_min(1.0); // [batch, 1, 1]
            keep / count
        }
    };
    weights.matmul(hidden).squeeze_dim(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    type B = Flex;

    #[test]
    fn masked_mean_ignores_padding() {
        let device = Default::default();
        let hidden = Tensor::<B, 3>::from_floats([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], &device);
        let mask = Tensor::<B, 2, Bool>::from_bool([[false, false, true]].into(), &device);
        let mean = masked_mean(hidden.clone(), Some(&mask));
        mean.to_data().assert_approx_eq::<f32>(&Tensor::<B, 2>::from_floats([[2.0, 3.0]], &device).to_data(), Tolerance::default());
        let mean = masked_mean(hidden, None);
        mean.to_data().assert_approx_eq::<f32>(&Tensor::<B, 2>::from_floats([[104.0 / 3.0, 106.0 / 3.0]], &device).to_data(), Tolerance::default());
    }

    /// The gradient of the mean is `1 / n` on each of a sample's `n` real tokens, 0 on padding.
    #[test]
    fn masked_mean_gradient_spreads_evenly_over_real_tokens() {
        type AB = burn::backend::Autodiff<B>;
        let device = Default::default();
        let hidden = Tensor::<AB, 3>::random([2, 4, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let mask = Tensor::<AB, 2, Bool>::from_bool([[false, true, false, false], [false; 4]].into(), &device);
        for (mask, expected) in [(None, [[0.25; 4], [0.25; 4]]), (Some(&mask), [[1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0], [0.25; 4]])] {
            let grads = masked_mean(hidden.clone(), mask).sum().backward();
            let expected = Tensor::<B, 2>::from_floats(expected, &device).unsqueeze_dim::<3>(2).repeat_dim(2, 3);
            hidden.grad(&grads).unwrap().to_data().assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
        }
    }

    /// NaN and infinities give what the mean over the real tokens written out gives (PyTorch's
    /// sentence-transformers pooling, `Σ hidden · keep / n`): a padding token's NaN or infinity
    /// reaches its sample's mean through `0 · NaN`, as there; the other samples stay finite.
    #[test]
    fn non_finite_values_give_the_written_out_means() {
        type AB = burn::backend::Autodiff<B>;
        let device = Default::default();
        let mask = Tensor::<AB, 2, Bool>::from_bool([[false, true, false, false], [false; 4], [false, false, true, true]].into(), &device);
        let clean = Tensor::<B, 3>::random([3, 4, 2], Distribution::Normal(0.0, 1.0), &device);
        // Sample 0: a NaN in a padding token; sample 1: an infinity in a real one; sample 2 clean.
        let hidden = crate::test_support::poisoned(&clean, &[(2, f32::NAN), (8, f32::INFINITY)]);
        let run = |written_out: bool| {
            let h = Tensor::<AB, 3>::from_inner(hidden.clone()).require_grad();
            let mean = if written_out {
                let keep = mask.clone().bool_not().float().unsqueeze_dim::<3>(2);
                (h.clone() * keep.clone()).sum_dim(1).squeeze_dim::<2>(1) / keep.sum_dim(1).squeeze_dim::<2>(1)
            } else {
                masked_mean(h.clone(), Some(&mask))
            };
            let grads = mean.clone().sum().backward();
            (mean.inner(), h.grad(&grads).unwrap())
        };
        let ((mean, grad), (mean_ref, grad_ref)) = (run(false), run(true));
        let values = mean.to_data().to_vec::<f32>().unwrap();
        assert!(values[0].is_nan() && values[2] == f32::INFINITY && values[4..].iter().all(|v| v.is_finite()), "{values:?}");
        assert!(crate::test_support::max_relative_error(mean, mean_ref) < 1e-6);
        assert!(crate::test_support::max_relative_error(grad, grad_ref) < 1e-6);
    }
}
