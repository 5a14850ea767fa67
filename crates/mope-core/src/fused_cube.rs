//! [`FusedRouting::softmax_mix`] as one CubeCL kernel, for the `wgpu` and `cuda` backends (and
//! any other CubeCL runtime). Each thread computes one output element `(b, l, d)`: it reads its
//! group's row of logits (the max, the top-k ranks when sparse, the exponentials at the
//! temperature) and the matching element of every source. Sources are few (experts, or a pMoE
//! expert's EPTs and carried prompt: 2 to 16), so the row is re-read per element instead of
//! staged in shared memory. Its backward is the hand-written one of [`crate::fused`], shared by
//! every backend.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

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
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let len = output.shape(1);
    let width = output.shape(2);
    let columns = len * width;
    let b = pos / columns;
    let column = pos % columns;
    let groups = logits.shape(1);
    let sources = logits.shape(2);
    let num_shared = shared.shape(0);
    let group = column / width / (len / groups);
    let row = (b * groups + group) * sources;
    let sparse = top_k > 0 && top_k < sources;
    let scale = F::cast_from(inv_temperature);

    let mut max = logits[row];
    for s in 1..sources {
        max = F::max(max, logits[row + s]);
    }
    let mut denominator = F::new(0.0);
    let mut acc = F::new(0.0);
    for s in 0..sources {
        let logit = logits[row + s];
        let mut rank = 0;
        if sparse {
            for r in 0..sources {
                let other = logits[row + r];
                if other > logit || (other == logit && r < s) {
                    rank += 1;
                }
            }
        }
        if rank < top_k || !sparse {
            let w = F::exp((logit - max) * scale);
            denominator += w;
            let mut value = own[pos];
            if s < num_shared {
                value = shared[s * columns + column];
            }
            acc += w * value;
        }
    }
    output[pos] = acc / denominator;
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FusedRouting for CubeBackend<R, F, I, BT> {
    fn softmax_mix(logits: FloatTensor<Self>, shared: FloatTensor<Self>, own: Option<FloatTensor<Self>>, softmax: RoutingSoftmax) -> FloatTensor<Self> {
        let dims = |t: &FloatTensor<Self>| {
            let s = t.shape();
            [s[0], s[1], s[2]]
        };
        let [batch, _, _] = check_shapes(dims(&logits), dims(&shared), own.as_ref().map(dims));
        let [_, len, width] = dims(&shared);
        let (logits, shared) = (into_contiguous(logits), into_contiguous(shared));
        // Without an own source the kernel never reads it: any bound buffer does.
        let own = own.map_or_else(|| shared.clone(), into_contiguous);
        let client = logits.client.clone();
        let output = empty_device::<R, F>(client.clone(), logits.device.clone(), Shape::new([batch, len, width]));
        let n = batch * len * width;
        let cube_dim = CubeDim::new(&client, n);
        let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
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
