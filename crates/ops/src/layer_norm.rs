//! Layer normalisation over the last axis as one node of the autodiff graph, with a hand-written
//! backward and a backend-extension hook for its input gradient.
//!
//! ```text
//! μ, σ² = mean and variance of each row of x,   r = 1/√(σ² + ε),   x̂ = (x − μ)·r
//! y     = x̂ ⊙ γ + β
//! g     = grad ⊙ γ
//! d x   = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))           (means over the row)
//! d γ   = Σ_rows grad ⊙ x̂,   d β = Σ_rows grad
//! ```
//!
//! burn 0.21's autodiff has no layer norm of its own: it runs the backend's default body, nine
//! tensor operations each recorded in the graph (on `flex` the broadcast in the backward of its
//! two means walks the tensor one element at a time), although `flex` has a fused forward. Here
//! the forward is the backend's `layer_norm` (fused on `flex`) and the backward one pass over the
//! rows on `flex` ([`FastLayerNorm::layer_norm_input_backward`]); the gradients of `γ` and `β`
//! (only when they train: fine-tuning) are composed of tensor operations.

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorMetadata, backend::Backend};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::flex_buffer::{contiguous, rows_per_task, zeros_f32};
use crate::primitive::{primitive, rows, tensor};

/// A backend with a layer-norm backward of its own choosing (burn's operations by default).
pub trait FastLayerNorm: Backend {
    /// `y = x̂ ⊙ γ + β` over the last axis (the module docs).
    ///
    /// # Shapes
    /// - `x`: `[..., d]`, `gamma` and `beta`: `[d]`; output as `x`
    fn fast_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: Option<FloatTensor<Self>>, epsilon: f64) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, beta, epsilon)
    }

    /// The gradient against `x`, `r · (g − mean(g) − x̂ · mean(g ⊙ x̂))` with `g = grad ⊙ γ`, the
    /// statistics recomputed from `x`.
    ///
    /// # Shapes
    /// - `x` and `grad`: `[..., d]`, `gamma`: `[d]`; output as `x`
    fn layer_norm_input_backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, grad: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        input_backward_reference::<Self>(x, gamma, grad, epsilon)
    }
}

/// Layer normalisation of `x` over its last axis, scaled by `gamma` and shifted by `beta`.
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma` and `beta`: `[d]`
/// - output: as `x`
pub fn layer_norm<B: FastLayerNorm, const D: usize>(x: Tensor<B, D>, gamma: Tensor<B, 1>, beta: Option<Tensor<B, 1>>, epsilon: f64) -> Tensor<B, D> {
    let [d] = gamma.dims();
    assert_eq!(x.dims()[D - 1], d, "layer norm: the last axis of x {:?} is not gamma's {d}", x.dims());
    let out = B::fast_layer_norm(primitive(x), primitive(gamma), beta.map(primitive), epsilon);
    tensor(out)
}

/// `x̂ = (x − μ)·r` and `r`, row by row.
fn normalized<B: Backend>(x: Tensor<B, 2>, epsilon: f64) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let centred = x.clone() - x.mean_dim(1);
    let inverse_std = (centred.clone() * centred.clone()).mean_dim(1).add_scalar(epsilon).sqrt().recip();
    (centred * inverse_std.clone(), inverse_std)
}

/// [`FastLayerNorm::layer_norm_input_backward`] composed of burn's operations.
pub fn input_backward_reference<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, grad: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    let shape = x.shape();
    let (x_hat, inverse_std) = normalized(rows::<B>(x), epsilon);
    let g = rows::<B>(grad) * rows::<B>(gamma);
    let dx = inverse_std * (g.clone() - g.clone().mean_dim(1) - x_hat.clone() * (g * x_hat).mean_dim(1));
    B::float_reshape(primitive(dx), shape)
}


impl FastLayerNorm for Flex {
    fn layer_norm_input_backward(x: FlexTensor, gamma: FlexTensor, grad: FlexTensor, epsilon: f64) -> FlexTensor {
        let same = x.layout().shape() == grad.layout().shape();
        if [x.dtype(), gamma.dtype(), grad.dtype()] != [DType::F32; 3] || !same {
            return input_backward_reference::<Self>(x, gamma, grad, epsilon);
        }
        let (x, gamma, grad) = (contiguous(x), contiguous(gamma), contiguous(grad));
        let shape = x.layout().shape().clone();
        let d = shape[shape.num_dims() - 1].max(1);
        let chunk = rows_per_task(d) * d;
        let mut out = zeros_f32(shape);
        let (x, gamma, grad) = (x.storage::<f32>(), gamma.storage::<f32>(), grad.storage::<f32>());
        out.storage_mut::<f32>()
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(grad.par_chunks(chunk)))
            .for_each(|(out, (x, grad))| input_backward_rows(out, x, grad, gamma, epsilon as f32));
        out
    }
}

/// [`FastLayerNorm::layer_norm_input_backward`] for rows of `gamma.len()` values, dispatched for
/// the widest SIMD; the row stays in the L1 cache over its passes.
fn input_backward_rows(out: &mut [f32], x: &[f32], grad: &[f32], gamma: &[f32], epsilon: f32) {
    pulp::Arch::new().dispatch(|| {
        let d = gamma.len();
        let n = d as f32;
        for ((out, x), grad) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(grad.chunks_exact(d)) {
            let mean = x.iter().sum::<f32>() / n;
            let variance = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inverse_std = 1.0 / (variance + epsilon).sqrt();
            let (mut sum_g, mut sum_g_x_hat) = (0.0f32, 0.0f32);
            for ((&x, &grad), &gamma) in x.iter().zip(grad).zip(gamma) {
                let g = grad * gamma;
                sum_g += g;
                sum_g_x_hat += g * (x - mean) * inverse_std;
            }
            let (mean_g, mean_g_x_hat) = (sum_g / n, sum_g_x_hat / n);
            for (((out, &x), &grad), &gamma) in out.iter_mut().zip(x).zip(grad).zip(gamma) {
                let x_hat = (x - mean) * inverse_std;
                *out = inverse_std * (grad * gamma - mean_g - x_hat * mean_g_x_hat);
            }
        }
    })
}

/// The backward's state: `x`, `gamma`, `epsilon`.
type NormState<B> = (FloatTensor<B>, FloatTensor<B>, f64);

/// [`layer_norm`] as a node of the autodiff graph, `N` = 2 (`x`, `gamma`) or 3 (and `beta`).
#[derive(Debug)]
struct LayerNormOp;

impl<B: FastLayerNorm, const N: usize> Backward<B, N> for LayerNormOp {
    type State = NormState<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, gamma, epsilon) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [x_node, gamma_node, beta_node] = [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = beta_node {
            grads.register::<B>(node.id, primitive(rows::<B>(grad.clone()).sum_dim(0).squeeze_dim::<1>(0)));
        }
        if let Some(node) = gamma_node {
            let (x_hat, _) = normalized(rows::<B>(x.clone()), epsilon);
            grads.register::<B>(node.id, primitive((rows::<B>(grad.clone()) * x_hat).sum_dim(0).squeeze_dim::<1>(0)));
        }
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::layer_norm_input_backward(x, gamma, grad, epsilon));
        }
    }
}

impl<B: FastLayerNorm, C: CheckpointStrategy> FastLayerNorm for Autodiff<B, C> {
    fn fast_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: Option<FloatTensor<Self>>, epsilon: f64) -> FloatTensor<Self> {
        fn run<B: FastLayerNorm, C: CheckpointStrategy, const N: usize>(
            kind: OpsKind<LayerNormOp, B, NormState<B>, C, N>,
            x: FloatTensor<B>,
            gamma: FloatTensor<B>,
            beta: Option<FloatTensor<B>>,
            epsilon: f64,
        ) -> FloatTensor<Autodiff<B, C>> {
            match kind {
                OpsKind::Tracked(prep) => {
                    let output = B::fast_layer_norm(x.clone(), gamma.clone(), beta, epsilon);
                    prep.finish((x, gamma, epsilon), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_layer_norm(x, gamma, beta, epsilon)),
            }
        }
        match beta {
            None => {
                let kind = Backward::<B, 2>::prepare::<C>(LayerNormOp, [x.node.clone(), gamma.node.clone()]).compute_bound().stateful();
                run(kind, x.primitive, gamma.primitive, None, epsilon)
            }
            Some(beta) => {
                let kind = Backward::<B, 3>::prepare::<C>(LayerNormOp, [x.node.clone(), gamma.node.clone(), beta.node.clone()]).compute_bound().stateful();
                run(kind, x.primitive, gamma.primitive, Some(beta.primitive), epsilon)
            }
        }
    }
}

#[cfg(feature = "cube")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::element::FloatElement, I: burn_cubecl::element::IntElement, BT: burn_cubecl::element::BoolElement> FastLayerNorm
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{NON_FINITE, has_non_finite, max_relative_error, poisoned};
    use burn::module::Param;
    use burn::nn::{LayerNorm, LayerNormConfig};
    use burn::tensor::{Distribution, TensorData};

    /// Output and gradients (x, γ, β) on `Autodiff<B>` through burn's `LayerNorm` module or through
    /// [`layer_norm`], with γ and β trained, on a strided input; back on `flex`.
    fn run<B: FastLayerNorm>(fast: bool, with_beta: bool, [x, gamma, upstream]: [&TensorData; 3], device: &B::Device) -> Vec<Tensor<Flex, 1>> {
        let x = Tensor::<Autodiff<B>, 3>::from_data(x.clone(), device);
        let [_, _, d] = x.dims();
        let mut norm: LayerNorm<Autodiff<B>> = LayerNormConfig::new(d).with_epsilon(1e-6).with_bias(with_beta).init(device);
        norm.gamma = Param::from_tensor(Tensor::from_data(gamma.clone(), device));
        let input = x.require_grad();
        let strided = input.clone().swap_dims(0, 1);
        let y = if fast { layer_norm(strided, norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()), 1e-6) } else { norm.forward(strided) };
        let grads = (y.clone() * Tensor::from_data(upstream.clone(), device)).sum().backward();
        let back = |t: TensorData| Tensor::<Flex, 1>::from_data(TensorData::new(t.to_vec::<f32>().unwrap(), [t.num_elements()]), &Default::default());
        let mut out = vec![back(y.inner().into_data()), back(input.grad(&grads).unwrap().into_data()), back(norm.gamma.grad(&grads).unwrap().into_data())];
        if let Some(beta) = &norm.beta {
            out.push(back(beta.grad(&grads).unwrap().into_data()));
        }
        out
    }

    /// Ours on `Autodiff<B>` against burn's `LayerNorm` on `Autodiff<Flex>`, three shapes, each
    /// with finite inputs and with a NaN, an infinity or a negative infinity in `x` (NaN and
    /// infinities where burn has them, its values elsewhere).
    fn assert_matches_burns_layer_norm<B: FastLayerNorm>(device: &B::Device) {
        let flex = Default::default();
        let poisons = [None].into_iter().chain(NON_FINITE.map(Some));
        for ((shape, with_beta), poison) in [([4, 3, 24], true), ([2, 5, 37], false), ([1, 1, 8], true)].into_iter().flat_map(|c| poisons.clone().map(move |p| (c, p))) {
            let x = Tensor::<Flex, 3>::random(shape, Distribution::Normal(1.0, 2.0), &flex);
            let x = match poison {
                Some(value) => poisoned(&x, &[(5, value)]),
                None => x,
            }
            .into_data();
            let upstream = Tensor::<Flex, 3>::random([shape[1], shape[0], shape[2]], Distribution::Normal(0.0, 1.0), &flex).into_data();
            let gamma = Tensor::<Flex, 1>::random([shape[2]], Distribution::Normal(1.0, 0.5), &flex).into_data();
            let inputs = [&x, &gamma, &upstream];
            let (ours, burns) = (run::<B>(true, with_beta, inputs, device), run::<Flex>(false, with_beta, inputs, &flex));
            assert_eq!(poison.is_some(), has_non_finite(&ours[0]), "{shape:?}: a {poison:?} in x reaches the output");
            for (name, (a, b)) in ["output", "d x", "d gamma", "d beta"].iter().zip(ours.into_iter().zip(burns)) {
                let error = max_relative_error(a, b);
                assert!(error < 1e-4, "{shape:?}, beta {with_beta}, {poison:?} in x: {name} off by {error:e}");
            }
        }
    }

    #[test]
    fn forward_and_gradients_match_burns_layer_norm() {
        assert_matches_burns_layer_norm::<Flex>(&Default::default());
    }

    crate::test_support::gpu_backend_tests!(assert_matches_burns_layer_norm);

    #[test]
    fn the_flex_backward_matches_the_reference() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([70, 50], Distribution::Normal(-1.0, 3.0), &device);
        let gamma = Tensor::<Flex, 1>::random([50], Distribution::Normal(1.0, 0.5), &device);
        let grad = Tensor::<Flex, 2>::random([70, 50], Distribution::Normal(0.0, 1.0), &device);
        let fast = Flex::layer_norm_input_backward(primitive(x.clone()), primitive(gamma.clone()), primitive(grad.clone()), 1e-5);
        let reference = input_backward_reference::<Flex>(primitive(x), primitive(gamma), primitive(grad), 1e-5);
        let as_tensor = tensor::<Flex, 2>;
        assert!(max_relative_error(as_tensor(fast), as_tensor(reference)) < 1e-5);
    }

    #[test]
    #[should_panic(expected = "layer norm: the last axis of x [2, 3] is not gamma's 4")]
    fn gamma_must_match_the_last_axis() {
        let device = Default::default();
        layer_norm(Tensor::<Flex, 2>::zeros([2, 3], &device), Tensor::zeros([4], &device), None, 1e-5);
    }
}
