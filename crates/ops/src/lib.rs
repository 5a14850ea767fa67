//! The backend operations that the prompted encoders run on, each a burn backend-extension hook
//! with a reference every backend can run, a hand-written backward under `Autodiff`, and a fast
//! forward on `flex` (and, for the routing mixture, one CubeCL kernel on wgpu and CUDA).
//!
//! `mope-core` (the method) and `backbones` (the frozen encoders) both sit on this crate; it
//! knows neither.
//!
//! | module | owns |
//! |---|---|
//! | [`routing_mixture`] | [`RoutingMixture`]: softmax over sources (temperature, top-k) fused with their mixture, for MoPE's experts and pMoE's dispatcher |
//! | `routing_mixture_cube` | (features `wgpu`, `cuda`) the same as one CubeCL kernel |
//! | [`attention`] | [`FastAttention`]: multi-head attention as one operation; on `flex` one task per sample and head (products, mask, softmax), written straight into the merged output |
//! | [`linear`](mod@linear) | [`FastLinear`]: a linear layer as one operation; on `flex` one product over every sample's rows, in row blocks over the threads, the bias accumulated in place |
//! | [`layer_norm`](mod@layer_norm) | [`FastLayerNorm`]: layer norm with a one-pass backward on `flex` |
//! | [`gelu`](mod@gelu) | [`FastGelu`]: the exact GELU, vectorised and multi-threaded on `flex` |
//! | [`masked_mean`](mod@masked_mean) | the mean of each sample's real tokens (pooling; what MoPE's routers read) |
//! | [`splice`] | [`FastSplice`]: deep prompt insertion's token splice, whose backward is the same splice of the gradient |
//! | [`kernels`] | [`Kernels`]: a backend with every operation above |
//! | `primitive` | between tensors and the float primitives the hooks take |
//! | `fast_math`, `flex_buffer`, `flex_gemm` | what the `flex` kernels share: a branch-free exponential; which buffers they may overwrite, one-allocation outputs, the split over threads; strided products into a caller's buffer |
//!
//! [`Kernels`] is implemented for `flex`, every CubeCL backend (wgpu, CUDA, features
//! `wgpu`/`cuda`) and `Autodiff` over any of them.

pub mod attention;
mod fast_math;
mod flex_buffer;
mod flex_gemm;
pub mod gelu;
pub mod kernels;
pub mod layer_norm;
pub mod linear;
pub mod masked_mean;
mod primitive;
pub mod routing_mixture;
#[cfg(feature = "cube")]
pub mod routing_mixture_cube;
pub mod splice;
#[cfg(test)]
mod test_support;

pub use attention::{FastAttention, multi_head_attention};
pub use gelu::{FastGelu, gelu};
pub use kernels::Kernels;
pub use layer_norm::{FastLayerNorm, layer_norm};
pub use linear::{FastLinear, linear};
pub use masked_mean::masked_mean;
pub use routing_mixture::{RoutingMixture, RoutingSoftmax, routing_weights, softmax_mix, softmax_mix_reference};
pub use splice::{FastSplice, splice_by_cat, splice_tokens};
