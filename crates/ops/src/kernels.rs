//! The backend the models need: burn's [`Backend`](burn::tensor::backend::Backend) with this
//! crate's custom operations, each a backend-extension hook with a default that every backend
//! can run ([`RoutingMixture`]: the routing softmax-mixture; [`FastGelu`]: the encoders' GELU;
//! [`FastAttention`]: the encoders' attention; [`FastLayerNorm`]: their layer norms;
//! [`FastLinear`]: their linear layers; [`FastSplice`]: deep prompt insertion).
//! Implemented for `flex`, every CubeCL backend (wgpu, CUDA, features `wgpu`/`cuda`) and
//! `Autodiff` over any of them.

use crate::attention::FastAttention;
use crate::gelu::FastGelu;
use crate::layer_norm::FastLayerNorm;
use crate::linear::FastLinear;
use crate::routing_mixture::RoutingMixture;
use crate::splice::FastSplice;

/// A backend with every custom operation of this crate.
pub trait Kernels: RoutingMixture + FastGelu + FastAttention + FastLayerNorm + FastLinear + FastSplice {}

impl<B: RoutingMixture + FastGelu + FastAttention + FastLayerNorm + FastLinear + FastSplice> Kernels for B {}
