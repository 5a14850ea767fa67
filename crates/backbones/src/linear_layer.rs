//! A linear layer's forward for the frozen encoders: burn's [`Linear`] parameters (names,
//! initialisation and checkpoints unchanged) run through [`ops::linear()`], one operation with
//! a hand-written backward. On `flex` that is one product over every sample's rows, in row blocks
//! over the threads, with the bias accumulated in place; burn 0.21's own `Linear::forward` copied
//! the transposed weight in every backward, and allocated each product's output twice.

use burn::nn::Linear;
use burn::tensor::Tensor;
use ops::FastLinear;

/// `x · weight + bias` for burn's [`Linear`] `layer`.
///
/// # Shapes
/// - `x`: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn linear<B: FastLinear, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    ops::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type AB = Autodiff<Flex>;

    fn assert_close(a: TensorData, b: TensorData) {
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(1e-5));
    }

    /// Output and the gradients of the input, the weight and the bias equal burn's `Linear`'s,
    /// with and without a bias; and a 2-D input.
    #[test]
    fn values_and_gradients_are_burns() {
        let device = Default::default();
        for bias in [true, false] {
            let layer = LinearConfig::new(6, 5).with_bias(bias).init::<AB>(&device);
            let x = Tensor::<AB, 3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let upstream = Tensor::<AB, 3>::random([2, 4, 5], Distribution::Normal(0.0, 1.0), &device);
            let (ours, burns) = (linear(&layer, x.clone()), layer.forward(x.clone()));
            assert_close(ours.to_data(), burns.to_data());
            let ours = (ours * upstream.clone()).sum().backward();
            let burns = (burns * upstream).sum().backward();
            assert_close(x.grad(&ours).unwrap().to_data(), x.grad(&burns).unwrap().to_data());
            let weight_grad = layer.weight.grad(&ours).unwrap();
            assert_eq!(weight_grad.dims(), [6, 5]);
            assert_close(weight_grad.to_data(), layer.weight.grad(&burns).unwrap().to_data());
            if let Some(b) = &layer.bias {
                assert_close(b.grad(&ours).unwrap().to_data(), b.grad(&burns).unwrap().to_data());
            }
        }
        let layer = LinearConfig::new(3, 2).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::random([4, 3], Distribution::Default, &device);
        assert_close(linear(&layer, x.clone()).to_data(), layer.forward(x).to_data());
    }
}
