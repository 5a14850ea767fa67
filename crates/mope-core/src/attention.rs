//! Multi-head scaled dot-product attention as one operation, with a hand-written backward and
//! backend-extension hooks for the parts burn's CPU backend runs slowly.
//!
//! ```text
//! q_h, k_h, v_h = split(q), split(k), split(v)        [b, t, h·d] → [b, h, t, d]   (views)
//! p             = softmax(scale · q_h·k_hᵀ)            [b, h, t, s]; scale = 1/√d; padded keys masked
//! out           = merge(p·v_h)                         [b, h, t, d] → [b, t, h·d]   (one copy)
//!
//! g_h   = split(upstream gradient)                                                  (a view)
//! d v   = merge(pᵀ·g_h)
//! d s   = scale · p ⊙ (g_h·v_hᵀ − Σ_s p ⊙ g_h·v_hᵀ)    the scores' gradient, from p alone
//! d q   = merge(d s·k_h),  d k = merge(d sᵀ·q_h)
//! ```
//!
//! It computes what burn's `MultiHeadAttention` computes (masked keys get the score −10⁴ after
//! scaling, as there), as one node of the autodiff graph instead of a dozen. On burn's CPU backend
//! (`flex`, 0.21) that attention spent most of its non-matmul time in two operations:
//! merging heads, a permuted copy that `flex` walks one element at a time (about 10× PyTorch's
//! time), and the softmax, five tensor operations each recorded under autodiff (about 2×).
//! [`FastAttention`]'s hooks take them over on `flex`: the softmax (scale included) and its
//! backward run in place, row by row, over rayon's threads, with the exponential of
//! `fast_math`; merging heads copies runs of `d` contiguous values. The products
//! stay burn's matmuls, which read the split heads through their strides without copying.
//! Every other backend runs burn's own operations (the trait's default bodies), under the same
//! hand-written backward.

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::softmax;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, DType, Tensor, backend::Backend};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::fast_math::exp_non_positive;
use crate::flex_buffer::{contiguous, rows_per_task, zeros_f32};
use crate::kernels::{primitive, tensor};

/// The score of a masked (padding) key after scaling, as in burn's `MultiHeadAttention`.
pub const MASKED_SCORE: f32 = -1.0e4;

/// A backend with an attention of its own choosing (burn's operations by default).
pub trait FastAttention: Backend {
    /// `softmax(scale · x)` over the last axis.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, queries, keys]`; output the same
    fn attention_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        softmax_reference::<Self>(x, scale)
    }

    /// The gradient of `softmax(scale · x)` from its output `p`: `scale · p ⊙ (grad − Σ p ⊙ grad)`,
    /// the sum over the last axis.
    ///
    /// # Shapes
    /// - `p`, `grad`: `[batch, heads, queries, keys]`; output the same
    fn attention_softmax_backward(p: FloatTensor<Self>, grad: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        softmax_backward_reference::<Self>(p, grad, scale)
    }

    /// Heads back into the model width, contiguous.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, len, d_head]`
    /// - output: `[batch, len, heads · d_head]`
    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        merge_heads_reference::<Self>(x)
    }

    /// The attention of the module docs, from the projected queries, keys and values.
    ///
    /// # Shapes
    /// - `q`: `[batch, queries, width]`, `k` and `v`: `[batch, keys, width]`; `heads` divides `width`
    /// - `mask_pad`: `[batch, keys]`, `true` at padding
    /// - output: `[batch, queries, width]`
    fn multi_head_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask_pad: Option<BoolTensor<Self>>,
        heads: usize,
    ) -> FloatTensor<Self> {
        attention_forward::<Self>(q, k, v, mask_pad, heads).0
    }
}

/// [`FastAttention::multi_head_attention`] on tensors.
///
/// # Shapes
/// - `q`: `[batch, queries, width]`, `k` and `v`: `[batch, keys, width]`; `heads` divides `width`
/// - `mask_pad`: `[batch, keys]`, `true` at padding
/// - output: `[batch, queries, width]`
///
/// # Panics
/// If the shapes disagree (the message names the dimensions).
pub fn multi_head_attention<B: FastAttention>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, heads: usize) -> Tensor<B, 3> {
    let out = B::multi_head_attention(primitive(q), primitive(k), primitive(v), mask_pad.map(Tensor::into_primitive), heads);
    tensor(out)
}

/// The same attention composed of burn's tensor operations as burn's `MultiHeadAttention` does it
/// (the scale applied to the scores, a masked fill, burn's softmax, heads merged by a reshape):
/// the reference the operation is tested against.
///
/// # Shapes
/// As [`multi_head_attention`].
pub fn multi_head_attention_reference<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, heads: usize) -> Tensor<B, 3> {
    let dims = AttentionDims::of(&q, &k, &v, heads);
    let scores = dims.split(q, dims.queries).matmul(dims.split(k, dims.keys).swap_dims(2, 3)).mul_scalar(dims.scale);
    let scores = match mask_pad {
        Some(mask) => scores.mask_fill(dims.mask(mask), MASKED_SCORE),
        None => scores,
    };
    let context = softmax(scores, 3).matmul(dims.split(v, dims.keys));
    context.swap_dims(1, 2).reshape([dims.batch, dims.queries, dims.width])
}

/// The sizes of one attention, checked.
#[derive(Clone, Copy, Debug)]
struct AttentionDims {
    batch: usize,
    queries: usize,
    keys: usize,
    width: usize,
    heads: usize,
    scale: f32,
}

impl AttentionDims {
    fn of<B: Backend>(q: &Tensor<B, 3>, k: &Tensor<B, 3>, v: &Tensor<B, 3>, heads: usize) -> Self {
        let [batch, queries, width] = q.dims();
        let [k_batch, keys, k_width] = k.dims();
        assert!(heads > 0 && width.is_multiple_of(heads), "attention: width {width} is not a multiple of heads = {heads}");
        assert!(
            [k_batch, k_width] == [batch, width] && v.dims() == [batch, keys, width],
            "attention: q {:?}, k {:?} and v {:?} disagree (q [batch, queries, width], k and v [batch, keys, width])",
            q.dims(),
            k.dims(),
            v.dims()
        );
        Self { batch, queries, keys, width, heads, scale: 1.0 / ((width / heads) as f32).sqrt() }
    }

    /// `[batch, len, width]` → `[batch, heads, len, d_head]`, a view.
    fn split<B: Backend>(&self, x: Tensor<B, 3>, len: usize) -> Tensor<B, 4> {
        x.reshape([self.batch, len, self.heads, self.width / self.heads]).swap_dims(1, 2)
    }

    /// `[batch, keys]` → `[batch, 1, 1, keys]`.
    fn mask<B: Backend>(&self, mask_pad: Tensor<B, 2, Bool>) -> Tensor<B, 4, Bool> {
        assert_eq!(mask_pad.dims(), [self.batch, self.keys], "attention: mask_pad is not [batch, keys]");
        mask_pad.reshape([self.batch, 1, 1, self.keys])
    }
}

/// The forward pass through the hooks: the output and the attention probabilities `p`
/// (`[batch, heads, queries, keys]`, what the backward needs).
fn attention_forward<B: FastAttention>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask_pad: Option<BoolTensor<B>>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (q, k, v) = (tensor::<B, 3>(q), tensor::<B, 3>(k), tensor::<B, 3>(v));
    let dims = AttentionDims::of(&q, &k, &v, heads);
    let scores = dims.split(q, dims.queries).matmul(dims.split(k, dims.keys).swap_dims(2, 3));
    let scores = match mask_pad {
        // Filled before scaling: the scaled score is MASKED_SCORE.
        Some(mask) => scores.mask_fill(dims.mask(Tensor::from_primitive(mask)), MASKED_SCORE / dims.scale),
        None => scores,
    };
    let p = B::attention_softmax(primitive(scores), dims.scale);
    let context = tensor::<B, 4>(p.clone()).matmul(dims.split(v, dims.keys));
    (B::merge_heads(primitive(context)), p)
}

/// The gradients against `q`, `k` and `v` of those asked for (the module docs).
fn attention_backward<B: FastAttention>(
    grad: FloatTensor<B>,
    (q, k, v, p, heads): AttentionState<B>,
    wanted: [bool; 3],
) -> [Option<FloatTensor<B>>; 3] {
    let (q, k, v) = (tensor::<B, 3>(q), tensor::<B, 3>(k), tensor::<B, 3>(v));
    let dims = AttentionDims::of(&q, &k, &v, heads);
    let p = tensor::<B, 4>(p);
    let grad = dims.split(tensor(grad), dims.queries);
    let merge = |x: Tensor<B, 4>| B::merge_heads(primitive(x));
    let d_v = wanted[2].then(|| merge(p.clone().swap_dims(2, 3).matmul(grad.clone())));
    if !wanted[0] && !wanted[1] {
        return [None, None, d_v];
    }
    let d_p = grad.matmul(dims.split(v, dims.keys).swap_dims(2, 3));
    let d_scores = tensor::<B, 4>(B::attention_softmax_backward(primitive(p), primitive(d_p), dims.scale));
    let d_q = wanted[0].then(|| merge(d_scores.clone().matmul(dims.split(k, dims.keys))));
    let d_k = wanted[1].then(|| merge(d_scores.swap_dims(2, 3).matmul(dims.split(q, dims.queries))));
    [d_q, d_k, d_v]
}

/// [`FastAttention::attention_softmax`] composed of burn's operations.
pub fn softmax_reference<B: Backend>(x: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    primitive(softmax(tensor::<B, 4>(x).mul_scalar(scale), 3))
}

/// [`FastAttention::attention_softmax_backward`] composed of burn's operations.
pub fn softmax_backward_reference<B: Backend>(p: FloatTensor<B>, grad: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    let (p, grad) = (tensor::<B, 4>(p), tensor::<B, 4>(grad));
    let centred = grad.clone() - (p.clone() * grad).sum_dim(3);
    primitive((p * centred).mul_scalar(scale))
}

/// [`FastAttention::merge_heads`] composed of burn's operations.
pub fn merge_heads_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let x = tensor::<B, 4>(x);
    let [batch, heads, len, d_head] = x.dims();
    primitive(x.swap_dims(1, 2).reshape([batch, len, heads * d_head]))
}


impl FastAttention for Flex {
    fn attention_softmax(x: FlexTensor, scale: f32) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return softmax_reference::<Self>(x, scale);
        }
        let mut x = owned_contiguous(x);
        let len = last_dim(&x);
        let rows = rows_per_task(len);
        x.storage_mut::<f32>().par_chunks_mut(rows * len).for_each(|chunk| softmax_rows(chunk, len, scale));
        x
    }

    fn attention_softmax_backward(p: FlexTensor, grad: FlexTensor, scale: f32) -> FlexTensor {
        if p.dtype() != DType::F32 || grad.dtype() != DType::F32 || p.layout().shape() != grad.layout().shape() {
            return softmax_backward_reference::<Self>(p, grad, scale);
        }
        let p = p.to_contiguous();
        let mut grad = owned_contiguous(grad);
        let len = last_dim(&p);
        let rows = rows_per_task(len);
        grad.storage_mut::<f32>()
            .par_chunks_mut(rows * len)
            .zip(p.storage::<f32>().par_chunks(rows * len))
            .for_each(|(grad, p)| softmax_backward_rows(grad, p, len, scale));
        grad
    }

    fn merge_heads(x: FlexTensor) -> FlexTensor {
        let layout = x.layout();
        let shape = layout.shape();
        if x.dtype() != DType::F32 || shape.num_dims() != 4 || layout.strides()[3] != 1 || layout.strides().iter().any(|&s| s < 0) {
            return merge_heads_reference::<Self>(x);
        }
        let [batch, heads, len, d_head] = [shape[0], shape[1], shape[2], shape[3]];
        let [batch_stride, head_stride, row_stride] = [0, 1, 2].map(|i| layout.strides()[i] as usize);
        let start = layout.start_offset();
        let src = x.storage::<f32>();
        let mut out = zeros_f32([batch, len, heads * d_head].into());
        // One output row (a token: every head's `d_head` values side by side) per item.
        out.storage_mut::<f32>().par_chunks_mut(heads * d_head).enumerate().for_each(|(row, out)| {
            let (b, t) = (row / len, row % len);
            for (h, out) in out.chunks_exact_mut(d_head).enumerate() {
                let from = start + b * batch_stride + h * head_stride + t * row_stride;
                out.copy_from_slice(&src[from..from + d_head]);
            }
        });
        out
    }
}

/// `x` itself where it is contiguous and nothing else holds it (then it is overwritten), else a
/// contiguous copy.
fn owned_contiguous(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    if x.is_unique() {
        return x;
    }
    let mut copy = zeros_f32(x.layout().shape().clone());
    copy.storage_mut::<f32>().copy_from_slice(x.storage::<f32>());
    copy
}

/// The size of the last axis (1 for a scalar).
fn last_dim(x: &FlexTensor) -> usize {
    let shape = x.layout().shape();
    if shape.num_dims() == 0 { 1 } else { shape[shape.num_dims() - 1].max(1) }
}

/// SIMD lanes of the reductions (8: AVX2's width; the compiler splits them on narrower machines).
const LANES: usize = 8;

/// Each `len`-long row of `rows` becomes `softmax(scale · row)`, dispatched for the widest SIMD.
/// Four passes over a row that stays in the L1 cache: the maximum, the exponentials, their sum,
/// the normalisation (summing inside the exponentials' loop keeps it from vectorising: 2.7× slower).
fn softmax_rows(rows: &mut [f32], len: usize, scale: f32) {
    pulp::Arch::new().dispatch(|| {
        for row in rows.chunks_exact_mut(len) {
            let max = lane_max(row);
            for x in row.iter_mut() {
                let v = (*x - max) * scale;
                // Below −87 the exponential is under f32's smallest normal: 0, as burn's is.
                *x = if v < -87.0 { 0.0 } else { exp_non_positive(v) };
            }
            let inverse = 1.0 / lane_sum(row);
            for x in row.iter_mut() {
                *x *= inverse;
            }
        }
    })
}

/// Each row of `grad` becomes `scale · p ⊙ (grad − Σ p ⊙ grad)`, dispatched as [`softmax_rows`].
fn softmax_backward_rows(grad: &mut [f32], p: &[f32], len: usize, scale: f32) {
    pulp::Arch::new().dispatch(|| {
        for (grad, p) in grad.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
            let mut dots = [0.0f32; LANES];
            let body = len - len % LANES;
            for (g, p) in grad[..body].chunks_exact(LANES).zip(p[..body].chunks_exact(LANES)) {
                for ((g, p), dot) in g.iter().zip(p).zip(&mut dots) {
                    *dot += g * p;
                }
            }
            for (g, p) in grad[body..].iter().zip(&p[body..]) {
                dots[0] += g * p;
            }
            let dot: f32 = dots.iter().sum();
            for (g, &p) in grad.iter_mut().zip(p) {
                *g = scale * p * (*g - dot);
            }
        }
    })
}

/// The largest value of `row`, in `LANES` independent lanes (a sequential fold would not vectorise).
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let body = row.len() - row.len() % LANES;
    for chunk in row[..body].chunks_exact(LANES) {
        for (x, max) in chunk.iter().zip(&mut maxes) {
            *max = max.max(*x);
        }
    }
    row[body..].iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// The sum of `row`, in `LANES` independent lanes.
#[inline(always)]
fn lane_sum(row: &[f32]) -> f32 {
    let mut sums = [0.0f32; LANES];
    let body = row.len() - row.len() % LANES;
    for chunk in row[..body].chunks_exact(LANES) {
        for (x, sum) in chunk.iter().zip(&mut sums) {
            *sum += *x;
        }
    }
    row[body..].iter().sum::<f32>() + sums.iter().sum::<f32>()
}

/// The backward's state: `q`, `k`, `v`, the probabilities `p`, and the number of heads.
type AttentionState<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize);

/// [`FastAttention::multi_head_attention`] as a node of the autodiff graph (parents `q`, `k`, `v`).
#[derive(Debug)]
struct AttentionOp;

impl<B: FastAttention> Backward<B, 3> for AttentionOp {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let gradients = attention_backward::<B>(grad, ops.state, wanted);
        for (parent, gradient) in ops.parents.into_iter().zip(gradients) {
            if let (Some(node), Some(gradient)) = (parent, gradient) {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

impl<B: FastAttention, C: CheckpointStrategy> FastAttention for Autodiff<B, C> {
    fn multi_head_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask_pad: Option<BoolTensor<Self>>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let parents = [q.node.clone(), k.node.clone(), v.node.clone()];
        match AttentionOp.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, p) = attention_forward::<B>(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), mask_pad, heads);
                prep.finish((q.primitive, k.primitive, v.primitive, p, heads), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::multi_head_attention(q.primitive, k.primitive, v.primitive, mask_pad, heads)),
        }
    }
}

#[cfg(feature = "cube")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::element::FloatElement, I: burn_cubecl::element::IntElement, BT: burn_cubecl::element::BoolElement> FastAttention
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::tests::max_relative_error;
    use burn::tensor::{Distribution, TensorData};

    /// One test case: shapes, and whether some keys are padding.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        batch: usize,
        queries: usize,
        keys: usize,
        width: usize,
        heads: usize,
        masked: bool,
    }

    /// Self-attention, cross-attention (more keys than queries) with padding, one head, and
    /// rows longer than a few SIMD lanes with a ragged end.
    const CASES: [Case; 4] = [
        Case { batch: 2, queries: 7, keys: 7, width: 12, heads: 3, masked: false },
        Case { batch: 3, queries: 4, keys: 9, width: 10, heads: 2, masked: true },
        Case { batch: 1, queries: 5, keys: 5, width: 8, heads: 1, masked: true },
        Case { batch: 2, queries: 3, keys: 37, width: 16, heads: 4, masked: false },
    ];

    /// Fresh random `q`, `k`, `v`, an upstream gradient, and the padding mask (every third key
    /// after the first of each sample, shifted by the sample's index).
    fn random_inputs(case: Case) -> ([Tensor<Flex, 3>; 4], Option<Tensor<Flex, 2, Bool>>) {
        let device = Default::default();
        let normal = |len: usize| Tensor::<Flex, 3>::random([case.batch, len, case.width], Distribution::Normal(0.0, 1.5), &device);
        let mask = (0..case.batch).flat_map(|b| (0..case.keys).map(move |j| j > 0 && (j + b) % 3 == 0)).collect::<Vec<_>>();
        let mask = Tensor::<Flex, 2, Bool>::from_data(TensorData::new(mask, [case.batch, case.keys]), &device);
        ([normal(case.queries), normal(case.keys), normal(case.keys), normal(case.queries)], case.masked.then_some(mask))
    }

    /// The output and the gradients of `q`, `k`, `v` (those `tracked`; zeros for the others) of
    /// `sum(attention · upstream)` on `Autodiff<B>`, through the operation or the composed reference.
    fn run<B: FastAttention>(
        case: Case,
        (inputs, mask): &([Tensor<Flex, 3>; 4], Option<Tensor<Flex, 2, Bool>>),
        fused: bool,
        tracked: [bool; 3],
        device: &B::Device,
    ) -> [Tensor<Flex, 3>; 4] {
        let to = |t: &Tensor<Flex, 3>, track: bool| {
            let t = Tensor::<Autodiff<B>, 3>::from_data(t.to_data(), device);
            if track { t.require_grad() } else { t }
        };
        let (q, k, v) = (to(&inputs[0], tracked[0]), to(&inputs[1], tracked[1]), to(&inputs[2], tracked[2]));
        let mask = mask.as_ref().map(|m| Tensor::<Autodiff<B>, 2, Bool>::from_data(m.to_data(), device));
        let out = if fused {
            multi_head_attention(q.clone(), k.clone(), v.clone(), mask, case.heads)
        } else {
            multi_head_attention_reference(q.clone(), k.clone(), v.clone(), mask, case.heads)
        };
        let grads = (out.clone() * to(&inputs[3], false)).sum().backward();
        let back = |t: Tensor<B, 3>| Tensor::<Flex, 3>::from_data(t.into_data(), &Default::default());
        let grad = |t: &Tensor<Autodiff<B>, 3>| t.grad(&grads).map_or_else(|| Tensor::zeros(t.dims(), &Default::default()), back);
        [back(out.inner()), grad(&q), grad(&k), grad(&v)]
    }

    /// Asserts that `got` is within `1e-4` of the composed reference on `flex`, relative to each
    /// tensor's scale.
    fn assert_matches_reference(case: Case, inputs: &([Tensor<Flex, 3>; 4], Option<Tensor<Flex, 2, Bool>>), tracked: [bool; 3], got: [Tensor<Flex, 3>; 4]) {
        let expected = run::<Flex>(case, inputs, false, tracked, &Default::default());
        for (name, (got, expected)) in ["output", "d q", "d k", "d v"].iter().zip(got.into_iter().zip(expected)) {
            let error = max_relative_error(got, expected);
            assert!(error < 1e-4, "{case:?}, tracked {tracked:?}: {name} off by {error:e}");
        }
    }

    #[test]
    fn forward_and_gradients_match_the_composed_reference() {
        for case in CASES {
            let inputs = random_inputs(case);
            for tracked in [[true; 3], [false, false, true], [true, false, false]] {
                let got = run::<Flex>(case, &inputs, true, tracked, &Default::default());
                assert_matches_reference(case, &inputs, tracked, got);
            }
        }
    }

    /// `flex`'s softmax, its backward and head merging against burn's operations; masked scores
    /// get exactly 0, a shared input is left as it was.
    #[test]
    fn the_flex_hooks_match_burns_operations() {
        let device = Default::default();
        let scale = 0.25;
        let random = |shape: [usize; 4]| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 3.0), &device);
        let x = random([2, 3, 5, 37]);
        let x = x.clone().mask_fill(x.greater_elem(4.0), MASKED_SCORE / scale);
        let before = x.to_data();
        let fast = tensor::<Flex, 4>(Flex::attention_softmax(primitive(x.clone()), scale));
        x.to_data().assert_eq(&before, true);
        assert!(max_relative_error(fast.clone(), tensor(softmax_reference::<Flex>(primitive(x.clone()), scale))) < 1e-6);
        let (scores, p) = (x.to_data().to_vec::<f32>().unwrap(), fast.to_data().to_vec::<f32>().unwrap());
        let masked = scores.iter().filter(|&&s| s == MASKED_SCORE / scale).count();
        assert!(masked > 10, "the test masks some scores");
        for (s, p) in scores.iter().zip(&p) {
            assert!(*s != MASKED_SCORE / scale || *p == 0.0, "a masked score has probability {p}");
        }
        for row in p.chunks(37) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }

        // The last holder's buffer is overwritten.
        let unique = primitive(x.clone() + 0.0);
        let address = unique.storage::<f32>().as_ptr();
        assert_eq!(Flex::attention_softmax(unique, scale).storage::<f32>().as_ptr(), address);

        let (probabilities, grad) = (fast, random([2, 3, 5, 37]));
        let fast = Flex::attention_softmax_backward(primitive(probabilities.clone()), primitive(grad.clone()), scale);
        let reference = softmax_backward_reference::<Flex>(primitive(probabilities), primitive(grad), scale);
        assert!(max_relative_error(tensor::<Flex, 4>(fast), tensor(reference)) < 1e-5);

        // Heads of a contiguous tensor, of a transposed view, of a narrowed view (offset, long
        // rows), and of a view whose last axis is strided (the reference's fallback): the same copy.
        let x = random([2, 3, 5, 4]);
        for view in [x.clone(), random([2, 5, 3, 4]).swap_dims(1, 2), random([2, 3, 5, 9]).narrow(3, 2, 4), random([2, 3, 4, 5]).swap_dims(2, 3)] {
            let fast = tensor::<Flex, 3>(Flex::merge_heads(primitive(view.clone())));
            fast.to_data().assert_eq(&tensor::<Flex, 3>(merge_heads_reference::<Flex>(primitive(view))).to_data(), true);
        }
    }

    /// Every case on `B` with all three inputs tracked, against the composed reference on `flex`.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn assert_matches_reference_on<B: FastAttention>(device: &B::Device) {
        for case in CASES {
            let inputs = random_inputs(case);
            let got = run::<B>(case, &inputs, true, [true; 3], device);
            assert_matches_reference(case, &inputs, [true; 3], got);
        }
    }

    crate::kernels::gpu_backend_tests!(assert_matches_reference_on);

    #[test]
    #[should_panic(expected = "attention: width 10 is not a multiple of heads = 3")]
    fn heads_must_divide_the_width() {
        let x = Tensor::<Flex, 3>::zeros([1, 2, 10], &Default::default());
        multi_head_attention(x.clone(), x.clone(), x, None, 3);
    }

    #[test]
    #[should_panic(expected = "attention: q [2, 3, 8], k [2, 4, 8] and v [2, 5, 8] disagree")]
    fn keys_and_values_must_agree() {
        let device = Default::default();
        multi_head_attention(Tensor::<Flex, 3>::zeros([2, 3, 8], &device), Tensor::zeros([2, 4, 8], &device), Tensor::zeros([2, 5, 8], &device), None, 2);
    }
}
