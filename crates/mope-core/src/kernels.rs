//! The backend the models need: burn's [`Backend`](burn::tensor::backend::Backend) with this
//! workspace's custom operations, each a backend-extension hook with a default that every backend
//! can run ([`FusedRouting`]: the routing softmax-mixture; [`FastGelu`]: the encoders' GELU;
//! [`FastAttention`]: the encoders' attention; [`FastLayerNorm`]: their layer norms).
//! Implemented for `flex`, every CubeCL backend (wgpu, CUDA, features `wgpu`/`cuda`) and
//! `Autodiff` over any of them.

use crate::attention::FastAttention;
use crate::fused::FusedRouting;
use crate::gelu::FastGelu;
use crate::layer_norm::FastLayerNorm;

/// A backend with every custom operation of this workspace.
pub trait Kernels: FusedRouting + FastGelu + FastAttention + FastLayerNorm {}

impl<B: FusedRouting + FastGelu + FastAttention + FastLayerNorm> Kernels for B {}
