//! pMoE (Mo, Luo, Li, "pMoE: Prompting Diverse Experts Together Wins More in Visual
//! Adaptation", ICLR 2025) for burn: several frozen pretrained backbones ("domain experts"),
//! each given its own expert-specific prompt tokens (EPTs) at its prompted layers, with a
//! learned dynamic token dispatcher at each of those layers that builds every expert's prompt
//! from the EPTs of all experts, so the experts exchange information through their prompts.
//!
//! The paper's equations could not be read here; what this crate implements is a documented
//! reconstruction from the public reviews (see `docs/pmoe.md` for every choice and the
//! alternatives left open).
//!
//! # Crate map
//!
//! | module | owns |
//! |---|---|
//! | [`prompt_tokens`] | [`ExpertPromptTokens`]: one expert's EPTs, one set per prompted layer |
//! | [`dispatcher`] | [`TokenDispatcher`]: per expert and layer, a per-slot distribution over the experts' EPTs and the carried prompt |
//! | [`width_maps`] | [`WidthMaps`]: the maps carrying EPTs between experts of different widths, shared by the layers |
//! | [`classifier`] | [`PmoeClassifier`]: experts, EPTs, dispatchers, classification and dense heads; [`Combine::Mean`] and [`Combine::Concat`] are the mean-of-experts and late-fusion baselines |
//!
//! Experts are any [`mope_core::PromptableEncoder`]: the backbones crate's ViT, Swin and
//! CNN-token hybrid, or a user's own in the Hugging Face layout.

pub mod classifier;
pub mod dispatcher;
pub mod prompt_tokens;
pub mod width_maps;

pub use classifier::{Combine, Dispatch, PmoeClassifier, PmoeConfig, PmoeDenseOutput, PmoeOutput};
pub use dispatcher::{DispatchOutput, TokenDispatcher, TokenDispatcherConfig};
pub use prompt_tokens::ExpertPromptTokens;
pub use width_maps::WidthMaps;
