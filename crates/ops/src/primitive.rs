//! Between tensors and the float primitives that backend hooks take: the hooks' signatures are
//! written with primitives, their bodies and backwards with tensors.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive, backend::Backend};

/// A hook's float primitive as a tensor of rank `D`.
pub(crate) fn tensor<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A hook's float primitive as `[rows, d]`, `d` its last axis (the row view the hooks'
/// backwards reduce over).
pub(crate) fn rows<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 2> {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    tensor::<B, 1>(x).reshape([shape.num_elements() / d.max(1), d])
}

/// A tensor as the float primitive a hook takes.
pub(crate) fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
