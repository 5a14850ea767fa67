//! [`FusedRouting::softmax_mix`] as one CubeCL kernel, for the `wgpu` and `cuda` backends (and
//! any other CubeCL runtime): each thread computes one output element, reading the row's logits
//! twice (max, then the exponentials) and one column of the experts. Its backward is the
//! hand-written one of [`crate::fused`], shared by every backend.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::element::{BoolElement, FloatElement, IntElement};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use crate::fused::FusedRouting;

/// `output[b, j] = Σ_e softmax(logits[b])[e] · experts[e, j]`, `j` over `len · width`.
#[cube(launch)]
fn softmax_mix_kernel<F: Float>(logits: &Tensor<F>, experts: &Tensor<F>, output: &mut Tensor<F>) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let num_experts = logits.shape(1);
    let columns = experts.shape(1);
    let b = pos / columns;
    let j = pos % columns;
    let row = b * num_experts;
    let mut max = logits[row];
    for e in 1..num_experts {
        max = F::max(max, logits[row + e]);
    }
    let mut denominator = F::new(0.0);
    let mut acc = F::new(0.0);
    for e in 0..num_experts {
        let w = F::exp(logits[row + e] - max);
        denominator += w;
        acc += w * experts[e * columns + j];
    }
    output[pos] = acc / denominator;
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FusedRouting for CubeBackend<R, F, I, BT> {
    fn softmax_mix(logits: FloatTensor<Self>, experts: FloatTensor<Self>) -> FloatTensor<Self> {
        let (logits, experts) = (into_contiguous(logits), into_contiguous(experts));
        let logits_shape = logits.shape();
        let experts_shape = experts.shape();
        let (batch, num_experts) = (logits_shape[0], logits_shape[1]);
        let (e, len, width) = (experts_shape[0], experts_shape[1], experts_shape[2]);
        assert_eq!(e, num_experts, "{num_experts} routing logits per row for {e} experts");
        let experts = burn_cubecl::ops::reshape(experts, Shape::new([e, len * width]));
        let client = logits.client.clone();
        let output = empty_device::<R, F>(client.clone(), logits.device.clone(), Shape::new([batch, len * width]));
        let n = batch * len * width;
        let cube_dim = CubeDim::new(&client, n);
        let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
        softmax_mix_kernel::launch::<F, R>(&client, cube_count, cube_dim, logits.into_tensor_arg(), experts.into_tensor_arg(), output.clone().into_tensor_arg());
        burn_cubecl::ops::reshape(output, Shape::new([batch, len, width]))
    }
}
