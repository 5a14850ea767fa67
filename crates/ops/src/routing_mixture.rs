//! The routing hot path as one operation with a backend-extension hook: a softmax over sources
//! (with temperature and top-k) fused with the weighted mixture of the sources' prompt tokens.
//!
//! ```text
//! w[b, g]      = softmax(top_k(logits[b, g]) / temperature)             over the sources s
//! out[b, l, :] = Σ_s w[b, g(l), s] · source_s[l, :]                     g(l) = l / (len / groups)
//! ```
//!
//! The sources are `shared` prompts (the same for every instance, `[shared, len, width]`) and,
//! optionally, one per-instance prompt (`own`, `[batch, len, width]`) as the last source. Both
//! methods are instances of it:
//! - MoPE's dynamic prompt: one group (every token of the prompt takes the instance's expert
//!   weights), the experts as shared sources, no own source (`mope_core::PromptExperts::mix_routed`);
//! - pMoE's dispatcher: one group per prompt slot, every expert's prompt tokens as shared sources
//!   and the prompt the expert carried from its previous layer as the own source.
//!
//! [`RoutingMixture`] is implemented by a backend that has a fused kernel for it; its default body is
//! the composed-tensor reference ([`softmax_mix_reference`]: a mask, a softmax, a batched matmul),
//! which every backend can run. Under autodiff the operation has a hand-written backward, so a
//! backend's fused forward is differentiable without a backward of its own (`P·D`: the tokens of a
//! group, `h`: the upstream gradient against each source):
//!
//! ```text
//! h[b, g, s]        = Σ_{l ∈ g, d} grad[b, l, d] · source_s[(b,) l, d]
//! d logits[b, g, s] = w ⊙ (h − Σ_s' w ⊙ h) / temperature                 (0 outside the top k)
//! d shared[s, l]    = Σ_b w[b, g(l), s] · grad[b, l]
//! d own[b, l]       = w[b, g(l), last] · grad[b, l]
//! ```
//!
//! With the `wgpu` or `cuda` feature, CubeCL backends run the forward as one kernel
//! (`routing_mixture_cube`), checked against the reference on lavapipe in CI:
//! `cargo test -p ops --features wgpu --lib routing_mixture` (Debian: `mesa-vulkan-drivers`).
//! Ties between logits at the top-k boundary go to the lower source index in the kernel; the
//! reference takes burn's sort order.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::softmax;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::primitive::{primitive, tensor};

/// How logits become mixture weights: `softmax(top_k(logits) / temperature)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoutingSoftmax {
    /// Logits are divided by it before the softmax; positive.
    pub temperature: f32,
    /// Keep only the `k` largest logits of each row; 0 (or `k` ≥ the number of sources) keeps all.
    pub top_k: usize,
}

impl RoutingSoftmax {
    /// A plain softmax: temperature 1, every source.
    pub const DENSE: Self = Self { temperature: 1.0, top_k: 0 };

    /// A softmax at `temperature` over the `top_k` largest logits (`None`: all).
    ///
    /// # Panics
    /// If the temperature is not positive, or `top_k` is `Some(0)`.
    pub fn new(temperature: f64, top_k: Option<usize>) -> Self {
        assert!(temperature > 0.0, "temperature must be positive, got {temperature}");
        assert!(top_k != Some(0), "top_k must be at least 1");
        Self { temperature: temperature as f32, top_k: top_k.unwrap_or(0) }
    }

    /// Whether some of `sources` are masked out.
    pub fn is_sparse(self, sources: usize) -> bool {
        self.top_k > 0 && self.top_k < sources
    }
}

/// A backend that can run the fused softmax-mixture of prompt sources.
pub trait RoutingMixture: Backend {
    /// `out[b, l] = Σ_s softmax(top_k(logits[b, g(l)]) / temperature)[s] · source_s[l]`, the
    /// sources being `shared`'s rows, then `own[b]` if given.
    ///
    /// # Shapes
    /// - `logits`: `[batch, groups, sources]` with `sources = shared + (own ? 1 : 0)`
    /// - `shared`: `[shared, len, width]`, `own`: `[batch, len, width]`; `groups` divides `len`
    /// - output: `[batch, len, width]`
    fn softmax_mix(logits: FloatTensor<Self>, shared: FloatTensor<Self>, own: Option<FloatTensor<Self>>, softmax: RoutingSoftmax) -> FloatTensor<Self> {
        softmax_mix_reference_primitive::<Self>(logits, shared, own, softmax)
    }
}

/// [`softmax_mix_reference`] on primitives: the default body of [`RoutingMixture::softmax_mix`],
/// and a kernel's fallback for shapes it does not take.
pub fn softmax_mix_reference_primitive<B: Backend>(logits: FloatTensor<B>, shared: FloatTensor<B>, own: Option<FloatTensor<B>>, softmax: RoutingSoftmax) -> FloatTensor<B> {
    primitive(softmax_mix_reference::<B>(tensor(logits), tensor(shared), own.map(tensor), softmax))
}


/// Checks the shapes of a [`RoutingMixture::softmax_mix`] call; returns `(batch, groups, sources)`.
///
/// # Panics
/// With the mismatching dimensions named.
pub fn check_shapes(logits: [usize; 3], shared: [usize; 3], own: Option<[usize; 3]>) -> [usize; 3] {
    let [batch, groups, sources] = logits;
    let [num_shared, len, width] = shared;
    let expected = num_shared + usize::from(own.is_some());
    assert_eq!(sources, expected, "{sources} logits per row for {num_shared} shared sources{}", if own.is_some() { " and an own one" } else { "" });
    assert!(groups > 0 && len % groups == 0, "{groups} routing groups do not divide the {len} prompt tokens");
    if let Some(own) = own {
        assert_eq!(own, [batch, len, width], "the own source must be [batch, len, width] = {:?}", [batch, len, width]);
    }
    logits
}

/// The weights of [`RoutingMixture::softmax_mix`]: `softmax(top_k(logits) / temperature)` over the
/// last dimension, composed from tensor operations.
///
/// # Shapes
/// - `logits`: `[batch, groups, sources]`; output the same
pub fn routing_weights<B: Backend>(logits: Tensor<B, 3>, softmax_of: RoutingSoftmax) -> Tensor<B, 3> {
    routing_weights_and_dropped(logits, softmax_of).0
}

/// [`routing_weights`], and where the top k drop a source (`true`; `None` when none is dropped).
///
/// # Shapes
/// - `logits`: `[batch, groups, sources]`; both outputs the same
fn routing_weights_and_dropped<B: Backend>(logits: Tensor<B, 3>, softmax_of: RoutingSoftmax) -> (Tensor<B, 3>, Option<Tensor<B, 3, Bool>>) {
    let [batch, groups, sources] = logits.dims();
    let mut scaled = if softmax_of.temperature == 1.0 { logits } else { logits / softmax_of.temperature };
    let mut dropped = None;
    if softmax_of.is_sparse(sources) {
        let drop = top_k_mask(scaled.clone().reshape([batch * groups, sources]), softmax_of.top_k).reshape([batch, groups, sources]).bool_not();
        scaled = scaled.mask_fill(drop.clone(), f32::NEG_INFINITY);
        dropped = Some(drop);
    }
    (softmax(scaled, 2), dropped)
}

/// `true` at the `k` largest entries of each row.
///
/// # Shapes
/// - `logits`: `[rows, sources]`; output `[rows, sources]`
pub fn top_k_mask<B: Backend>(logits: Tensor<B, 2>, k: usize) -> Tensor<B, 2, Bool> {
    let [rows, sources] = logits.dims();
    let device = logits.device();
    let (_, indices) = logits.sort_descending_with_indices(1);
    let chosen: Tensor<B, 2, Int> = indices.narrow(1, 0, k);
    Tensor::<B, 2>::zeros([rows, sources], &device)
        .scatter(1, chosen, Tensor::ones([rows, k], &device), burn::tensor::IndexingUpdateOp::Add)
        .greater_elem(0.5)
}

/// The composed-tensor reference of [`RoutingMixture::softmax_mix`], the fallback of every backend.
///
/// # Shapes
/// As [`RoutingMixture::softmax_mix`].
pub fn softmax_mix_reference<B: Backend>(logits: Tensor<B, 3>, shared: Tensor<B, 3>, own: Option<Tensor<B, 3>>, softmax_of: RoutingSoftmax) -> Tensor<B, 3> {
    check_shapes(logits.dims(), shared.dims(), own.as_ref().map(Tensor::dims));
    mix_with_weights(routing_weights(logits, softmax_of), shared, own)
}

/// The mixture for given weights.
///
/// # Shapes
/// - `weights`: `[batch, groups, sources]`, `shared`: `[shared, len, width]`, `own`: `[batch, len, width]`
/// - output: `[batch, len, width]`
fn mix_with_weights<B: Backend>(weights: Tensor<B, 3>, shared: Tensor<B, 3>, own: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
    let [batch, groups, _] = weights.dims();
    let [num_shared, len, width] = shared.dims();
    let group_size = len / groups * width;
    let shared_weights = weights.clone().narrow(2, 0, num_shared).swap_dims(0, 1); // [groups, batch, shared]
    let shared_by_group = shared.reshape([num_shared, groups, group_size]).swap_dims(0, 1); // [groups, shared, P·D]
    let mixed = shared_weights.matmul(shared_by_group).swap_dims(0, 1); // [batch, groups, P·D]
    let mixed = match own {
        None => mixed,
        Some(own) => mixed + weights.narrow(2, num_shared, 1) * own.reshape([batch, groups, group_size]),
    };
    mixed.reshape([batch, len, width])
}

/// The gradients of [`RoutingMixture::softmax_mix`] against logits, shared and own sources, from the
/// forward's weights (the formulas in the module docs).
///
/// # Shapes
/// - `grad`: `[batch, len, width]`, `weights`: `[batch, groups, sources]`, the sources as in the forward
fn softmax_mix_backward<B: Backend>(
    grad: Tensor<B, 3>,
    weights: Tensor<B, 3>,
    shared: Tensor<B, 3>,
    own: Option<Tensor<B, 3>>,
    temperature: f32,
) -> (Tensor<B, 3>, Tensor<B, 3>, Option<Tensor<B, 3>>) {
    let [batch, groups, _] = weights.dims();
    let [num_shared, len, width] = shared.dims();
    let group_size = len / groups * width;
    let grad = grad.reshape([batch, groups, group_size]);
    let grad_by_group = grad.clone().swap_dims(0, 1); // [groups, batch, P·D]
    let shared_by_group = shared.reshape([num_shared, groups, group_size]).swap_dims(0, 1); // [groups, shared, P·D]
    let mut against = grad_by_group.clone().matmul(shared_by_group.swap_dims(1, 2)).swap_dims(0, 1); // [batch, groups, shared]
    let own = own.map(|own| own.reshape([batch, groups, group_size]));
    if let Some(own) = &own {
        against = Tensor::cat(vec![against, (grad.clone() * own.clone()).sum_dim(2)], 2);
    }
    let centred = against.clone() - (against * weights.clone()).sum_dim(2);
    let d_logits = (weights.clone() * centred) / temperature;
    let shared_weights = weights.clone().narrow(2, 0, num_shared).swap_dims(0, 1); // [groups, batch, shared]
    let d_shared = shared_weights.swap_dims(1, 2).matmul(grad_by_group).swap_dims(0, 1).reshape([num_shared, len, width]);
    let d_own = own.map(|_| (weights.narrow(2, num_shared, 1) * grad).reshape([batch, len, width]));
    (d_logits, d_shared, d_own)
}

impl RoutingMixture for burn::backend::Flex {}

/// The backward's state: the forward's weights, where the top k dropped a source, the shared and
/// own sources, the temperature.
type MixState<B> = (FloatTensor<B>, Option<BoolTensor<B>>, FloatTensor<B>, Option<FloatTensor<B>>, f32);

/// [`RoutingMixture::softmax_mix`] as a node of the autodiff graph, `N` = 2 (logits, shared) or 3 (and own).
#[derive(Debug)]
struct SoftmaxMix;

impl<B: Backend, const N: usize> Backward<B, N> for SoftmaxMix {
    type State = MixState<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (weights, dropped, shared, own, temperature) = ops.state;
        let grad = tensor::<B, 3>(grads.consume::<B>(&ops.node));
        let (d_logits, d_shared, d_own) = softmax_mix_backward(grad, tensor(weights), tensor(shared), own.map(tensor), temperature);
        // A dropped logit's gradient is exactly zero, as the forward's fill makes it (not
        // `0 · (h − Σ w h)`, NaN where a kept source is NaN).
        let d_logits = match dropped {
            Some(dropped) => d_logits.mask_fill(Tensor::<B, 3, Bool>::from_primitive(dropped), 0.0),
            None => d_logits,
        };
        let mut parents = ops.parents.into_iter();
        let mut register = |g: Option<Tensor<B, 3>>| {
            if let (Some(Some(node)), Some(g)) = (parents.next(), g) {
                grads.register::<B>(node.id, primitive(g));
            }
        };
        register(Some(d_logits));
        register(Some(d_shared));
        register(d_own);
    }
}

impl<B: RoutingMixture, C: CheckpointStrategy> RoutingMixture for Autodiff<B, C> {
    fn softmax_mix(logits: FloatTensor<Self>, shared: FloatTensor<Self>, own: Option<FloatTensor<Self>>, softmax_of: RoutingSoftmax) -> FloatTensor<Self> {
        fn run<B: RoutingMixture, C: CheckpointStrategy, const N: usize>(
            kind: OpsKind<SoftmaxMix, B, MixState<B>, C, N>,
            logits: FloatTensor<B>,
            shared: FloatTensor<B>,
            own: Option<FloatTensor<B>>,
            softmax_of: RoutingSoftmax,
        ) -> FloatTensor<Autodiff<B, C>> {
            match kind {
                OpsKind::Tracked(prep) => {
                    let (weights, dropped) = routing_weights_and_dropped::<B>(tensor(logits.clone()), softmax_of);
                    let output = B::softmax_mix(logits, shared.clone(), own.clone(), softmax_of);
                    prep.finish((primitive(weights), dropped.map(Tensor::into_primitive), shared, own, softmax_of.temperature), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::softmax_mix(logits, shared, own, softmax_of)),
            }
        }
        match own {
            None => {
                let kind = Backward::<B, 2>::prepare::<C>(SoftmaxMix, [logits.node.clone(), shared.node.clone()]).compute_bound().stateful();
                run(kind, logits.primitive, shared.primitive, None, softmax_of)
            }
            Some(own) => {
                let nodes = [logits.node.clone(), shared.node.clone(), own.node.clone()];
                let kind = Backward::<B, 3>::prepare::<C>(SoftmaxMix, nodes).compute_bound().stateful();
                run(kind, logits.primitive, shared.primitive, Some(own.primitive), softmax_of)
            }
        }
    }
}

/// [`RoutingMixture::softmax_mix`] on tensors.
///
/// # Shapes
/// - `logits`: `[batch, groups, sources]` with `sources = shared + (own ? 1 : 0)`
/// - `shared`: `[shared, len, width]`, `own`: `[batch, len, width]`; `groups` divides `len`
/// - output: `[batch, len, width]`
///
/// # Panics
/// If the shapes disagree (the message names the dimensions).
pub fn softmax_mix<B: RoutingMixture>(logits: Tensor<B, 3>, shared: Tensor<B, 3>, own: Option<Tensor<B, 3>>, softmax_of: RoutingSoftmax) -> Tensor<B, 3> {
    // Every implementation checks the shapes ([`check_shapes`]) before it runs.
    tensor(B::softmax_mix(primitive(logits), primitive(shared), own.map(primitive), softmax_of))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use crate::test_support::{NON_FINITE, has_non_finite, max_relative_error, poisoned, seeded_normal};

    type AB = Autodiff<Flex>;

    /// One test case: shapes and the softmax.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Case {
        pub batch: usize,
        pub groups: usize,
        pub shared: usize,
        pub own: bool,
        pub len: usize,
        pub width: usize,
        pub softmax: RoutingSoftmax,
    }

    /// MoPE-like (one group, no own source) and pMoE-like (a group per slot, an own source) cases,
    /// dense and top-k, with a temperature; the second spreads each routing row over two cubes of
    /// the CubeCL kernel, the last has more sources than the kernel takes (its fallback).
    pub(crate) const CASES: [Case; 5] = [
        Case { batch: 3, groups: 1, shared: 4, own: false, len: 2, width: 5, softmax: RoutingSoftmax::DENSE },
        Case { batch: 32, groups: 1, shared: 8, own: false, len: 6, width: 200, softmax: RoutingSoftmax { temperature: 0.1, top_k: 2 } },
        Case { batch: 4, groups: 3, shared: 2, own: true, len: 3, width: 7, softmax: RoutingSoftmax { temperature: 0.5, top_k: 0 } },
        Case { batch: 5, groups: 2, shared: 5, own: true, len: 4, width: 16, softmax: RoutingSoftmax { temperature: 2.0, top_k: 3 } },
        Case { batch: 2, groups: 1, shared: 70, own: true, len: 2, width: 3, softmax: RoutingSoftmax { temperature: 1.0, top_k: 8 } },
    ];

    /// Seeded random logits, shared and own sources, and an upstream gradient for `case`, on
    /// `flex`: the same values on every run.
    pub(crate) fn random_inputs(case: Case) -> [Tensor<Flex, 3>; 4] {
        let sources = case.shared + usize::from(case.own);
        let seed = (case.batch * 100_000 + case.groups * 10_000 + case.shared * 100 + case.len * 10 + case.width) as u64;
        let mut input = 0u64;
        let mut normal = |shape: [usize; 3], std| {
            input += 1;
            seeded_normal(shape, std, seed * 8 + input)
        };
        [
            normal([case.batch, case.groups, sources], 2.0),
            normal([case.shared, case.len, case.width], 1.0),
            normal([case.batch, case.len, case.width], 1.0),
            normal([case.batch, case.len, case.width], 1.0),
        ]
    }

    /// Forward output and the gradients of logits, shared and own sources (a placeholder without
    /// an own source), on `Autodiff<B>`, of `sum(mix · upstream)`.
    pub(crate) fn run_op<B: RoutingMixture>(case: Case, inputs: &[Tensor<Flex, 3>; 4], fused: bool, device: &B::Device) -> [Tensor<Flex, 3>; 4] {
        let to = |t: &Tensor<Flex, 3>| Tensor::<Autodiff<B>, 3>::from_data(t.to_data(), device).require_grad();
        let (logits, shared, own) = (to(&inputs[0]), to(&inputs[1]), to(&inputs[2]));
        let own = case.own.then_some(own);
        let out = if fused {
            softmax_mix(logits.clone(), shared.clone(), own.clone(), case.softmax)
        } else {
            softmax_mix_reference(logits.clone(), shared.clone(), own.clone(), case.softmax)
        };
        let upstream = Tensor::<Autodiff<B>, 3>::from_data(inputs[3].to_data(), device);
        let grads = (out.clone() * upstream).sum().backward();
        let back = |t: Tensor<B, 3>| Tensor::<Flex, 3>::from_data(t.into_data(), &Default::default());
        let none = Tensor::<Flex, 3>::zeros([1, 1, 1], &Default::default());
        [
            back(out.inner()),
            back(logits.grad(&grads).unwrap()),
            back(shared.grad(&grads).unwrap()),
            own.map_or(none, |own| back(own.grad(&grads).unwrap())),
        ]
    }

    /// Asserts that every output of `got` is within 1e-4 of the composed reference on `flex`.
    pub(crate) fn assert_matches_reference(case: Case, inputs: &[Tensor<Flex, 3>; 4], got: [Tensor<Flex, 3>; 4]) {
        assert_matches_reference_named(case, "finite inputs", inputs, got);
    }

    /// [`assert_matches_reference`] for inputs described by `what`.
    pub(crate) fn assert_matches_reference_named(case: Case, what: &str, inputs: &[Tensor<Flex, 3>; 4], got: [Tensor<Flex, 3>; 4]) {
        let expected = run_op::<Flex>(case, inputs, false, &Default::default());
        let compared = if case.own { 4 } else { 3 };
        for (name, (got, expected)) in ["output", "d logits", "d shared", "d own"].iter().zip(got.into_iter().zip(expected)).take(compared) {
            let error = max_relative_error(got, expected);
            assert!(error < 1e-4, "{case:?}, {what}: {name} off by {error:e}");
        }
    }

    #[test]
    fn forward_and_gradients_match_the_composed_reference() {
        for case in CASES {
            let inputs = random_inputs(case);
            let got = run_op::<Flex>(case, &inputs, true, &Default::default());
            assert_matches_reference(case, &inputs, got);
        }
    }

    /// `case`'s inputs, each with one NaN or infinity in the logits (instance 0's first), the
    /// shared sources (source 0) or the own source: one set per input and value.
    pub(crate) fn poisoned_inputs(case: Case) -> Vec<(String, [Tensor<Flex, 3>; 4])> {
        let clean = random_inputs(case);
        let inputs = if case.own { 3 } else { 2 };
        (0..inputs)
            .flat_map(|input| NON_FINITE.map(|value| (input, value)))
            .map(|(input, value)| {
                let mut poisoned_set = clean.clone();
                poisoned_set[input] = poisoned(&clean[input], &[(1, value)]);
                (format!("{value} in {}", ["logits", "shared", "own"][input]), poisoned_set)
            })
            .collect()
    }

    /// A NaN or an infinity in the logits or the sources gives NaN and infinities where the
    /// composed reference (a softmax and a matmul, as PyTorch's) gives them, forward and backward:
    /// a source outside an instance's top k still meets its zero weight (`0 · NaN = NaN`).
    #[test]
    fn non_finite_inputs_give_the_non_finite_values_of_the_reference() {
        for case in CASES {
            for (what, inputs) in poisoned_inputs(case) {
                let got = run_op::<Flex>(case, &inputs, true, &Default::default());
                assert!(what.starts_with("-inf") || has_non_finite(&got[0]), "{case:?}: a {what} reaches the output");
                assert_matches_reference_named(case, &what, &inputs, got);
            }
        }
    }

    /// The reference against the formula by hand, element by element (so that the fused forms
    /// and the reference cannot agree on a wrong answer).
    #[test]
    fn the_reference_is_the_formula() {
        for case in CASES {
            let [logits, shared, own, _] = random_inputs(case);
            let got = softmax_mix_reference(logits.clone(), shared.clone(), case.own.then(|| own.clone()), case.softmax);
            let (l, s, o) = (logits.to_data().to_vec::<f32>().unwrap(), shared.to_data().to_vec::<f32>().unwrap(), own.to_data().to_vec::<f32>().unwrap());
            let got = got.to_data().to_vec::<f32>().unwrap();
            let sources = case.shared + usize::from(case.own);
            for b in 0..case.batch {
                for t in 0..case.len {
                    let g = t / (case.len / case.groups);
                    let row = &l[(b * case.groups + g) * sources..][..sources];
                    let mut order: Vec<usize> = (0..sources).collect();
                    order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
                    let kept = if case.softmax.is_sparse(sources) { &order[..case.softmax.top_k] } else { &order[..] };
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let exp: Vec<f32> = (0..sources).map(|i| if kept.contains(&i) { ((row[i] - max) / case.softmax.temperature).exp() } else { 0.0 }).collect();
                    let total: f32 = exp.iter().sum();
                    for d in 0..case.width {
                        let value = |i: usize| if i < case.shared { s[(i * case.len + t) * case.width + d] } else { o[(b * case.len + t) * case.width + d] };
                        let expected: f32 = (0..sources).map(|i| exp[i] / total * value(i)).sum();
                        let actual = got[(b * case.len + t) * case.width + d];
                        assert!((actual - expected).abs() < 1e-5, "{case:?} at {b},{t},{d}: {actual} vs {expected}");
                    }
                }
            }
        }
    }

    #[test]
    fn untracked_inputs_take_the_plain_forward() {
        let device = Default::default();
        let logits = Tensor::<AB, 3>::random([2, 1, 3], Distribution::Default, &device);
        let prompts = Tensor::<AB, 3>::random([3, 2, 4], Distribution::Default, &device);
        let out = softmax_mix(logits.clone(), prompts.clone(), None, RoutingSoftmax::DENSE);
        let reference = softmax_mix_reference(logits, prompts, None, RoutingSoftmax::DENSE);
        assert!(max_relative_error(out.inner(), reference.inner()) < 1e-5);
    }

    #[test]
    #[should_panic(expected = "3 logits per row for 3 shared sources and an own one")]
    fn a_missing_logit_is_named() {
        let device = Default::default();
        let logits = Tensor::<Flex, 3>::zeros([2, 1, 3], &device);
        softmax_mix(logits, Tensor::zeros([3, 2, 4], &device), Some(Tensor::zeros([2, 2, 4], &device)), RoutingSoftmax::DENSE);
    }

    #[test]
    #[should_panic(expected = "4 routing groups do not divide the 6 prompt tokens")]
    fn groups_must_divide_the_tokens() {
        let device = Default::default();
        softmax_mix(Tensor::<Flex, 3>::zeros([2, 4, 3], &device), Tensor::zeros([3, 6, 4], &device), None, RoutingSoftmax::DENSE);
    }

    /// The CubeCL kernel on wgpu (lavapipe on a CPU-only machine) against the composed
    /// reference on `flex`: forward and gradients, fresh random inputs, every case.
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_wgpu_kernel_matches_the_reference() {
        for case in CASES {
            let inputs = random_inputs(case);
            let got = run_op::<burn::backend::Wgpu>(case, &inputs, true, &Default::default());
            assert_matches_reference(case, &inputs, got);
            for (what, inputs) in poisoned_inputs(case) {
                let got = run_op::<burn::backend::Wgpu>(case, &inputs, true, &Default::default());
                assert_matches_reference_named(case, &what, &inputs, got);
            }
        }
    }

    /// The same on CUDA when a GPU is present; says so when it is skipped.
    #[cfg(feature = "cuda")]
    #[test]
    fn the_cuda_kernel_matches_the_reference() {
        use burn::backend::Cuda;
        if !crate::test_support::cuda_device_opens("the_cuda_kernel_matches_the_reference") {
            return;
        }
        for case in CASES {
            let inputs = random_inputs(case);
            let got = run_op::<Cuda>(case, &inputs, true, &Default::default());
            assert_matches_reference(case, &inputs, got);
            for (what, inputs) in poisoned_inputs(case) {
                let got = run_op::<Cuda>(case, &inputs, true, &Default::default());
                assert_matches_reference_named(case, &what, &inputs, got);
            }
        }
    }
}
