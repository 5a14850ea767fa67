//! [`FusedRouting::softmax_mix`] as one CubeCL kernel, for the `wgpu` and `cuda` backends (and
//! any other CubeCL runtime). One cube per routing row `(b, g)`: every unit of the cube computes
//! the row's softmax (max, top-k ranks when sparse, exponentials at the temperature: `O(S)` or
//! `O(S²)` work per unit, not per element, for `S` = 2 to 16 sources), then the units stride
//! over the row's `P·D` output elements, adding each source's weighted values in turn. No
//! shared memory and no synchronisation. Its backward is the hand-written one of
//! [`crate::fused`], shared by every backend.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::prelude::*;

use crate::fused::{FusedRouting, RoutingSoftmax, check_shapes};

/// `output[b, l, d] = Σ_s w[b, g(l), s] · source_s[(b,) l, d]`, `w` the softmax at
/// `1 / inv_temperature` over the `top_k` largest logits of the row (all when `top_k` is 0).
/// `own` is read only for the last source when the row has one more logit than `shared` rows.
#[cube(launch)]
fn softmax_mix_kernel<F: Float>(
    logits: &Tensor<F>,
    shared: &Tensor<F>,
    own: &Tensor<F>,
    output: &mut Tensor<F>,
    inv_temperature: f32,
    top_k: usize,
) {
    let groups = logits.shape(1);
    let sources = logits.shape(2);
    let routing_row = CUBE_POS;
    if routing_row >= logits.shape(0) * groups {
        terminate!();
    }
    let len = output.shape(1);
    let width = output.shape(2);
    let num_shared = shared.shape(0);
    let group_size = len / groups * width;
    let group_offset = (routing_row % groups) * group_size;
    let out_offset = (routing_row / groups) * len * width + group_offset;
    let row = routing_row * sources;
    let sparse = top_k > 0 && top_k < sources;
    let scale = F::cast_from(inv_temperature);

    let mut max = logits[row];
    for s in 1..sources {
        max = F::max(max, logits[row + s]);
    }
    let mut denominator = F::new(0.0);
    for s in 0..sources {
        let logit = logits[row + s];
        if !sparse || rank(logits, row, sources, s) < top_k {
            denominator += F::exp((logit - max) * scale);
        }
    }

    let first = UNIT_POS as usize;
    let stride = CUBE_DIM as usize;
    let mut count = 0;
    if first < group_size {
        count = (group_size - first + stride - 1) / stride;
    }
    for i in 0..count {
        output[out_offset + first + i * stride] = F::new(0.0);
    }
    for s in 0..sources {
        let logit = logits[row + s];
        if !sparse || rank(logits, row, sources, s) < top_k {
            let w = F::exp((logit - max) * scale) / denominator;
            if s < num_shared {
                let source_offset = s * len * width + group_offset;
                for i in 0..count {
                    let j = first + i * stride;
                    output[out_offset + j] += w * shared[source_offset + j];
                }
            } else {
                for i in 0..count {
                    let j = out_offset + first + i * stride;
                    output[j] += w * own[j];
                }
            }
        }
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
        let (logits, shared) = (into_contiguous(logits), into_contiguous(shared));
        // Without an own source the kernel never reads it: any bound buffer does.
        let own = own.map_or_else(|| shared.clone(), into_contiguous);
        let client = logits.client.clone();
        let output = empty_device::<R, F>(client.clone(), logits.device.clone(), Shape::new([batch, len, width]));
        let rows = batch * groups;
        // A cube per routing row, its units striding over the row's elements.
        let cube_dim = CubeDim::new_1d((len / groups * width).next_power_of_two().clamp(32, 256) as u32);
        let cube_count = if rows <= 65_535 { CubeCount::new_1d(rows as u32) } else { CubeCount::new_2d(65_535, rows.div_ceil(65_535) as u32) };
        softmax_mix_kernel::launch::<F, R>(
            &client,
            cube_count,
            cube_dim,
            logits.into_tensor_arg(),
            shared.into_tensor_arg(),
            own.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            1.0 / softmax.temperature,
            softmax.top_k,
        );
        output
    }
}
