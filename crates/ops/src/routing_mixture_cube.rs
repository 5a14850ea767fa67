//! [`RoutingMixture::softmax_mix`] as one CubeCL kernel, for the `wgpu` and `cuda` backends (and
//! any other CubeCL runtime). A cube takes one routing group for [`INSTANCES_PER_UNIT`] consecutive
//! instances and up to 256 elements of the group's `P·D` prompt values (a long group spreads
//! over several cubes). Its first `S` units compute the weight of one source for each of those
//! instances (the row's max, top-k ranks when sparse, exponentials at the temperature) into
//! shared memory; after one barrier every unit takes one element: it reads each shared source's
//! value there once, for all the instances (MoPE's experts are the same for the whole batch),
//! accumulates their weighted sums in registers, adds each instance's own source, and writes
//! each output once. Rows with more than [`MAX_SOURCES`] sources take the composed reference.
//! Its backward is the hand-written one of [`crate::routing_mixture`], shared by every backend.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::prelude::*;

use crate::routing_mixture::{RoutingMixture, RoutingSoftmax, check_shapes};

/// Most sources a routing row may have for the kernel (their weights live in shared memory).
pub const MAX_SOURCES: usize = 64;

/// Instances each unit mixes: every shared source value it loads serves this many outputs.
pub const INSTANCES_PER_UNIT: usize = 4;

/// `output[b, l, d] = Σ_s w[b, g(l), s] · source_s[(b,) l, d]`, `w` the softmax at
/// `1 / inv_temperature` over the `top_k` largest logits of the row (all when `top_k` is 0).
/// `own` is read only for the last source when the row has one more logit than `shared` rows.
/// Launched with `cubes_per_tile` cubes for each group and tile of [`INSTANCES_PER_UNIT`]
/// instances, and at least `sources` units per cube.
#[cube(launch)]
fn softmax_mix_kernel<F: Float>(
    logits: &Tensor<F>,
    shared: &Tensor<F>,
    own: &Tensor<F>,
    output: &mut Tensor<F>,
    inv_temperature: f32,
    top_k: usize,
    cubes_per_tile: usize,
) {
    let batch = logits.shape(0);
    let groups = logits.shape(1);
    let sources = logits.shape(2);
    let tiles = batch.div_ceil(INSTANCES_PER_UNIT);
    let tile = CUBE_POS / cubes_per_tile;
    // Uniform across the cube: a whole cube leaves, or none of its units.
    if tile >= groups * tiles {
        terminate!();
    }
    let group = tile / tiles;
    let first_instance = (tile % tiles) * INSTANCES_PER_UNIT;
    let unit = UNIT_POS as usize;

    // weights[t · MAX_SOURCES + s]: source s for the tile's instance t (zero past the batch).
    let mut weights = SharedMemory::<F>::new(INSTANCES_PER_UNIT * MAX_SOURCES);
    if unit < sources {
        #[unroll]
        for t in 0..INSTANCES_PER_UNIT {
            let instance = first_instance + t;
            let mut weight = F::new(0.0);
            if instance < batch {
                weight = source_weight(logits, (instance * groups + group) * sources, sources, unit, inv_temperature, top_k);
            }
            weights[t * MAX_SOURCES + unit] = weight;
        }
    }
    sync_cube();

    let len = output.shape(1);
    let width = output.shape(2);
    let num_shared = shared.shape(0);
    let source_stride = len * width;
    let group_size = len / groups * width;
    let element = (CUBE_POS % cubes_per_tile) * CUBE_DIM as usize + unit;
    if element < group_size {
        let at = group * group_size + element;
        let mut sums = Array::<F>::new(INSTANCES_PER_UNIT);
        #[unroll]
        for t in 0..INSTANCES_PER_UNIT {
            sums[t] = F::new(0.0);
        }
        for s in 0..num_shared {
            // Every source is read, those outside the top k too: their zero weight times a NaN or
            // an infinity is NaN, as in the reference's (and PyTorch's) matmul.
            let value = shared[s * source_stride + at];
            #[unroll]
            for t in 0..INSTANCES_PER_UNIT {
                sums[t] += weights[t * MAX_SOURCES + s] * value;
            }
        }
        #[unroll]
        for t in 0..INSTANCES_PER_UNIT {
            let instance = first_instance + t;
            if instance < batch {
                let out = instance * source_stride + at;
                let mut sum = sums[t];
                if sources > num_shared {
                    sum += weights[t * MAX_SOURCES + num_shared] * own[out];
                }
                output[out] = sum;
            }
        }
    }
}

/// The weight of source `s` in the routing row starting at `row`: the softmax at
/// `1 / inv_temperature` over the row's `top_k` largest logits (all when `top_k` is 0), zero
/// outside them.
#[cube]
fn source_weight<F: Float>(logits: &Tensor<F>, row: usize, sources: usize, s: usize, inv_temperature: f32, top_k: usize) -> F {
    let sparse = top_k > 0 && top_k < sources;
    let scale = F::cast_from(inv_temperature);
    let mut max = logits[row];
    for r in 1..sources {
        max = F::max(max, logits[row + r]);
    }
    let mut denominator = F::new(0.0);
    for r in 0..sources {
        if !sparse || rank(logits, row, sources, r) < top_k {
            denominator += F::exp((logits[row + r] - max) * scale);
        }
    }
    let mut weight = F::new(0.0);
    if !sparse || rank(logits, row, sources, s) < top_k {
        weight = F::exp((logits[row + s] - max) * scale) / denominator;
    }
    weight
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

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> RoutingMixture for CubeBackend<R, F, I, BT> {
    fn softmax_mix(logits: FloatTensor<Self>, shared: FloatTensor<Self>, own: Option<FloatTensor<Self>>, softmax: RoutingSoftmax) -> FloatTensor<Self> {
        let dims = |t: &FloatTensor<Self>| {
            let s = t.shape();
            [s[0], s[1], s[2]]
        };
        let [batch, groups, _] = check_shapes(dims(&logits), dims(&shared), own.as_ref().map(dims));
        let [_, len, width] = dims(&shared);
        let sources = dims(&logits)[2];
        if sources > MAX_SOURCES {
            return crate::routing_mixture::softmax_mix_reference_primitive::<Self>(logits, shared, own, softmax);
        }
        let (logits, shared) = (into_contiguous(logits), into_contiguous(shared));
        // Without an own source the kernel never reads it: any bound buffer does.
        let own = own.map_or_else(|| shared.clone(), into_contiguous);
        let client = logits.client.clone();
        let output = empty_device::<R, F>(client.clone(), logits.device.clone(), Shape::new([batch, len, width]));
        let group_size = len / groups * width;
        let cube_dim = group_size.next_power_of_two().clamp(MAX_SOURCES, 256);
        let cubes_per_tile = group_size.div_ceil(cube_dim);
        let cubes = groups * batch.div_ceil(INSTANCES_PER_UNIT) * cubes_per_tile;
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
            cubes_per_tile,
        );
        output
    }
}
