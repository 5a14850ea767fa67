//! Frozen pretrained encoders with deep-prompt hooks.
//!
//! Every encoder here implements [`mope_core::PromptableEncoder`]: its layers can be driven one at
//! a time so that `mope-core` inserts prompt tokens before each of them, and it pools its output
//! into the representation that routers and heads read.
//!
//! | module | owns |
//! |---|---|
//! | [`transformer`] | [`TransformerLayer`]: self-attention + GELU feed-forward, post-norm (BERT) or pre-norm (ViT) |
//! | [`token_encoder`] | [`TokenEncoder`]: a BERT-shaped text encoder (word, position and token-type embeddings) |
//! | [`pooling`] | [`Pooling`]: `[CLS]`, mean over tokens, or mean including prompt tokens |

pub mod pooling;
pub mod token_encoder;
pub mod transformer;

pub use pooling::Pooling;
pub use token_encoder::{TokenBatch, TokenEncoder, TokenEncoderConfig};
pub use transformer::{TransformerLayer, TransformerLayerConfig};
