//! [`FusedRouting::softmax_mix`] as one CubeCL kernel, for the `wgpu` and `cuda` backends (and
//! any other CubeCL runtime). Each routing row `(b, g)` is split over cubes of at most 256 units
//! of [`ELEMENTS_PER_UNIT`] output elements each, so that a long row still spreads over the
//! device. In each cube, the first `S` units each
//! compute one source's weight (the row's max, top-k ranks when sparse, exponentials at the
//! temperature) into shared memory; after one barrier every unit takes its elements of the row's
//! `P·D`, each a dot product of the weights with the sources' values there, accumulated in a
//! register and written once. Rows with more than [`MAX_SOURCES`] sources take the composed
//! reference. Its backward is the hand-written one of [`crate::fused`], shared by
//! every backend.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::prelude::*;

use crate::fused::{FusedRouting, RoutingSoftmax, check_shapes};

/// Most sources a routing row may have for the kernel (their weights live in shared memory).
pub const MAX_SOURCES: usize = 64;

/// Output elements each unit computes (the weights are computed once a cube, for this many times
/// its units' elements).
pub const ELEMENTS_PER_UNIT: usize = 4;

/// `output[b, l, d] = Σ_s w[b, g(l), s] · source_s[(b,) l, d]`, `w` the softmax at
/// `1 / inv_temperature` over the `top_k` largest logits of the row (all when `top_k` is 0).
/// `own` is read only for the last source when the row has one more logit than `shared` rows.
/// Launched with `cubes_per_row` cubes per routing row and at least `sources` units per cube.
#[cube(launch)]
fn softmax_mix_kernel<F: Float>(
    logits: &Tensor<F>,
    shared: &Tensor<F>,
    own: &Tensor<F>,
    output: &mut Tensor<F>,
    inv_temperature: f32,
    top_k: usize,
    cubes_per_row: usize,
) {
    let groups = logits.shape(1);
    let sources = logits.shape(2);
    let routing_row = CUBE_POS / cubes_per_row;
    // Uniform across the cube: a whole cube leaves, or none of its units.
    if routing_row >= logits.shape(0) * groups {
        terminate!();
    }
    let row = routing_row * sources;
    let unit = UNIT_POS as usize;

    let mut weights = SharedMemory::<F>::new(MAX_SOURCES);
    if unit < sources {
        let sparse = top_k > 0 && top_k < sources;
        let scale = F::cast_from(inv_temperature);
        let mut max = logits[row];
        for s in 1..sources {
            max = F::max(max, logits[row + s]);
        }
        let mut denominator = F::new(0.0);
        for s in 0..sources {
            if !sparse || rank(logits, row, sources, s) < top_k {
                denominator += F::exp((logits[row + s] - max) * scale);
            }
        }
        let mut weight = F::new(0.0);
        if !sparse || rank(logits, row, sources, unit) < top_k {
            weight = F::exp((logits[row + unit] - max) * scale) / denominator;
        }
        weights[unit] = weight;
    }
    sync_cube();

    let len = output.shape(1);
    let width = output.shape(2);
    let num_shared = shared.shape(0);
    let source_stride = len * width;
    let group_size = len / groups * width;
    let group_offset = (routing_row % groups) * group_size;
    let out_offset = (routing_row / groups) * source_stride + group_offset;
    let stride = CUBE_DIM as usize;
    let first = (CUBE_POS % cubes_per_row) * stride * ELEMENTS_PER_UNIT + unit;
    let mut count = 0;
    if first < group_size {
        count = (group_size - first + stride - 1) / stride;
        if count > ELEMENTS_PER_UNIT {
            count = ELEMENTS_PER_UNIT;
        }
    }
    for i in 0..count {
        let j = first + i * stride;
        let mut acc = F::new(0.0);
        for s in 0..num_shared {
            let w = weights[s];
            // Masked (top-k) sources are skipped, uniformly across the cube.
            if w != F::new(0.0) {
                acc += w * shared[s * source_stride + group_offset + j];
            }
        }
        if sources > num_shared {
            acc += weights[num_shared] * own[out_offset + j];
        }
        output[out_offset + j] = acc;
    }
}

/// How many of the row's logits rank before source `s` (larger, or equal at a lower index).
#[cube]
fn rank<F: Float>(logits: &Tensor<F>, row: usize, sources: usize, s: usize) -> usize {
    let logit = logits[row + s];
    let mut rank = 0;
    for r in 0..sources {
        let other = logits[row + r];
        if other > logit || (other == logit && r < s) {
            rank += 1;
        }
    }
    rank
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FusedRouting for CubeBackend<R, F, I, BT> {
    fn softmax_mix(logits: FloatTensor<Self>, shared: FloatTensor<Self>, own: Option<FloatTensor<Self>>, softmax: RoutingSoftmax) -> FloatTensor<Self> {
        let dims = |t: &FloatTensor<Self>| {
            let s = t.shape();
            [s[0], s[1], s[2]]
        };
        let [batch, groups, _] = check_shapes(dims(&logits), dims(&shared), own.as_ref().map(dims));
        let [_, len, width] = dims(&shared);
        let sources = dims(&logits)[2];
        if sources > MAX_SOURCES {
            return crate::fused::softmax_mix_reference_primitive::<Self>(logits, shared, own, softmax);
        }
        let (logits, shared) = (into_contiguous(logits), into_contiguous(shared));
        // Without an own source the kernel never reads it: any bound buffer does.
        let own = own.map_or_else(|| shared.clone(), into_contiguous);
        let client = logits.client.clone();
        let output = empty_device::<R, F>(client.clone(), logits.device.clone(), Shape::new([batch, len, width]));
        let group_size = len / groups * width;
        let cube_dim = group_size.next_power_of_two().clamp(MAX_SOURCES, 256);
        let cubes_per_row = group_size.div_ceil(cube_dim * ELEMENTS_PER_UNIT);
        let cubes = batch * groups * cubes_per_row;
        let cube_count = if cubes <= 65_535 { CubeCount::new_1d(cubes as u32) } else { CubeCount::new_2d(65_535, cubes.div_ceil(65_535) as u32) };
        softmax_mix_kernel::launch::<F, R>(
            &client,
            cube_count,
            CubeDim::new_1d(cube_dim as u32),
            logits.into_tensor_arg(),
            shared.into_tensor_arg(),
            own.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            1.0 / softmax.temperature,
            softmax.top_k,
            cubes_per_row,
        );
        output
    }
}
