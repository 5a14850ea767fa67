//! Mixture of Prompt Experts (MoPE, Jiang et al., arXiv 2403.10568) for burn.
//!
//! MoPE adapts a frozen *main* encoder (text, an image transformer) to a multimodal task with a
//! *complementary* encoder of the other modality, training only prompts, routers and a head.
//!
//! **Deep prompting.** A frozen encoder exposes its layers through [`PromptableEncoder`];
//! [`forward_prompted`] inserts fresh prompt tokens before each prompted layer, after the
//! encoder's prefix tokens, replacing the previous layer's prompt outputs (VPT-deep). Where the
//! tokens of a layer come from is a [`LayerPromptSource`].
//!
//! **Prompt decomposition.** [`MopePrompts`] is MoPE's source: each prompted layer's prompt is
//!
//! - a **static prompt**, the same for every instance (`static_len` tokens);
//! - a **dynamic prompt**, a per-instance mixture of [`PromptExperts`]
//!   (`[num_experts, expert_len, d_model]`);
//! - **mapped prompts**, projected from the complementary representation by a [`PromptMapper`]
//!   (sequential fusion's conditional prompt).
//!
//! Vanilla deep prompt tuning is its static-only case.
//!
//! **Routing with the multimodal pairing prior.** Each layer's [`Router`] scores the experts
//! from the complementary representation and the main encoder's current hidden state (its mean
//! over real tokens), against frozen orthogonal keys ([`orthogonal`]), with a temperature, noise
//! in training and an optional top-k; the mixture itself is one backend operation
//! ([`ops::softmax_mix`]).
//!
//! **Routing regularisation.** [`importance_loss`] keeps every expert in use; [`RoutingStats`]
//! records how the routers spread their weight, per layer and per class.
//!
//! **The model.** [`MultimodalClassifier`] is MoPE with a linear head on the main encoder's pooled
//! output, and the baselines it is compared with ([`FusionMethod`]: prompt tuning, sequential
//! fusion, late fusion).
//!
//! **The adapter contract.** [`save_adapter`] writes only the trainable parameters
//! (`adapter_model.safetensors` + `adapter_config.json`, as PEFT does); [`load_adapter`] checks
//! them against a freshly built model before loading. [`ParamSummary`] counts what is trained
//! (`trainable params: N || all params: M || trainable%: P`).
//!
//! Every model type is generic over a burn [`Backend`](burn::tensor::backend::Backend); their
//! forward passes need the backend operations of [`ops::Kernels`], and training an
//! [`AutodiffBackend`](burn::tensor::backend::AutodiffBackend) with them on both levels.

pub mod adapter;
pub mod classifier;
pub mod deep_prompt;
pub mod encoder;
pub mod experts;
mod format;
pub mod mapper;
pub mod orthogonal;
pub mod params;
pub mod prompts;
pub mod regularizer;
pub mod router;
pub mod strict;

pub use adapter::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterConfig, AdapterError, AdapterSaveReport, load_adapter, save_adapter,
};
pub use classifier::{
    ClassifierOutput, DenseOutput, FusionMethod, HeadInput, MultimodalClassifier, MultimodalClassifierConfig,
};
pub use deep_prompt::{LayerPromptSource, PromptedTokens, forward_prompted};
pub use encoder::{EncoderTokens, PromptableEncoder, square_feature_map};
pub use experts::{PromptExperts, PromptExpertsConfig, vpt_init_range};
pub use format::{human_bytes, thousands};
pub use mapper::{PromptMapper, PromptMapperConfig};
pub use params::{FloatParam, ModuleParams, ParamSummary, float_params, materialize, params_with_gradient, replace_float_params, unfreeze};
pub use prompts::{MopePrompts, MopePromptsConfig, MopeRun};
pub use regularizer::{RoutingStats, importance_loss};
pub use router::{Router, RouterConfig, RouterSettings, RoutingOutput};
pub use strict::{StrictError, from_value_strict};
