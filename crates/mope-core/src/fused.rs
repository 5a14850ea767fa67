//! The routing hot path as one operation with a backend-extension hook: the softmax over
//! experts fused with the weighted mixture of expert prompts,
//! `out[b] = Σ_e softmax(logits[b])[e] · experts[e]`.
//!
//! [`FusedRouting`] is implemented by a backend that has a fused kernel for it; the default body
//! is the composed-tensor reference (softmax, then one matmul), which every backend can run.
//! Under autodiff the operation has a hand-written backward (so a backend's fused forward is
//! differentiable without its own backward):
//!
//! ```text
//! d experts = wᵀ · g                       g: [batch, len·width], w: softmax weights [batch, experts]
//! d logits  = w ⊙ (g·expertsᵀ − Σ_e w ⊙ g·expertsᵀ)
//! ```
//!
//! With the `wgpu` or `cuda` feature, CubeCL backends run it as one kernel (`fused_cube`), checked
//! against the reference on lavapipe: `cargo test -p mope-core --features wgpu --lib fused`
//! (Debian: `mesa-vulkan-drivers`). Not yet wired into [`crate::PromptExperts`]: that needs this
//! bound on every model type.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive, backend::Backend};

/// A backend that can run the fused softmax-mixture of expert prompts.
pub trait FusedRouting: Backend {
    /// `out[b] = Σ_e softmax(logits[b])[e] · experts[e]`.
    ///
    /// # Shapes
    /// - `logits`: `[batch, experts]`, `experts`: `[experts, len, width]`
    /// - output: `[batch, len, width]`
    fn softmax_mix(logits: FloatTensor<Self>, experts: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_mix_reference::<Self>(logits, experts)
    }
}

/// The composed-tensor reference of [`FusedRouting::softmax_mix`]: a softmax, then one matmul.
pub fn softmax_mix_reference<B: Backend>(logits: FloatTensor<B>, experts: FloatTensor<B>) -> FloatTensor<B> {
    let [batch, num_experts] = dims2(&logits.shape());
    let [e, len, width] = dims3(&experts.shape());
    assert_eq!(e, num_experts, "{num_experts} routing logits per row for {e} experts");
    let weights = B::softmax(logits, 1);
    let flat = B::float_reshape(experts, Shape::new([e, len * width]));
    B::float_reshape(B::float_matmul(weights, flat), Shape::new([batch, len, width]))
}

fn dims2(shape: &Shape) -> [usize; 2] {
    [shape[0], shape[1]]
}

fn dims3(shape: &Shape) -> [usize; 3] {
    [shape[0], shape[1], shape[2]]
}

impl FusedRouting for burn::backend::Flex {}

impl<B: FusedRouting, C: CheckpointStrategy> FusedRouting for Autodiff<B, C> {
    fn softmax_mix(logits: FloatTensor<Self>, experts: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxMix;

        impl<B: Backend> Backward<B, 2> for SoftmaxMix {
            /// The softmax weights `[batch, experts]` and the experts `[experts, len, width]`.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (weights, experts) = ops.state;
                let [batch, num_experts] = dims2(&weights.shape());
                let [_, len, width] = dims3(&experts.shape());
                let flat = B::float_reshape(experts, Shape::new([num_experts, len * width]));
                let weights_for_experts = weights.clone();
                binary::<B, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |grad| {
                        let grad = B::float_reshape(grad, Shape::new([batch, len * width]));
                        let grad_weights = B::float_matmul(grad, B::float_transpose(flat)); // [batch, experts]
                        let weighted = B::float_sum_dim(B::float_mul(grad_weights.clone(), weights.clone()), 1);
                        B::float_mul(weights, B::float_sub(grad_weights, weighted))
                    },
                    |grad| {
                        let grad = B::float_reshape(grad, Shape::new([batch, len * width]));
                        B::float_reshape(B::float_matmul(B::float_transpose(weights_for_experts), grad), Shape::new([num_experts, len, width]))
                    },
                );
            }
        }

        match SoftmaxMix.prepare::<C>([logits.node.clone(), experts.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let weights = B::softmax(logits.primitive.clone(), 1);
                let output = B::softmax_mix(logits.primitive, experts.primitive.clone());
                prep.finish((weights, experts.primitive), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_mix(logits.primitive, experts.primitive)),
        }
    }
}

/// [`FusedRouting::softmax_mix`] on tensors.
///
/// # Shapes
/// - `logits`: `[batch, experts]`, `experts`: `[experts, len, width]`
/// - output: `[batch, len, width]`
pub fn softmax_mix<B: FusedRouting>(logits: Tensor<B, 2>, experts: Tensor<B, 3>) -> Tensor<B, 3> {
    Tensor::from_primitive(TensorPrimitive::Float(B::softmax_mix(logits.into_primitive().tensor(), experts.into_primitive().tensor())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    type AB = Autodiff<Flex>;

    /// `max |a − b| / max |b|`: the error relative to the tensor's scale (an element-wise ratio
    /// would blow up on entries that are themselves near zero).
    fn max_relative_error<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        let (a, b) = (a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, y| m.max(y.abs()));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    #[test]
    fn forward_and_gradients_match_the_composed_reference() {
        let device = Default::default();
        for (batch, experts, len, width) in [(3, 4, 2, 5), (8, 16, 6, 24)] {
            let logits = Tensor::<Flex, 2>::random([batch, experts], Distribution::Normal(0.0, 2.0), &device);
            let prompts = Tensor::<Flex, 3>::random([experts, len, width], Distribution::Normal(0.0, 1.0), &device);
            let upstream = Tensor::<Flex, 3>::random([batch, len, width], Distribution::Normal(0.0, 1.0), &device);

            let run = |fused: bool| {
                let l = Tensor::<AB, 2>::from_inner(logits.clone()).require_grad();
                let p = Tensor::<AB, 3>::from_inner(prompts.clone()).require_grad();
                let out = if fused {
                    softmax_mix(l.clone(), p.clone())
                } else {
                    softmax(l.clone(), 1).matmul(p.clone().reshape([experts, len * width])).reshape([batch, len, width])
                };
                let grads = (out.clone() * Tensor::from_inner(upstream.clone())).sum().backward();
                (out.inner(), l.grad(&grads).unwrap(), p.grad(&grads).unwrap())
            };
            let (out, d_logits, d_prompts) = run(true);
            let (out_ref, d_logits_ref, d_prompts_ref) = run(false);
            assert!(max_relative_error(out, out_ref) < 1e-4);
            assert!(max_relative_error(d_logits, d_logits_ref) < 1e-4);
            assert!(max_relative_error(d_prompts, d_prompts_ref) < 1e-4);
        }
    }

    /// The CubeCL kernel on wgpu (lavapipe on a CPU-only machine) against the composed
    /// reference on `flex`: forward and gradients, fresh random inputs.
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_wgpu_kernel_matches_the_reference() {
        use burn::backend::Wgpu;
        type G = Autodiff<Wgpu>;
        let device = Default::default();
        let gpu = Default::default();
        for (batch, experts, len, width) in [(3, 4, 2, 5), (32, 8, 6, 96)] {
            let logits = Tensor::<Flex, 2>::random([batch, experts], Distribution::Normal(0.0, 2.0), &device);
            let prompts = Tensor::<Flex, 3>::random([experts, len, width], Distribution::Normal(0.0, 1.0), &device);
            let upstream = Tensor::<Flex, 3>::random([batch, len, width], Distribution::Normal(0.0, 1.0), &device);
            let l = Tensor::<G, 2>::from_data(logits.to_data(), &gpu).require_grad();
            let p = Tensor::<G, 3>::from_data(prompts.to_data(), &gpu).require_grad();
            let out = softmax_mix(l.clone(), p.clone());
            let grads = (out.clone() * Tensor::<G, 3>::from_data(upstream.to_data(), &gpu)).sum().backward();
            let got = (
                Tensor::<Flex, 3>::from_data(out.into_data(), &device),
                Tensor::<Flex, 2>::from_data(l.grad(&grads).unwrap().into_data(), &device),
                Tensor::<Flex, 3>::from_data(p.grad(&grads).unwrap().into_data(), &device),
            );
            let l = Tensor::<AB, 2>::from_inner(logits).require_grad();
            let p = Tensor::<AB, 3>::from_inner(prompts).require_grad();
            let reference = softmax(l.clone(), 1).matmul(p.clone().reshape([experts, len * width])).reshape([batch, len, width]);
            let grads = (reference.clone() * Tensor::from_inner(upstream)).sum().backward();
            assert!(max_relative_error(got.0, reference.inner()) < 1e-4);
            assert!(max_relative_error(got.1, l.grad(&grads).unwrap()) < 1e-4);
            assert!(max_relative_error(got.2, p.grad(&grads).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn untracked_inputs_take_the_plain_forward() {
        let device = Default::default();
        let logits = Tensor::<AB, 2>::random([2, 3], Distribution::Default, &device);
        let prompts = Tensor::<AB, 3>::random([3, 2, 4], Distribution::Default, &device);
        let out = softmax_mix(logits.clone(), prompts.clone());
        let reference = softmax(logits, 1).matmul(prompts.reshape([3, 8])).reshape([2, 2, 4]);
        assert!(max_relative_error(out.inner(), reference.inner()) < 1e-5);
    }
}
