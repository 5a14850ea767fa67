//! Mixture of Prompt Experts (MoPE, Jiang et al., arXiv 2403.10568) for burn.
//!
//! MoPE adapts a frozen *main* encoder (e.g. an image transformer) to a multimodal task by inserting
//! prompt tokens at every layer. The prompt of each layer is the concatenation of
//!
//! - a **static prompt**, shared by all instances ([`MopePrompts`], `static_len` tokens),
//! - a **dynamic prompt**, a per-instance mixture of [`PromptExperts`] whose weights come from a
//!   [`Router`] that reads the *complementary* modality's representation (the multimodal pairing
//!   prior) together with the main encoder's current hidden state,
//! - **mapped prompts**, projected from the complementary representation by a [`PromptMapper`].
//!
//! The routers are trained with an importance loss ([`importance_loss`]) that keeps the experts in use.
//!
//! # Crate map
//!
//! | module | owns |
//! |---|---|
//! | [`encoder`] | [`PromptableEncoder`], the contract a frozen backbone implements so prompts can reach its layers |
//! | [`deep_prompt`] | [`forward_prompted`], deep prompt insertion (VPT-deep style) through any encoder |
//! | [`experts`] | [`PromptExperts`] `[num_experts, prompt_len, d_model]` and their mixture |
//! | [`fused`] | [`FusedRouting`]: softmax over sources (temperature, top-k) fused with their mixture, for MoPE's experts and pMoE's dispatcher; a backend hook with the composed reference and a hand-written backward |
//! | `fused_cube` | (features `wgpu`, `cuda`) the same as one CubeCL kernel |
//! | [`gelu`] | [`FastGelu`]: the encoders' exact GELU, vectorised and multi-threaded on `flex` |
//! | [`attention`] | [`FastAttention`]: the encoders' multi-head attention as one operation with a hand-written backward; on `flex` one task per sample and head (products, mask, softmax), written straight into the merged output |
//! | [`layer_norm`] | [`FastLayerNorm`]: the encoders' layer norm as one operation with a hand-written backward, one pass on `flex` |
//! | [`linear`] | [`FastLinear`]: the encoders' linear layers as one operation with a hand-written backward; on `flex` one product over every sample's rows, in row blocks over the threads, the bias accumulated in place |
//! | [`splice`] | [`FastSplice`]: deep prompt insertion's token splice as one operation whose backward is the same splice of the gradient; one copy per run of tokens on `flex` |
//! | `fast_math`, `flex_buffer`, `flex_gemm` | what the `flex` kernels share: a branch-free exponential; which buffers they may overwrite, one-allocation outputs, the split over threads; strided products into a caller's buffer |
//! | [`kernels`] | [`Kernels`]: the backend the models need, every custom operation above |
//! | [`router`] | [`Router`]: pairing-prior routing with frozen orthogonal keys, temperature, noise, top-k |
//! | [`orthogonal`] | deterministic orthogonal matrices (the router keys) |
//! | [`mapper`] | [`PromptMapper`]: complementary feature to mapped prompt tokens |
//! | [`prompts`] | [`MopePrompts`]: per-layer static + dynamic + mapped prompts; vanilla prompt tuning is its static-only case |
//! | [`regularizer`] | [`importance_loss`], [`load_balance_loss`], [`RoutingStats`] |
//! | [`classifier`] | [`MultimodalClassifier`]: MoPE and its baselines (prompt tuning, sequential and late fusion) |
//! | [`params`] | [`ParamSummary`]: the `trainable params: N \|\| all params: M \|\| trainable%: P` line |
//! | [`adapter`] | saving and loading only the trainable parameters (`adapter_model.safetensors` + `adapter_config.json`) |
//! | [`strict`] | deserialisation that rejects unknown configuration keys |
//!
//! Every model type is generic over a burn [`Backend`](burn::tensor::backend::Backend); their
//! forward passes need [`Kernels`] (implemented for `flex`, every CubeCL backend — wgpu, CUDA —
//! and `Autodiff` over any of them), and training functions an
//! [`AutodiffBackend`](burn::tensor::backend::AutodiffBackend) with it on both levels
//! (`train::device::TrainBackend`).

pub mod adapter;
pub mod attention;
pub mod classifier;
pub mod deep_prompt;
pub mod encoder;
pub mod experts;
pub(crate) mod fast_math;
mod flex_buffer;
mod flex_gemm;
pub mod fused;
#[cfg(feature = "cube")]
pub mod fused_cube;
pub mod gelu;
pub mod kernels;
pub mod layer_norm;
pub mod linear;
pub mod mapper;
pub mod orthogonal;
pub mod params;
pub mod prompts;
pub mod regularizer;
pub mod router;
pub mod splice;
pub mod strict;

pub use attention::{FastAttention, multi_head_attention};
pub use adapter::{AdapterConfig, AdapterError, AdapterSaveReport, load_adapter, save_adapter};
pub use classifier::{
    ClassifierOutput, DenseOutput, FusionMethod, MultimodalClassifier, MultimodalClassifierConfig,
};
pub use deep_prompt::{LayerPromptSource, PromptedTokens, forward_prompted};
pub use encoder::{EncoderTokens, PromptableEncoder, square_feature_map};
pub use experts::{PromptExperts, PromptExpertsConfig};
pub use fused::{FusedRouting, RoutingSoftmax, softmax_mix};
pub use gelu::FastGelu;
pub use kernels::Kernels;
pub use layer_norm::FastLayerNorm;
pub use linear::FastLinear;
pub use splice::FastSplice;
pub use mapper::{PromptMapper, PromptMapperConfig};
pub use params::{FloatParam, ModuleParams, ParamSummary, float_params, materialize, params_with_gradient, replace_float_params, unfreeze};
pub use prompts::{MopePrompts, MopePromptsConfig, MopeRun};
pub use regularizer::{RoutingStats, importance_loss, load_balance_loss};
pub use router::{Router, RouterConfig, RouterSettings, RoutingOutput};
