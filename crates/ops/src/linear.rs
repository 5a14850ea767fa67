//! The encoders' linear layers, `y = x · W + b` over the last axis, as one node of the autodiff
//! graph, with a hand-written backward and a backend-extension hook for the product.
//!
//! ```text
//! y   = x · W + b          x: [..., d_in], W: [d_in, d_out], b: [d_out]
//! d x = grad · Wᵀ          (the same hook, on W's transposed view)
//! d W = xᵀ · grad,   d b = Σ_rows grad        (only when they train: fine-tuning)
//! ```
//!
//! On burn's CPU backend (`flex`, 0.21) a linear layer was a batched matmul and a bias add, and
//! its backward another matmul: each matmul's output is allocated zeroed and then copied once
//! more to align it (`FlexTensor::empty`), on one thread while the pool waits, and each sample of
//! the batch packs the whole weight again. Here `flex` multiplies the rows of `x` (every sample's
//! tokens as one matrix) in a few row blocks over rayon's threads, each one call of `gemm` (the
//! library `flex`'s matmul uses) that writes into the output's single, uninitialised allocation,
//! the bias already in place (`gemm` accumulates onto it), reading `W` through its strides. A
//! frozen `W` (the encoders' case) gets no gradient and keeps no copy of `x` for one.
//!
//! One of the workspace's three modules with `unsafe` code (with `flex_gemm` and
//! [`crate::attention`]): the products take raw pointers and strides, and the output is allocated
//! uninitialised. Each block is commented with what makes it sound, and the tests compare every
//! layout `flex` hands it with burn's own operations.

#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, backend::Backend};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use crate::flex_buffer::contiguous;
use crate::flex_gemm::{Strided, product, start_of};
use crate::primitive::{primitive, rows, tensor};

/// A backend with a linear layer of its own choosing (burn's matmul and add by default).
pub trait FastLinear: Backend {
    /// `x · weight + bias` over the last axis of `x`; `weight` may be any strided view (the
    /// backward passes the transposed one).
    ///
    /// # Shapes
    /// - `x`: `[..., d_in]`, `weight`: `[d_in, d_out]`, `bias`: `[d_out]`
    /// - output: `[..., d_out]`
    fn fast_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        linear_reference::<Self>(x, weight, bias)
    }
}

/// `x · weight + bias` over the last axis of `x`.
///
/// # Shapes
/// - `x`: `[..., d_in]`, `weight`: `[d_in, d_out]`, `bias`: `[d_out]`
/// - output: `[..., d_out]`
///
/// # Panics
/// If `x`'s last axis is not `weight`'s first, or `bias` is not `weight`'s second.
pub fn linear<B: FastLinear, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    let [d_in, d_out] = weight.dims();
    assert_eq!(x.dims()[D - 1], d_in, "linear: the last axis of x {:?} is not the weight's d_in in [{d_in}, {d_out}]", x.dims());
    if let Some(bias) = &bias {
        assert_eq!(bias.dims(), [d_out], "linear: the bias {:?} is not the weight's d_out in [{d_in}, {d_out}]", bias.dims());
    }
    tensor(B::fast_linear(primitive(x), primitive(weight), bias.map(primitive)))
}

/// [`FastLinear::fast_linear`] composed of burn's operations: the rows of `x` times `weight`,
/// plus `bias`.
pub fn linear_reference<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, bias: Option<FloatTensor<B>>) -> FloatTensor<B> {
    let mut shape = x.shape();
    let y = rows::<B>(x).matmul(tensor::<B, 2>(weight));
    let y = match bias {
        Some(bias) => y + tensor::<B, 1>(bias).unsqueeze(),
        None => y,
    };
    let last = shape.num_dims() - 1;
    shape[last] = y.dims()[1];
    B::float_reshape(primitive(y), shape)
}

impl FastLinear for Flex {
    fn fast_linear(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
        let f32s = [Some(&x), Some(&weight), bias.as_ref()].into_iter().flatten().all(|t| t.dtype() == DType::F32);
        if !f32s || weight.layout().num_dims() != 2 {
            return linear_reference::<Self>(x, weight, bias);
        }
        let mut shape = x.layout().shape().clone();
        let last = shape.num_dims() - 1;
        let (rows, d_in) = ((0..last).map(|i| shape[i]).product::<usize>(), shape[last]);
        let (x, (row_stride, col_stride)) = match row_strides(x.layout()) {
            Some(strides) => (x, strides),
            // A view whose leading axes do not merge into evenly spaced rows is copied.
            None => (contiguous(x), (d_in as isize, 1)),
        };
        let bias = bias.map(contiguous);
        let [w_rows, w_cols] = [0, 1].map(|i| weight.layout().strides()[i]);
        let d_out = weight.layout().shape()[1];
        // What the products below read and write depends on these; [`linear`] checks them too.
        assert_eq!(weight.layout().shape()[0], d_in, "linear: the last axis of x {} is not the weight's d_in in {}", x.layout().shape(), weight.layout().shape());
        if let Some(bias) = &bias {
            assert_eq!(bias.layout().num_elements(), d_out, "linear: the bias {} is not the weight's d_out in {}", bias.layout().shape(), weight.layout().shape());
        }
        let product = Product {
            rows,
            d_in,
            d_out,
            lhs: Strided { start: start_of(&x), row_stride, col_stride },
            rhs: Strided { start: start_of(&weight), row_stride: w_rows, col_stride: w_cols },
        };
        // SAFETY: `lhs` addresses the `rows × d_in` values of `x` through its strides and `rhs`
        // the `d_in × d_out` of `weight`; both tensors live until the product returns.
        let values = unsafe { product.run(bias.as_ref().map(|b| b.storage::<f32>()), rows_per_block(rows, d_in, d_out, rayon::current_num_threads())) };
        shape[last] = d_out;
        FlexTensor::from_data(TensorData::new(values, shape))
    }
}

/// The strides between the rows of `layout` (its leading axes merged) and between the values of
/// a row; `None` when the leading axes do not merge into evenly spaced rows.
fn row_strides(layout: &Layout) -> Option<(isize, isize)> {
    let (shape, strides) = (layout.shape(), layout.strides());
    let last = shape.num_dims().checked_sub(1)?;
    if last == 0 {
        return Some((0, strides[0]));
    }
    let merges = (0..last - 1).all(|i| shape[i] == 1 || strides[i] == strides[i + 1] * shape[i + 1] as isize);
    merges.then_some((strides[last - 1], strides[last]))
}

/// `lhs [rows, d_in] · rhs [d_in, d_out]`.
#[derive(Debug, Clone, Copy)]
struct Product {
    rows: usize,
    d_in: usize,
    d_out: usize,
    lhs: Strided,
    rhs: Strided,
}

impl Product {
    /// The product plus `bias` (added to every row), row-major in a fresh vector, computed in
    /// blocks of `rows_per_block` rows over rayon's threads.
    ///
    /// # Safety
    /// `lhs` and `rhs` must address `rows × d_in` and `d_in × d_out` readable values.
    unsafe fn run(self, bias: Option<&[f32]>, rows_per_block: usize) -> Vec<f32> {
        let len = self.rows * self.d_out;
        let mut out = Vec::<f32>::with_capacity(len);
        if len > 0 {
            out.spare_capacity_mut()[..len].par_chunks_mut(rows_per_block.max(1) * self.d_out).enumerate().for_each(|(index, block)| {
                let first = index * rows_per_block.max(1);
                // SAFETY: the block is rows `first..` of the output, and `self`'s operands hold
                // those rows (the caller's promise).
                unsafe { self.block(first, block, bias) }
            });
        }
        // SAFETY: every block wrote each of its values (`block`'s contract).
        unsafe { out.set_len(len) };
        out
    }

    /// Writes rows `first..first + block.len() / d_out` of the product plus `bias` into `block`,
    /// every value of it.
    ///
    /// # Safety
    /// Those rows must be within `lhs`.
    unsafe fn block(&self, first: usize, block: &mut [MaybeUninit<f32>], bias: Option<&[f32]>) {
        let rows = block.len() / self.d_out;
        let initialised = bias.is_some();
        if let Some(bias) = bias {
            for row in block.chunks_exact_mut(self.d_out) {
                row.iter_mut().zip(bias).for_each(|(out, &b)| _ = out.write(b));
            }
        }
        // SAFETY: the rows are within `lhs` (the caller's promise); `block` is those rows of the
        // output, written whole (`accumulate` false) or added to the values just written.
        unsafe {
            product(block.as_mut_ptr().cast::<f32>(), self.d_out, [rows, self.d_in, self.d_out], self.lhs.offset(first as isize * self.lhs.row_stride), self.rhs, initialised);
        }
    }
}

/// Rows of the input one block (one rayon task, one `gemm` call) multiplies: a quarter of an
/// even split over the `threads` (so that a slow thread does not hold the others up), and enough
/// for about 2^20 multiply-adds (a smaller product is not worth a task of its own).
fn rows_per_block(rows: usize, d_in: usize, d_out: usize, threads: usize) -> usize {
    let even = rows.div_ceil(4 * threads.max(1));
    let worth_a_task = (1 << 20) / (d_in * d_out).max(1);
    even.max(worth_a_task).max(1)
}

/// The backward's state: `x` when the weight trains, the weight when `x` does.
type LinearState<B> = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

/// [`linear`] as a node of the autodiff graph, `N` = 2 (`x`, `weight`) or 3 (and `bias`).
#[derive(Debug)]
struct LinearOp;

impl<B: FastLinear, const N: usize> Backward<B, N> for LinearOp {
    type State = LinearState<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, weight) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [x_node, weight_node, bias_node] = [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = bias_node {
            grads.register::<B>(node.id, primitive(rows::<B>(grad.clone()).sum_dim(0).squeeze_dim::<1>(0)));
        }
        if let (Some(node), Some(x)) = (weight_node, x) {
            grads.register::<B>(node.id, primitive(rows::<B>(x).transpose().matmul(rows::<B>(grad.clone()))));
        }
        if let (Some(node), Some(weight)) = (x_node, weight) {
            grads.register::<B>(node.id, B::fast_linear(grad, B::float_transpose(weight), None));
        }
    }
}

impl<B: FastLinear, C: CheckpointStrategy> FastLinear for Autodiff<B, C> {
    fn fast_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        fn run<B: FastLinear, C: CheckpointStrategy, const N: usize>(
            kind: OpsKind<LinearOp, B, LinearState<B>, C, N>,
            (x, x_tracked): (FloatTensor<B>, bool),
            (weight, weight_tracked): (FloatTensor<B>, bool),
            bias: Option<FloatTensor<B>>,
        ) -> FloatTensor<Autodiff<B, C>> {
            match kind {
                OpsKind::Tracked(prep) => {
                    let state = (weight_tracked.then(|| x.clone()), x_tracked.then(|| weight.clone()));
                    prep.finish(state, B::fast_linear(x, weight, bias))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_linear(x, weight, bias)),
            }
        }
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match bias {
            None => {
                let kind = Backward::<B, 2>::prepare::<C>(LinearOp, [x.node.clone(), weight.node.clone()]).compute_bound().stateful();
                run(kind, (x.primitive, x_tracked), (weight.primitive, weight_tracked), None)
            }
            Some(bias) => {
                let kind = Backward::<B, 3>::prepare::<C>(LinearOp, [x.node.clone(), weight.node.clone(), bias.node.clone()]).compute_bound().stateful();
                run(kind, (x.primitive, x_tracked), (weight.primitive, weight_tracked), Some(bias.primitive))
            }
        }
    }
}

#[cfg(feature = "cube")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::element::FloatElement, I: burn_cubecl::element::IntElement, BT: burn_cubecl::element::BoolElement> FastLinear
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{NON_FINITE, has_non_finite, max_relative_error, poisoned};
    use burn::tensor::Distribution;

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<Flex, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// Output and the gradients of `x`, the weight and the bias (those `tracked`; zeros for the
    /// others) of `sum(linear · upstream)` on `Autodiff<B>`, through [`linear`] or burn's matmul
    /// and add; `x` is used as the transposed view of `x_t`, the weight as given (any view).
    fn run<B: FastLinear>(fast: bool, tracked: [bool; 3], [x_t, weight, bias, upstream]: [&Tensor<Flex, 3>; 4], device: &B::Device) -> [Tensor<Flex, 3>; 4] {
        let to = |t: &Tensor<Flex, 3>, track: bool| {
            let t = Tensor::<Autodiff<B>, 3>::from_data(t.to_data(), device);
            if track { t.require_grad() } else { t }
        };
        let (x_t, weight, bias) = (to(x_t, tracked[0]), to(weight, tracked[1]), to(bias, tracked[2]));
        let (w, b) = (weight.clone().squeeze_dim::<2>(0), bias.clone().reshape([-1]));
        let x = x_t.clone().swap_dims(0, 1);
        let y = if fast { linear(x, w, Some(b)) } else { x.matmul(w.unsqueeze()) + b.unsqueeze() };
        let grads = (y.clone() * to(upstream, false)).sum().backward();
        let back = |t: Tensor<B, 3>| Tensor::<Flex, 3>::from_data(t.into_data(), &Default::default());
        let grad = |t: &Tensor<Autodiff<B>, 3>| t.grad(&grads).map_or_else(|| Tensor::zeros(t.dims(), &Default::default()), back);
        [back(y.inner()), grad(&x_t), grad(&weight), grad(&bias)]
    }

    /// Ours on `Autodiff<B>` against burn's operations on `Autodiff<Flex>`: a strided input, a
    /// contiguous and a transposed weight, frozen or trained parts; finite inputs, and a NaN or
    /// an infinity in `x`, the weight or the bias (NaN and infinities where burn has them).
    fn assert_matches_burns_operations<B: FastLinear>(device: &B::Device) {
        let [batch, len, d_in, d_out] = [3, 5, 7, 6];
        let x_t = random([len, batch, d_in]);
        let (bias, upstream) = (random([1, 1, d_out]), random([batch, len, d_out]));
        for weight in [random([1, d_in, d_out]), random([1, d_out, d_in]).swap_dims(1, 2)] {
            let clean = [x_t.clone(), weight, bias.clone()];
            let poisons = [None].into_iter().chain((0..3).flat_map(|input| NON_FINITE.map(|value| Some((input, value)))));
            for poison in poisons {
                let mut operands = clean.clone();
                if let Some((input, value)) = poison {
                    operands[input] = poisoned(&operands[input], &[(4, value)]);
                }
                for tracked in [[true; 3], [true, false, false], [false, true, true]] {
                    let inputs = [&operands[0], &operands[1], &operands[2], &upstream];
                    let (ours, burns) = (run::<B>(true, tracked, inputs, device), run::<Flex>(false, tracked, inputs, &Default::default()));
                    assert_eq!(poison.is_some(), has_non_finite(&ours[0]), "{poison:?} reaches the output");
                    for (name, (a, b)) in ["output", "d x", "d weight", "d bias"].iter().zip(ours.into_iter().zip(burns)) {
                        let error = max_relative_error(a, b);
                        assert!(error < 1e-5, "tracked {tracked:?}, {poison:?} (input, value): {name} off by {error:e}");
                    }
                }
            }
        }
    }

    #[test]
    fn forward_and_gradients_match_burns_operations() {
        assert_matches_burns_operations::<Flex>(&Default::default());
    }

    /// A frozen weight gets no gradient and the backward keeps no copy of `x` for one.
    #[test]
    fn a_frozen_weight_gets_no_gradient() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<AB, 3>::from_data(random([2, 3, 4]).into_data(), &device).require_grad();
        let weight = Tensor::<AB, 2>::from_data(random([4, 5]).into_data(), &device);
        let grads = linear(x.clone(), weight.clone(), None).sum().backward();
        assert!(weight.grad(&grads).is_none());
        let expected = weight.inner().sum_dim(1).reshape([1, 1, 4]).expand([2, 3, 4]);
        assert!(max_relative_error(x.grad(&grads).unwrap(), expected) < 1e-6);
    }

    /// `flex`'s product in blocks of a few rows (ragged last block), with and without a bias, on
    /// 2-D and 4-D inputs, a view whose leading axes do not merge (copied), an offset view, and
    /// empty widths: the same values as burn's operations.
    #[test]
    fn the_flex_product_matches_burns_operations() {
        let (weight, bias) = (random([9, 11]), random([11]));
        let reference = |x: Tensor<Flex, 2>, bias: Option<Tensor<Flex, 1>>| {
            let y = x.matmul(weight.clone());
            bias.map_or(y.clone(), |b| y + b.unsqueeze())
        };
        let x = random([37, 9]);
        let (x_primitive, w_primitive) = (primitive(x.clone()), primitive(weight.clone()));
        let product = Product {
            rows: 37,
            d_in: 9,
            d_out: 11,
            lhs: Strided::row_major(start_of(&x_primitive), 9),
            rhs: Strided::row_major(start_of(&w_primitive), 11),
        };
        for rows_per_block in [1, 4, 37, 100] {
            for bias in [None, Some(bias.clone())] {
                let b = bias.clone().map(primitive);
                // SAFETY: the operands point into `x_primitive` and `w_primitive`, alive here.
                let got = unsafe { product.run(b.as_ref().map(|b| b.storage::<f32>()), rows_per_block) };
                let got = Tensor::<Flex, 2>::from_data(TensorData::new(got, [37, 11]), &Default::default());
                assert!(max_relative_error(got, reference(x.clone(), bias.clone())) < 1e-6, "{rows_per_block} rows a block");
            }
        }
        let through_hook = |x: Tensor<Flex, 2>| tensor::<Flex, 2>(Flex::fast_linear(primitive(x), primitive(weight.clone()), Some(primitive(bias.clone()))));
        let x4 = random([2, 3, 4, 9]);
        let got = tensor::<Flex, 4>(Flex::fast_linear(primitive(x4.clone()), primitive(weight.clone()), None));
        assert_eq!(got.dims(), [2, 3, 4, 11]);
        assert!(max_relative_error(got.reshape([24, 11]), reference(x4.reshape([24, 9]), None)) < 1e-6);
        let unmerged = random([4, 3, 9]).swap_dims(0, 1);
        assert!(row_strides(primitive(unmerged.clone()).layout()).is_none());
        let got = tensor::<Flex, 3>(Flex::fast_linear(primitive(unmerged.clone()), primitive(weight.clone()), Some(primitive(bias.clone()))));
        let expected = reference(unmerged.reshape([12, 9]), Some(bias.clone()));
        assert!(max_relative_error(got.reshape([12, 11]), expected) < 1e-6);
        let offset = random([40, 9]).narrow(0, 3, 37);
        assert!(max_relative_error(through_hook(offset.clone()), reference(offset, Some(bias.clone()))) < 1e-6);
        // No input width: the bias alone; no rows: nothing.
        let empty = tensor::<Flex, 2>(Flex::fast_linear(primitive(random([4, 0])), primitive(random([0, 3])), Some(primitive(Tensor::<Flex, 1>::from_floats([1.0, 2.0, 3.0], &Default::default())))));
        assert_eq!(empty.to_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0].repeat(4));
        assert_eq!(through_hook(random([0, 9])).dims(), [0, 11]);
    }

    #[test]
    fn blocks_split_the_rows_over_the_threads_unless_the_product_is_small() {
        assert_eq!(rows_per_block(2016, 384, 384, 2), 252);
        assert_eq!(rows_per_block(1680, 768, 3072, 2), 210);
        assert_eq!(rows_per_block(64, 8, 8, 2), 16384, "a product of 4 K multiply-adds is one block");
        assert_eq!(rows_per_block(0, 8, 8, 2), 16384);
        assert_eq!(rows_per_block(5, 0, 8, 0), 1 << 20);
    }

    crate::test_support::gpu_backend_tests!(assert_matches_burns_operations);

    /// The `flex` hook checks the shapes its products rely on, even when called directly.
    #[test]
    #[should_panic(expected = "linear: the bias [4] is not the weight's d_out in [3, 5]")]
    fn the_flex_hook_checks_the_bias() {
        Flex::fast_linear(primitive(random([2, 3])), primitive(random([3, 5])), Some(primitive(Tensor::<Flex, 1>::zeros([4], &Default::default()))));
    }

    #[test]
    #[should_panic(expected = "linear: the last axis of x [2, 3] is not the weight's d_in in [4, 5]")]
    fn the_input_width_must_match_the_weight() {
        let device = Default::default();
        linear(Tensor::<Flex, 2>::zeros([2, 3], &device), Tensor::zeros([4, 5], &device), None);
    }
}
