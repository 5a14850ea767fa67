//! A `Linear` over every token of a batch as one matrix product.
//!
//! burn 0.21 runs `Linear` on a `[batch, len, d_in]` input as a batched product with the weight
//! broadcast over the batch: one product per sample, each packing the weight again, and its
//! input-gradient reshapes the transposed weight, which copies it into a new buffer on every
//! backward pass. Flattened to `[batch · len, d_in]` first, it is one product, and the backward
//! reads the transposed weight through its strides. The encoders' projections and feed-forward
//! blocks go through [`forward_flat`].

use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

/// `linear` applied to every token of `x`.
///
/// # Shapes
/// - `x`: `[batch, len, d_in]`
/// - output: `[batch, len, d_out]`
pub fn forward_flat<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, len, d_in] = x.dims();
    let out = linear.forward(x.reshape([batch * len, d_in]));
    let d_out = out.dims()[1];
    out.reshape([batch, len, d_out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    /// The same output and input gradient as burn's batched form.
    #[test]
    fn matches_the_batched_linear_forward_and_backward() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let linear = LinearConfig::new(6, 5).init::<AB>(&device);
        let x = Tensor::<Flex, 3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let upstream = Tensor::<Flex, 3>::random([3, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let run = |flat: bool| {
            let x = Tensor::<AB, 3>::from_inner(x.clone()).require_grad();
            let y = if flat { forward_flat(&linear, x.clone()) } else { linear.forward(x.clone()) };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone())).sum().backward();
            (y.inner(), x.grad(&grads).unwrap())
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(1e-5));
        dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), Tolerance::absolute(1e-5));
    }
}
