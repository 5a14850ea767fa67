//! The backend the models need: burn's [`Backend`] with this
//! workspace's custom operations, each a backend-extension hook with a default that every backend
//! can run ([`FusedRouting`]: the routing softmax-mixture; [`FastGelu`]: the encoders' GELU;
//! [`FastAttention`]: the encoders' attention; [`FastLayerNorm`]: their layer norms;
//! [`FastLinear`]: their linear layers; [`FastSplice`]: deep prompt insertion).
//! Implemented for `flex`, every CubeCL backend (wgpu, CUDA, features `wgpu`/`cuda`) and
//! `Autodiff` over any of them.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive, backend::Backend};

use crate::attention::FastAttention;
use crate::fused::FusedRouting;
use crate::gelu::FastGelu;
use crate::layer_norm::FastLayerNorm;
use crate::linear::FastLinear;
use crate::splice::FastSplice;

/// A backend with every custom operation of this workspace.
pub trait Kernels: FusedRouting + FastGelu + FastAttention + FastLayerNorm + FastLinear + FastSplice {}

impl<B: FusedRouting + FastGelu + FastAttention + FastLayerNorm + FastLinear + FastSplice> Kernels for B {}

/// A hook's float primitive as a tensor of rank `D` (hooks take primitives; their bodies and
/// backwards are written with tensors).
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

/// The GPU-backend tests of an operation: `gpu_backends::wgpu` (feature `wgpu`; lavapipe on a
/// CPU-only machine) and `gpu_backends::cuda` (feature `cuda`; says `SKIPPED` without a device),
/// each running the calling test module's `check::<B>(&device)`, which compares the operation on
/// `B` with its reference on `flex`.
#[cfg(test)]
macro_rules! gpu_backend_tests {
    ($check:ident) => {
        mod gpu_backends {
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu() {
                super::$check::<burn::backend::Wgpu>(&Default::default());
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if crate::fused::tests::cuda_device_opens(module_path!()) {
                    super::$check::<burn::backend::Cuda>(&Default::default());
                }
            }
        }
    };
}
#[cfg(test)]
pub(crate) use gpu_backend_tests;
