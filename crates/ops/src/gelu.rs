//! The exact (erf-based) GELU of BERT, ViT, Swin and Whisper, `x·Φ(x)`, as a backend-extension
//! hook: burn's own GELU by default, a faster kernel where burn's is slow.
//!
//! burn's CPU backend (`flex`, 0.21) evaluates GELU one element at a time through libm's scalar
//! `erff`, on one thread: 9-12× slower than PyTorch's (docs/performance.md), and the frozen
//! encoders run it forward and backward in every layer. On `flex`, [`FastGelu`] runs a
//! branch-free form that the compiler vectorises (built for the widest SIMD the processor has,
//! by pulp's run-time dispatch: AVX2 where present), split over rayon's threads, in place when
//! nothing else holds the input:
//!
//! ```text
//! z = |x| / √2,  t = 1 / (1 + p·z),  e = exp(−z²)          (exp by range reduction + polynomial)
//! erf(z) = 1 − t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅))))·e   (Abramowitz & Stegun 7.1.26, |ε| ≤ 1.5e-7)
//! Φ(x) = ½(1 + sign(x)·erf(z)),  φ(x) = e / √(2π)
//! gelu(x) = x·Φ(x),  gelu'(x) = Φ(x) + x·φ(x)
//! ```
//!
//! The same `e` serves the erf and the density, so the backward costs one exponential too.
//! Checked against libm's erf-based GELU on a dense grid (within 4e-7·max(1, |x|)). CubeCL
//! backends keep burn's own GELU.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::ops::{ActivationOps, FloatTensor};
use burn::tensor::{DType, Tensor, backend::Backend};
use burn::backend::Flex;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::fast_math::exp_non_positive;
use crate::flex_buffer::{TASK_VALUES, contiguous, zeros_f32};
use crate::primitive::{primitive, tensor};

/// A backend with a GELU of its own choosing (burn's by default).
pub trait FastGelu: Backend {
    /// `x·Φ(x)`, element-wise.
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `grad·(Φ(x) + x·φ(x))`, element-wise.
    fn fast_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
}

/// [`FastGelu::fast_gelu`] on tensors.
///
/// # Shapes
/// - `x`: any; output the same
pub fn gelu<B: FastGelu, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::fast_gelu(primitive(x)))
}

impl FastGelu for Flex {
    fn fast_gelu(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return Flex::gelu(x);
        }
        let mut x = contiguous(x);
        if x.is_unique() {
            // Nobody else holds the input (inference): overwrite it, no new buffer.
            x.storage_mut::<f32>().par_chunks_mut(TASK_VALUES).for_each(gelu_slice_in_place);
            return x;
        }
        let mut out = zeros_f32(x.layout().shape().clone());
        let src = x.storage::<f32>();
        out.storage_mut::<f32>().par_chunks_mut(TASK_VALUES).zip(src.par_chunks(TASK_VALUES)).for_each(|(out, x)| gelu_slice(out, x));
        out
    }

    fn fast_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 || x.layout().shape() != grad.layout().shape() {
            return Flex::gelu_backward(x, grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let mut out = zeros_f32(x.layout().shape().clone());
        let (src, upstream) = (x.storage::<f32>(), grad.storage::<f32>());
        out.storage_mut::<f32>()
            .par_chunks_mut(TASK_VALUES)
            .zip(src.par_chunks(TASK_VALUES).zip(upstream.par_chunks(TASK_VALUES)))
            .for_each(|(out, (x, g))| gelu_backward_slice(out, x, g));
        out
    }
}

/// `out = gelu(x)`, compiled for the widest SIMD the processor has (pulp's run-time dispatch:
/// AVX2 where present, 8 lanes instead of SSE2's 4; no FMA contraction, so every path gives the
/// same bits).
fn gelu_slice(out: &mut [f32], x: &[f32]) {
    pulp::Arch::new().dispatch(|| gelu_slice_generic(out, x))
}

/// `x = gelu(x)`, dispatched as [`gelu_slice`].
fn gelu_slice_in_place(x: &mut [f32]) {
    pulp::Arch::new().dispatch(|| {
        for x in x.iter_mut() {
            *x *= normal_cdf_and_density(*x).0;
        }
    })
}

/// `out = grad · gelu'(x)`, dispatched as [`gelu_slice`].
fn gelu_backward_slice(out: &mut [f32], x: &[f32], grad: &[f32]) {
    pulp::Arch::new().dispatch(|| gelu_backward_slice_generic(out, x, grad))
}

/// `out = gelu(x)`.
#[inline(always)]
fn gelu_slice_generic(out: &mut [f32], x: &[f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = x * normal_cdf_and_density(x).0;
    }
}

/// `out = grad · gelu'(x)`.
#[inline(always)]
fn gelu_backward_slice_generic(out: &mut [f32], x: &[f32], grad: &[f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
        let (cdf, density) = normal_cdf_and_density(x);
        *o = g * (cdf + x * density);
    }
}

/// `(Φ(x), φ(x))` of the standard normal, branch-free (see the module docs).
#[inline(always)]
fn normal_cdf_and_density(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    // Exactly 0 below f32's smallest normal (a select: vectorises), so that x · φ(x) at x = ±∞
    // is ∞ · 0 = NaN, as burn's and PyTorch's, not ∞ · 1e-38.
    let e = if z * z > 87.0 { 0.0 } else { exp_non_positive(-z * z) };
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf = (1.0 - poly * e).copysign(x);
    (0.5 * (1.0 + erf), e * INV_SQRT_2PI)
}

/// [`FastGelu::fast_gelu`] as a node of the autodiff graph.
#[derive(Debug)]
struct GeluOp;

impl<B: FastGelu> Backward<B, 1> for GeluOp {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::fast_gelu_backward(x, grad));
    }
}

impl<B: FastGelu, C: CheckpointStrategy> FastGelu for Autodiff<B, C> {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluOp.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::fast_gelu(x.primitive.clone());
                prep.finish(x.primitive, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_gelu(x.primitive)),
        }
    }
}

#[cfg(feature = "cube")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::element::FloatElement, I: burn_cubecl::element::IntElement, BT: burn_cubecl::element::BoolElement> FastGelu
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{NON_FINITE, max_relative_error};
    use burn::tensor::{Distribution, Tolerance};

    /// Every 1e-4 from −12 to 12: x = 0, both tails, and the crossover of the exp's rounding.
    fn grid() -> Vec<f32> {
        (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect()
    }

    fn exact_gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    fn exact_gelu_grad(x: f64) -> f64 {
        0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    #[test]
    fn forward_and_backward_match_the_erf_gelu_in_f64() {
        let x = grid();
        let n = x.len();
        let device = Default::default();
        let input = Tensor::<Flex, 1>::from_floats(x.as_slice(), &device);
        let forward = gelu(input.clone()).into_data().to_vec::<f32>().unwrap();
        let ones = primitive(Tensor::<Flex, 1>::ones([n], &device));
        let backward = tensor::<Flex, 1>(Flex::fast_gelu_backward(primitive(input), ones));
        let backward = backward.into_data().to_vec::<f32>().unwrap();
        for ((&x, &y), &dy) in x.iter().zip(&forward).zip(&backward) {
            let bound = 4e-7 * f64::from(x.abs()).max(1.0);
            assert!((f64::from(y) - exact_gelu(x.into())).abs() <= bound, "gelu({x}) = {y}");
            assert!((f64::from(dy) - exact_gelu_grad(x.into())).abs() <= bound, "gelu'({x}) = {dy}");
        }
    }

    #[test]
    fn an_unshared_input_is_overwritten_with_the_same_values() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([64, 300], Distribution::Normal(0.0, 2.0), &device);
        let shared = gelu(x.clone()).into_data(); // `x` is still held: a new buffer
        let input = primitive(x);
        let address = input.storage::<f32>().as_ptr();
        let unshared = Flex::fast_gelu(input); // the last holder: in place
        assert_eq!(unshared.storage::<f32>().as_ptr(), address, "overwritten in place");
        shared.assert_eq(&tensor::<Flex, 2>(unshared).into_data(), true);
    }

    #[test]
    fn matches_burns_gelu_through_autodiff_on_strided_input() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([33, 70], Distribution::Normal(0.0, 3.0), &device);
        let upstream = Tensor::<Flex, 2>::random([70, 33], Distribution::Normal(0.0, 1.0), &device);
        let run = |fast: bool| {
            let input = Tensor::<AB, 2>::from_inner(x.clone()).require_grad();
            let transposed = input.clone().transpose(); // a strided view
            let y = if fast { gelu(transposed) } else { burn::tensor::activation::gelu(transposed) };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone())).sum().backward();
            (y.inner(), input.grad(&grads).unwrap())
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(2e-6));
        dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), Tolerance::absolute(2e-6));
    }

    /// NaN and infinities give what burn's GELU gives, forward and backward: NaN stays NaN,
    /// `gelu(∞) = ∞`, `gelu(−∞) = −∞ · 0 = NaN`, and NaN gradients at both infinities (PyTorch's
    /// erf GELU gives NaN at both infinities, forward and backward, on the CPU).
    #[test]
    fn non_finite_inputs_give_burns_values() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let x: Vec<f32> = NON_FINITE.into_iter().chain([1.5, -0.5, 0.0]).collect();
        let run = |fast: bool| {
            let input = Tensor::<AB, 1>::from_floats(x.as_slice(), &device).require_grad();
            let y = if fast { gelu(input.clone()) } else { burn::tensor::activation::gelu(input.clone()) };
            let grads = y.clone().sum().backward();
            (y.inner(), input.grad(&grads).unwrap())
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert_eq!(y.to_data().to_vec::<f32>().unwrap()[..3].iter().map(|v| v.is_nan()).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(y.to_data().to_vec::<f32>().unwrap()[1], f32::INFINITY);
        assert!(max_relative_error(y, y_ref) < 1e-6);
        assert!(max_relative_error(dx, dx_ref) < 1e-6);
    }
}
