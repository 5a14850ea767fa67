//! Multi-head scaled dot-product attention as one operation, with a hand-written backward and
//! backend-extension hooks for its forward and backward passes.
//!
//! ```text
//! q_h, k_h, v_h = split(q), split(k), split(v)        [b, t, h·d] → [b, h, t, d]   (views)
//! p             = softmax(scale · q_h·k_hᵀ)            [b, h, t, s]; scale = 1/√d; padded keys masked
//! out           = merge(p·v_h)                         [b, h, t, d] → [b, t, h·d]
//!
//! g_h   = split(upstream gradient)                                                  (a view)
//! d v   = merge(pᵀ·g_h)
//! d s   = scale · p ⊙ (g_h·v_hᵀ − Σ_s p ⊙ g_h·v_hᵀ)    the scores' gradient, from p alone
//! d q   = merge(d s·k_h),  d k = merge(d sᵀ·q_h)
//! ```
//!
//! It computes what burn's `MultiHeadAttention` computes (masked keys get the score −10⁴ after
//! scaling, as there), as one node of the autodiff graph instead of a dozen. Composed of burn's
//! operations (every backend's default), each line above is a batched matmul, a softmax or a
//! permuted copy; on burn's CPU backend (`flex`, 0.21) each matmul allocates its output zeroed and
//! copies it again to align it on one thread while the pool waits, merging heads walks one
//! element at a time (about 10× PyTorch's time), and the softmax is five operations. On `flex`
//! the hooks run each sample's each head as one rayon task, start to end: the scores' product
//! (`gemm` reading the heads through their strides), the mask, the softmax in place (vectorised,
//! the exponential of `fast_math`), and the product with the values written straight into its
//! columns of the merged output; the backward the same way with its four products. The outputs
//! and `p` are each one uninitialised allocation, written by the tasks, nothing merged or
//! copied after. Hence the module's `unsafe` code (raw pointers into those buffers, each task its
//! own disjoint part), commented where it is used; the tests compare it with burn's composed
//! attention on every layout.

#![allow(unsafe_code)]

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::softmax;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, DType, Tensor, TensorData, backend::Backend};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::fast_math::exp_non_positive;
use crate::flex_gemm::{Destination, Strided, product, start_of};
use crate::primitive::{primitive, tensor};

/// The score of a masked (padding) key after scaling, as in burn's `MultiHeadAttention`.
pub const MASKED_SCORE: f32 = -1.0e4;

/// A backend with an attention of its own choosing (burn's operations by default).
pub trait FastAttention: Backend {
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
        Self::multi_head_attention_with_probabilities(q, k, v, mask_pad, heads).0
    }

    /// [`multi_head_attention`](FastAttention::multi_head_attention) and the attention
    /// probabilities `p`, what its backward needs.
    ///
    /// # Shapes
    /// - as [`multi_head_attention`](FastAttention::multi_head_attention)
    /// - `p`: `[batch, heads, queries, keys]`
    fn multi_head_attention_with_probabilities(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask_pad: Option<BoolTensor<Self>>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention_forward_reference::<Self>(q, k, v, mask_pad, heads)
    }

    /// The gradients against `q`, `k` and `v` of those `wanted` (the module docs), from the
    /// upstream gradient and the forward pass's inputs and `p`.
    ///
    /// # Shapes
    /// - `grad`: `[batch, queries, width]`; the others as
    ///   [`multi_head_attention_with_probabilities`](FastAttention::multi_head_attention_with_probabilities)
    /// - the gradients: shaped as `q`, `k` and `v`
    fn multi_head_attention_backward(grad: FloatTensor<Self>, state: AttentionState<Self>, wanted: [bool; 3]) -> [Option<FloatTensor<Self>>; 3] {
        attention_backward_reference::<Self>(grad, state, wanted)
    }
}

/// What the backward reads: the forward's inputs and the probabilities `p`.
#[derive(Debug, Clone)]
pub struct AttentionState<B: Backend> {
    /// `[batch, queries, width]`.
    pub q: FloatTensor<B>,
    /// `[batch, keys, width]`.
    pub k: FloatTensor<B>,
    /// `[batch, keys, width]`.
    pub v: FloatTensor<B>,
    /// `[batch, heads, queries, keys]`.
    pub p: FloatTensor<B>,
    /// `[batch, keys]`, `true` at padding: a masked score's gradient is exactly zero (its
    /// probability's product with a NaN upstream value would not be).
    pub mask_pad: Option<BoolTensor<B>>,
    /// Heads.
    pub heads: usize,
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
    tensor(attention_forward_reference::<B>(primitive(q), primitive(k), primitive(v), mask_pad.map(Tensor::into_primitive), heads).0)
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

    /// [`AttentionDims::of`] a hook's primitives.
    fn of_primitives<B: Backend>(q: &FloatTensor<B>, k: &FloatTensor<B>, v: &FloatTensor<B>, heads: usize) -> Self {
        Self::of::<B>(&tensor(q.clone()), &tensor(k.clone()), &tensor(v.clone()), heads)
    }

    fn d_head(&self) -> usize {
        self.width / self.heads
    }

    /// `[batch, len, width]` → `[batch, heads, len, d_head]`, a view.
    fn split<B: Backend>(&self, x: Tensor<B, 3>, len: usize) -> Tensor<B, 4> {
        x.reshape([self.batch, len, self.heads, self.d_head()]).swap_dims(1, 2)
    }

    /// `[batch, keys]` → `[batch, 1, 1, keys]`.
    fn mask<B: Backend>(&self, mask_pad: Tensor<B, 2, Bool>) -> Tensor<B, 4, Bool> {
        assert_eq!(mask_pad.dims(), [self.batch, self.keys], "attention: mask_pad is not [batch, keys]");
        mask_pad.reshape([self.batch, 1, 1, self.keys])
    }
}

/// `[batch, heads, len, d_head]` → `[batch, len, heads · d_head]` (a permuted copy).
fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, len, d_head] = x.dims();
    x.swap_dims(1, 2).reshape([batch, len, heads * d_head])
}

/// [`FastAttention::multi_head_attention_with_probabilities`] composed of burn's operations.
pub fn attention_forward_reference<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask_pad: Option<BoolTensor<B>>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (q, k, v) = (tensor::<B, 3>(q), tensor::<B, 3>(k), tensor::<B, 3>(v));
    let dims = AttentionDims::of(&q, &k, &v, heads);
    let scores = dims.split(q, dims.queries).matmul(dims.split(k, dims.keys).swap_dims(2, 3)).mul_scalar(dims.scale);
    let scores = match mask_pad {
        Some(mask) => scores.mask_fill(dims.mask(Tensor::from_primitive(mask)), MASKED_SCORE),
        None => scores,
    };
    let p = softmax(scores, 3);
    let context = p.clone().matmul(dims.split(v, dims.keys));
    (primitive(merge_heads(context)), primitive(p))
}

/// [`FastAttention::multi_head_attention_backward`] composed of burn's operations.
pub fn attention_backward_reference<B: Backend>(grad: FloatTensor<B>, state: AttentionState<B>, wanted: [bool; 3]) -> [Option<FloatTensor<B>>; 3] {
    let AttentionState { q, k, v, p, mask_pad, heads } = state;
    let (q, k, v) = (tensor::<B, 3>(q), tensor::<B, 3>(k), tensor::<B, 3>(v));
    let dims = AttentionDims::of(&q, &k, &v, heads);
    let p = tensor::<B, 4>(p);
    let grad = dims.split(tensor(grad), dims.queries);
    let merge = |x: Tensor<B, 4>| primitive(merge_heads(x));
    let d_v = wanted[2].then(|| merge(p.clone().swap_dims(2, 3).matmul(grad.clone())));
    if !wanted[0] && !wanted[1] {
        return [None, None, d_v];
    }
    let d_p = grad.matmul(dims.split(v, dims.keys).swap_dims(2, 3));
    let centred = d_p.clone() - (p.clone() * d_p).sum_dim(3);
    let d_scores = (p * centred).mul_scalar(dims.scale);
    let d_scores = match mask_pad {
        Some(mask) => d_scores.mask_fill(dims.mask(Tensor::from_primitive(mask)), 0.0),
        None => d_scores,
    };
    let d_q = wanted[0].then(|| merge(d_scores.clone().matmul(dims.split(k, dims.keys))));
    let d_k = wanted[1].then(|| merge(d_scores.swap_dims(2, 3).matmul(dims.split(q, dims.queries))));
    [d_q, d_k, d_v]
}

impl FastAttention for Flex {
    fn multi_head_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, mask_pad: Option<FlexTensor>, heads: usize) -> FlexTensor {
        match FlexHeads::of(&q, &k, &v, heads) {
            Some(inputs) => inputs.forward(mask_pad, false).0,
            None => attention_forward_reference::<Self>(q, k, v, mask_pad, heads).0,
        }
    }

    fn multi_head_attention_with_probabilities(q: FlexTensor, k: FlexTensor, v: FlexTensor, mask_pad: Option<FlexTensor>, heads: usize) -> (FlexTensor, FlexTensor) {
        match FlexHeads::of(&q, &k, &v, heads) {
            Some(inputs) => {
                let (out, p) = inputs.forward(mask_pad, true);
                (out, p.expect("kept"))
            }
            None => attention_forward_reference::<Self>(q, k, v, mask_pad, heads),
        }
    }

    fn multi_head_attention_backward(grad: FlexTensor, state: AttentionState<Self>, wanted: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let AttentionState { q, k, v, p, mask_pad, heads } = &state;
        if let Some(inputs) = FlexHeads::of(q, k, v, *heads) {
            let AttentionDims { batch, queries, keys, width, heads, .. } = inputs.dims;
            let shaped = grad.layout().shape().clone() == [batch, queries, width].into() && p.dtype() == DType::F32 && p.layout().shape().clone() == [batch, heads, queries, keys].into();
            if let Some(grad_heads) = Heads::of(&grad, inputs.dims.d_head()).filter(|_| shaped) {
                let masked = mask_pad.clone().map(|mask| padding(mask, [batch, keys]));
                return inputs.backward(grad_heads, p.to_contiguous().storage::<f32>(), masked.as_deref(), wanted);
            }
        }
        attention_backward_reference::<Self>(grad, state, wanted)
    }
}

/// A `[batch, len, width]` `flex` tensor's heads as strided matrices: head `h` of sample `b` is
/// `[len, d_head]`, read in place.
#[derive(Debug, Clone, Copy)]
struct Heads {
    /// Head 0 of sample 0.
    first: Strided,
    batch_stride: isize,
    d_head: usize,
}

impl Heads {
    /// `None` unless `x` is a 3-D `f32` tensor with non-negative strides.
    fn of(x: &FlexTensor, d_head: usize) -> Option<Self> {
        let layout = x.layout();
        let strides = layout.strides();
        if x.dtype() != DType::F32 || layout.num_dims() != 3 || strides.iter().any(|&s| s < 0) {
            return None;
        }
        Some(Self { first: Strided { start: start_of(x), row_stride: strides[1], col_stride: strides[2] }, batch_stride: strides[0], d_head })
    }

    /// Head `head` of sample `sample`.
    fn get(&self, sample: usize, head: usize) -> Strided {
        self.first.offset(sample as isize * self.batch_stride + (head * self.d_head) as isize * self.first.col_stride)
    }
}

/// The inputs of one attention on `flex`, read in place.
struct FlexHeads {
    dims: AttentionDims,
    q: Heads,
    k: Heads,
    v: Heads,
}

impl FlexHeads {
    /// `None` where the kernels below cannot read an input (not `f32`, negative strides): the
    /// composed reference runs instead.
    fn of(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, heads: usize) -> Option<Self> {
        let dims = AttentionDims::of_primitives::<Flex>(q, k, v, heads);
        let d_head = dims.d_head();
        Some(Self { dims, q: Heads::of(q, d_head)?, k: Heads::of(k, d_head)?, v: Heads::of(v, d_head)? })
    }

    /// The output `[batch, queries, width]` and, when `keep_probabilities`, `p`
    /// `[batch, heads, queries, keys]`: one task per sample and head.
    fn forward(&self, mask_pad: Option<FlexTensor>, keep_probabilities: bool) -> (FlexTensor, Option<FlexTensor>) {
        let AttentionDims { batch, queries, keys, width, heads, scale } = self.dims;
        let d_head = self.dims.d_head();
        let masked = mask_pad.map(|mask| padding(mask, [batch, keys]));
        let scores_len = queries * keys;
        let mut out = Vec::<f32>::with_capacity(batch * queries * width);
        let mut p = Vec::<f32>::with_capacity(if keep_probabilities { batch * heads * scores_len } else { 0 });
        let (out_at, p_at) = (Destination(out.as_mut_ptr()), Destination(p.as_mut_ptr()));
        (0..batch * heads).into_par_iter().for_each_init(Vec::<f32>::new, |scratch, task| {
            let (sample, head) = (task / heads, task % heads);
            let scores_at = if keep_probabilities {
                p_at.offset(task * scores_len)
            } else {
                scratch.resize(scores_len, 0.0);
                scratch.as_mut_ptr()
            };
            // SAFETY: `scores_at` is this task's own `[queries, keys]` (of `p`, or its scratch);
            // the heads are within the inputs, which outlive the tasks.
            let scores = unsafe {
                product(scores_at, keys, [queries, d_head, keys], self.q.get(sample, head), self.k.get(sample, head).transposed(), false);
                std::slice::from_raw_parts_mut(scores_at, scores_len)
            };
            if let Some(masked) = &masked {
                for key in (0..keys).filter(|&key| masked[sample * keys + key]) {
                    // Filled before scaling: the scaled score is MASKED_SCORE.
                    scores[key..].iter_mut().step_by(keys).for_each(|s| *s = MASKED_SCORE / scale);
                }
            }
            if keys > 0 {
                softmax_rows(scores, keys, scale);
            }
            // SAFETY: the output's columns `head · d_head..` of sample `sample`'s rows are this
            // task's alone; `scores` is initialised.
            unsafe {
                let at = out_at.offset(sample * queries * width + head * d_head);
                product(at, width, [queries, keys, d_head], Strided::row_major(scores_at, keys), self.v.get(sample, head), false);
            }
        });
        // SAFETY: the tasks wrote every value: each sample's each head its columns of the output,
        // and its `[queries, keys]` of `p` when kept.
        unsafe {
            out.set_len(batch * queries * width);
            if keep_probabilities {
                p.set_len(batch * heads * scores_len);
            }
        }
        let p = keep_probabilities.then(|| float_tensor(p, [batch, heads, queries, keys]));
        (float_tensor(out, [batch, queries, width]), p)
    }

    /// The gradients of those `wanted` of `q`, `k`, `v` from the upstream gradient `grad`, the
    /// probabilities `p` (contiguous `[batch, heads, queries, keys]`) and which keys are padding
    /// (`[batch, keys]`): one task per sample and head.
    fn backward(&self, grad: Heads, p: &[f32], masked: Option<&[bool]>, wanted: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let AttentionDims { batch, queries, keys, width, heads, scale } = self.dims;
        let d_head = self.dims.d_head();
        let scores_len = queries * keys;
        let lens = [queries, keys, keys];
        let mut gradients = [0, 1, 2].map(|i| Vec::<f32>::with_capacity(if wanted[i] { batch * lens[i] * width } else { 0 }));
        let [d_q, d_k, d_v] = gradients.each_mut().map(|g| Destination(g.as_mut_ptr()));
        (0..batch * heads).into_par_iter().for_each_init(Vec::<f32>::new, |d_scores, task| {
            let (sample, head) = (task / heads, task % heads);
            let (q, k, v, g) = (self.q.get(sample, head), self.k.get(sample, head), self.v.get(sample, head), grad.get(sample, head));
            let p_h = &p[task * scores_len..(task + 1) * scores_len];
            let columns = |gradient: Destination, len: usize| gradient.offset(sample * len * width + head * d_head);
            // SAFETY (the products): each writes this task's own columns of a gradient (or its
            // scratch); the heads and `p` are within the inputs, which outlive the tasks.
            if wanted[2] {
                unsafe { product(columns(d_v, keys), width, [keys, queries, d_head], Strided::row_major(p_h.as_ptr(), keys).transposed(), g, false) };
            }
            if !wanted[0] && !wanted[1] {
                return;
            }
            d_scores.resize(scores_len, 0.0);
            unsafe { product(d_scores.as_mut_ptr(), keys, [queries, d_head, keys], g, v.transposed(), false) };
            if keys > 0 {
                softmax_backward_rows(d_scores, p_h, keys, scale);
            }
            if let Some(masked) = masked {
                // Exactly zero, as the forward's fill makes it (not `p · (…)`, NaN where a row is).
                for key in (0..keys).filter(|&key| masked[sample * keys + key]) {
                    d_scores[key..].iter_mut().step_by(keys).for_each(|s| *s = 0.0);
                }
            }
            let d_s = Strided::row_major(d_scores.as_ptr(), keys);
            if wanted[0] {
                unsafe { product(columns(d_q, queries), width, [queries, keys, d_head], d_s, k, false) };
            }
            if wanted[1] {
                unsafe { product(columns(d_k, keys), width, [keys, queries, d_head], d_s.transposed(), q, false) };
            }
        });
        let mut out = [None, None, None];
        for (i, mut gradient) in gradients.into_iter().enumerate() {
            if wanted[i] {
                // SAFETY: every task wrote its columns of each wanted gradient: all of them.
                unsafe { gradient.set_len(batch * lens[i] * width) };
                out[i] = Some(float_tensor(gradient, [batch, lens[i], width]));
            }
        }
        out
    }
}

/// Whether each key of each sample is padding, read from a `[batch, keys]` mask.
///
/// # Panics
/// If the mask has another shape.
fn padding(mask: FlexTensor, [batch, keys]: [usize; 2]) -> Vec<bool> {
    let mask = Tensor::<Flex, 2, Bool>::from_primitive(mask);
    assert_eq!(mask.dims(), [batch, keys], "attention: mask_pad is not [batch, keys]");
    mask.into_data().convert::<bool>().to_vec::<bool>().expect("a bool tensor")
}

/// `values` as a contiguous `f32` tensor of `shape`.
fn float_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
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

/// [`FastAttention::multi_head_attention`] as a node of the autodiff graph (parents `q`, `k`, `v`).
#[derive(Debug)]
struct AttentionOp;

impl<B: FastAttention> Backward<B, 3> for AttentionOp {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let gradients = B::multi_head_attention_backward(grad, ops.state, wanted);
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
                let (out, p) = B::multi_head_attention_with_probabilities(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), mask_pad.clone(), heads);
                prep.finish(AttentionState { q: q.primitive, k: k.primitive, v: v.primitive, p, mask_pad, heads }, out)
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
    use crate::test_support::{NON_FINITE, has_non_finite, max_relative_error, poisoned, seeded_normal};
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

    /// Seeded random `q`, `k`, `v`, an upstream gradient, and the padding mask (every third key
    /// after the first of each sample, shifted by the sample's index).
    fn random_inputs(case: Case) -> ([Tensor<Flex, 3>; 4], Option<Tensor<Flex, 2, Bool>>) {
        let device = Default::default();
        // Seeded by the case and the input: the same values on every run.
        let seed = (case.batch * 1_000_000 + case.queries * 10_000 + case.keys * 100 + case.width) as u64;
        let mut input = 0u64;
        let mut normal = |len: usize| {
            input += 1;
            seeded_normal([case.batch, len, case.width], 1.5, seed * 8 + input)
        };
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

    /// The inputs of `case` with `value` (NaN or an infinity) in `input` (0: q, 1: k, 2: v) at
    /// two places: sample 0's first token, and a token of the last sample (masked in the
    /// masked cases' keys and values).
    fn poisoned_inputs(case: Case, input: usize, value: f32) -> ([Tensor<Flex, 3>; 4], Option<Tensor<Flex, 2, Bool>>) {
        let (mut tensors, mask) = random_inputs(case);
        let len = if input == 0 { case.queries } else { case.keys };
        let b = case.batch - 1;
        let masked_token = match (3 - b % 3) % 3 {
            0 => 3, // the mask: j > 0 and (j + b) % 3 == 0
            j => j,
        };
        let last = (b * len + masked_token.min(len - 1)) * case.width + 1;
        tensors[input] = poisoned(&tensors[input], &[(3, value), (last, value)]);
        (tensors, mask)
    }

    /// A NaN or an infinity in a query, key or value gives, in the output and in every input's
    /// gradient, NaN and infinities where the composed reference (and PyTorch) gives them, and
    /// the reference's finite values elsewhere: a NaN score must not drop out of its softmax.
    #[test]
    fn non_finite_inputs_give_the_non_finite_values_of_the_reference() {
        for case in CASES {
            for (input, value) in (0..3).flat_map(|i| NON_FINITE.map(|v| (i, v))) {
                let inputs = poisoned_inputs(case, input, value);
                let got = run::<Flex>(case, &inputs, true, [true; 3], &Default::default());
                // A NaN always reaches the output; an infinite key may only make its scores -inf
                // (probability 0), which leaves the output finite, as in the reference.
                assert!(!value.is_nan() || has_non_finite(&got[0]), "{case:?}: a NaN in input {input} reaches the output");
                assert_matches_reference(case, &inputs, [true; 3], got);
            }
        }
    }

    /// `flex`'s softmax rows and their backward against burn's operations; masked scores get
    /// exactly 0.
    #[test]
    fn the_flex_softmax_matches_burns_operations() {
        let device = Default::default();
        let scale = 0.25;
        let x = Tensor::<Flex, 2>::random([10, 37], Distribution::Normal(0.0, 3.0), &device);
        let x = x.clone().mask_fill(x.greater_elem(4.0), MASKED_SCORE / scale);
        let scores = x.to_data().to_vec::<f32>().unwrap();
        let mut p = scores.clone();
        softmax_rows(&mut p, 37, scale);
        let p = Tensor::<Flex, 2>::from_data(TensorData::new(p, [10, 37]), &device);
        assert!(max_relative_error(p.clone(), softmax(x.mul_scalar(scale), 1)) < 1e-6);
        let probabilities = p.to_data().to_vec::<f32>().unwrap();
        assert!(scores.iter().filter(|&&s| s == MASKED_SCORE / scale).count() > 10, "the test masks some scores");
        for (s, p) in scores.iter().zip(&probabilities) {
            assert!(*s != MASKED_SCORE / scale || *p == 0.0, "a masked score has probability {p}");
        }

        let grad = Tensor::<Flex, 2>::random([10, 37], Distribution::Normal(0.0, 3.0), &device);
        let mut got = grad.to_data().to_vec::<f32>().unwrap();
        softmax_backward_rows(&mut got, &probabilities, 37, scale);
        let expected = (p.clone() * (grad.clone() - (p * grad).sum_dim(1))).mul_scalar(scale);
        assert!(max_relative_error(Tensor::from_data(TensorData::new(got, [10, 37]), &device), expected) < 1e-5);
    }

    /// `flex`'s kernels read `q`, `k` and `v` through their strides: a slice of one packed
    /// `[batch, len, 3·width]` projection, a `[len, batch, width]` tensor's transposed view, an
    /// offset view; with and without a mask, with and without autodiff, against the composed
    /// reference.
    #[test]
    fn the_flex_kernels_read_strided_views() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let (batch, len, width, heads) = (3, 6, 8, 2);
        let random = |shape: [usize; 3]| Tensor::<AB, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let sources = [random([batch, len, 3 * width]), random([len, batch, width]), random([batch + 1, len, width])];
        let views = |[packed, k, v]: &[Tensor<AB, 3>; 3]| (packed.clone().narrow(2, width, width), k.clone().swap_dims(0, 1), v.clone().narrow(0, 1, batch));
        let upstream = Tensor::<AB, 3>::random([batch, len, width], Distribution::Normal(0.0, 1.0), &device);
        let mask = Tensor::<AB, 2, Bool>::from_data(TensorData::new((0..batch * len).map(|i| i % 4 == 3).collect::<Vec<_>>(), [batch, len]), &device);
        for mask in [None, Some(mask)] {
            // Each backward pass consumes the graph of its views: one set of views for each.
            let (q, k, v) = views(&sources);
            let expected = multi_head_attention_reference(q, k, v, mask.clone(), heads);
            let (q, k, v) = views(&sources);
            let got = multi_head_attention(q.clone().inner(), k.clone().inner(), v.clone().inner(), mask.clone().map(|m| m.inner()), heads);
            assert!(max_relative_error(got, expected.clone().inner()) < 1e-5, "inference, mask {}", mask.is_some());
            let got = multi_head_attention(q, k, v, mask.clone(), heads);
            assert!(max_relative_error(got.clone().inner(), expected.clone().inner()) < 1e-5, "forward, mask {}", mask.is_some());
            let (ours, reference) = ((got * upstream.clone()).sum().backward(), (expected * upstream.clone()).sum().backward());
            for (i, source) in sources.iter().enumerate() {
                let error = max_relative_error(source.grad(&ours).unwrap(), source.grad(&reference).unwrap());
                assert!(error < 1e-4, "gradient of source {i} off by {error:e}, mask {}", mask.is_some());
            }
        }
    }

    /// Every case on `B` with all three inputs tracked, against the composed reference on `flex`.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn assert_matches_reference_on<B: FastAttention>(device: &B::Device) {
        for case in CASES {
            let inputs = random_inputs(case);
            let got = run::<B>(case, &inputs, true, [true; 3], device);
            assert_matches_reference(case, &inputs, [true; 3], got);
            for value in NON_FINITE {
                let inputs = poisoned_inputs(case, 1, value);
                assert_matches_reference(case, &inputs, [true; 3], run::<B>(case, &inputs, true, [true; 3], device));
            }
        }
    }

    crate::test_support::gpu_backend_tests!(assert_matches_reference_on);

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
