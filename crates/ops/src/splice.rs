//! Deep prompt insertion's step before every layer, replacing the previous layer's prompt tokens
//! by the new ones, as one node of the autodiff graph:
//!
//! ```text
//! y   = [x[:, ..prefix] ; inserted ; x[:, rest..]]          (along the tokens)
//! d x = [grad[:, ..prefix] ; 0 ; grad[:, prefix + p..]]     (the same operation on the gradient)
//! d inserted = grad[:, prefix..prefix + p]                  (p inserted tokens)
//! ```
//!
//! Composed of burn's operations it is two narrowed views and a concatenation; on `flex` the
//! concatenation first copies each view, and the backward builds, for each view, a zeroed tensor
//! of `x`'s full size with the gradient assigned into it, then adds the two: several full-size
//! passes, on the thread that waits for the pool. Here the backward to `x` is this same operation
//! on the gradient, and on `flex` the operation is one allocation filled by one copy per run of
//! tokens.

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{BasicOps, DType, Shape, Tensor, TensorData, TensorMetadata, backend::Backend};
use burn_flex::FlexTensor;

use crate::flex_buffer::contiguous;
use crate::primitive::{primitive, tensor};

/// A backend with a token splice of its own choosing (burn's narrow and concatenation by default).
pub trait FastSplice: Backend {
    /// `x` with its tokens `prefix..rest` replaced by `inserted`.
    ///
    /// # Shapes
    /// - `x`: `[batch, len, d]`, `inserted`: `[batch, p, d]`
    /// - output: `[batch, len - (rest - prefix) + p, d]`
    fn splice_tokens(x: FloatTensor<Self>, prefix: usize, rest: usize, inserted: FloatTensor<Self>) -> FloatTensor<Self> {
        splice_reference::<Self>(x, prefix, rest, inserted)
    }
}

/// `x` with its tokens `prefix..rest` replaced by `inserted`.
///
/// # Shapes
/// - `x`: `[batch, len, d]`, `inserted`: `[batch, p, d]`
/// - output: `[batch, len - (rest - prefix) + p, d]`
///
/// # Panics
/// If `prefix..rest` is not a range of `x`'s tokens, or `inserted`'s batch or width is not `x`'s.
pub fn splice_tokens<B: FastSplice>(x: Tensor<B, 3>, prefix: usize, rest: usize, inserted: Tensor<B, 3>) -> Tensor<B, 3> {
    let ([batch, len, d], [i_batch, _, i_d]) = (x.dims(), inserted.dims());
    assert!(prefix <= rest && rest <= len, "splice: tokens {prefix}..{rest} are not a range of x's {len}");
    assert!(i_batch == batch && i_d == d, "splice: inserted {:?} does not match x {:?} in batch and width", inserted.dims(), x.dims());
    tensor(B::splice_tokens(primitive(x), prefix, rest, primitive(inserted)))
}

/// [`FastSplice::splice_tokens`] composed of burn's operations.
pub fn splice_reference<B: Backend>(x: FloatTensor<B>, prefix: usize, rest: usize, inserted: FloatTensor<B>) -> FloatTensor<B> {
    primitive(splice_by_cat(tensor::<B, 3>(x), prefix, rest, tensor(inserted)))
}

/// `[x[:, ..prefix] ; inserted ; x[:, rest..]]` along axis 1 with burn's narrow and
/// concatenation, skipping empty pieces, for tensors of any kind: the reference above, and the
/// padding mask's side of deep prompt insertion.
pub fn splice_by_cat<B: Backend, const D: usize, K: BasicOps<B>>(x: Tensor<B, D, K>, prefix: usize, rest: usize, inserted: Tensor<B, D, K>) -> Tensor<B, D, K> {
    let len = x.dims()[1];
    let mut parts = Vec::with_capacity(3);
    if prefix > 0 {
        parts.push(x.clone().narrow(1, 0, prefix));
    }
    parts.push(inserted);
    if rest < len {
        parts.push(x.narrow(1, rest, len - rest));
    }
    Tensor::cat(parts, 1)
}

impl FastSplice for Flex {
    fn splice_tokens(x: FlexTensor, prefix: usize, rest: usize, inserted: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || inserted.dtype() != DType::F32 {
            return splice_reference::<Self>(x, prefix, rest, inserted);
        }
        let (x, inserted) = (contiguous(x), contiguous(inserted));
        let (shape, p) = (x.layout().shape().clone(), inserted.layout().shape()[1]);
        let (batch, len, d) = (shape[0], shape[1], shape[2]);
        let out_len = len - (rest - prefix) + p;
        let (x, inserted) = (&x.storage::<f32>()[x.layout().start_offset()..], &inserted.storage::<f32>()[inserted.layout().start_offset()..]);
        let mut out = Vec::with_capacity(batch * out_len * d);
        for b in 0..batch {
            let (x, inserted) = (&x[b * len * d..(b + 1) * len * d], &inserted[b * p * d..(b + 1) * p * d]);
            out.extend_from_slice(&x[..prefix * d]);
            out.extend_from_slice(inserted);
            out.extend_from_slice(&x[rest * d..]);
        }
        FlexTensor::from_data(TensorData::new(out, Shape::new([batch, out_len, d])))
    }
}

/// The backward's state: `prefix`, `rest`, and `x`'s and `inserted`'s shapes.
type SpliceState = (usize, usize, Shape, Shape);

/// [`splice_tokens`] as a node of the autodiff graph.
#[derive(Debug)]
struct SpliceOp;

impl<B: FastSplice> Backward<B, 2> for SpliceOp {
    type State = SpliceState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (prefix, rest, x_shape, inserted_shape) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let p = inserted_shape[1];
        let [x_node, inserted_node] = ops.parents;
        if let Some(node) = inserted_node {
            grads.register::<B>(node.id, primitive(tensor::<B, 3>(grad.clone()).narrow(1, prefix, p)));
        }
        if let Some(node) = x_node {
            let replaced = B::float_zeros(Shape::new([x_shape[0], rest - prefix, x_shape[2]]), &B::float_device(&grad), grad.dtype().into());
            grads.register::<B>(node.id, B::splice_tokens(grad, prefix, prefix + p, replaced));
        }
    }
}

impl<B: FastSplice, C: CheckpointStrategy> FastSplice for Autodiff<B, C> {
    fn splice_tokens(x: FloatTensor<Self>, prefix: usize, rest: usize, inserted: FloatTensor<Self>) -> FloatTensor<Self> {
        match SpliceOp.prepare::<C>([x.node.clone(), inserted.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = (prefix, rest, x.primitive.shape(), inserted.primitive.shape());
                prep.finish(state, B::splice_tokens(x.primitive, prefix, rest, inserted.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::splice_tokens(x.primitive, prefix, rest, inserted.primitive)),
        }
    }
}

#[cfg(feature = "cube")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::element::FloatElement, I: burn_cubecl::element::IntElement, BT: burn_cubecl::element::BoolElement> FastSplice
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{has_non_finite, poisoned};
    use burn::tensor::Distribution;

    fn random(shape: [usize; 3]) -> Tensor<Flex, 3> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// Output and the gradients of `x` and `inserted` of `sum(splice · upstream)` on
    /// `Autodiff<B>`, through [`splice_tokens`] or burn's narrow and concatenation; `x` is a
    /// strided view.
    fn run<B: FastSplice>(fast: bool, (prefix, rest): (usize, usize), [x_t, inserted, upstream]: [&Tensor<Flex, 3>; 3], device: &B::Device) -> [Tensor<Flex, 3>; 3] {
        let to = |t: &Tensor<Flex, 3>| Tensor::<Autodiff<B>, 3>::from_data(t.to_data(), device).require_grad();
        let (x_t, inserted) = (to(x_t), to(inserted));
        let x = x_t.clone().swap_dims(0, 1);
        let y = if fast {
            splice_tokens(x, prefix, rest, inserted.clone())
        } else {
            tensor(splice_reference::<Autodiff<B>>(primitive(x), prefix, rest, primitive(inserted.clone())))
        };
        let upstream = Tensor::<Autodiff<B>, 3>::from_data(upstream.to_data(), device);
        let grads = (y.clone() * upstream).sum().backward();
        let back = |t: Tensor<B, 3>| Tensor::<Flex, 3>::from_data(t.into_data(), &Default::default());
        // burn's operations leave `x` out of the graph when all of it is replaced: zeros.
        let grad = |t: &Tensor<Autodiff<B>, 3>| t.grad(&grads).map_or_else(|| Tensor::zeros(t.dims(), &Default::default()), back);
        [back(y.inner()), grad(&x_t), grad(&inserted)]
    }

    /// Ours on `Autodiff<B>` against burn's operations on `Autodiff<Flex>`, bit for bit (the
    /// operation only moves values): a prefix and a replaced range (the [CLS] token, the previous
    /// prompts), nothing replaced yet, no prefix, the whole sequence replaced; finite values, and
    /// NaN and infinities in `x`, the inserted tokens and the upstream gradient.
    fn assert_matches_burns_operations<B: FastSplice>(device: &B::Device) {
        let [batch, len, d, p] = [3, 7, 5, 4];
        let x_t = random([len, batch, d]);
        let inserted = random([batch, p, d]);
        let bits = |t: Tensor<Flex, 3>| t.into_data().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
        for (prefix, rest) in [(1, 3), (1, 1), (0, 2), (0, 7)] {
            let upstream = random([batch, len - (rest - prefix) + p, d]);
            let non_finite = [(0, f32::NAN), (7, f32::INFINITY), (16, f32::NEG_INFINITY), (41, f32::NAN)];
            for poison in [&[][..], &non_finite[..]] {
                let (x_t, inserted, upstream) = (poisoned(&x_t, poison), poisoned(&inserted, poison), poisoned(&upstream, poison));
                let inputs = [&x_t, &inserted, &upstream];
                let (ours, burns) = (run::<B>(true, (prefix, rest), inputs, device), run::<Flex>(false, (prefix, rest), inputs, &Default::default()));
                assert_eq!(!poison.is_empty(), has_non_finite(&ours[0]), "{prefix}..{rest}: {poison:?}");
                for (name, (a, b)) in ["output", "d x", "d inserted"].iter().zip(ours.into_iter().zip(burns)) {
                    assert_eq!(a.dims(), b.dims(), "{prefix}..{rest}: {name}");
                    assert_eq!(bits(a), bits(b), "{prefix}..{rest}, {poison:?}: {name}");
                }
            }
        }
    }

    #[test]
    fn forward_and_gradients_match_burns_operations() {
        assert_matches_burns_operations::<Flex>(&Default::default());
    }

    /// The replaced tokens get no gradient: they are not in the output.
    #[test]
    fn replaced_tokens_get_zero_gradient() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<AB, 3>::ones([2, 5, 3], &device).require_grad();
        let grads = splice_tokens(x.clone(), 1, 3, Tensor::zeros([2, 4, 3], &device)).sum().backward();
        let per_token = x.grad(&grads).unwrap().sum_dim(2).reshape([2, 5]).into_data().to_vec::<f32>().unwrap();
        assert_eq!(per_token, [3.0, 0.0, 0.0, 3.0, 3.0].repeat(2));
    }

    crate::test_support::gpu_backend_tests!(assert_matches_burns_operations);

    #[test]
    #[should_panic(expected = "splice: tokens 2..6 are not a range of x's 5")]
    fn the_range_must_be_within_x() {
        let device = Default::default();
        splice_tokens(Tensor::<Flex, 3>::zeros([1, 5, 2], &device), 2, 6, Tensor::zeros([1, 1, 2], &device));
    }
}
