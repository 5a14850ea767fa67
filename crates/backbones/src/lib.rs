//! Frozen pretrained encoders with deep-prompt hooks.
//!
//! Every encoder here implements [`mope_core::PromptableEncoder`]: its layers can be driven one at
//! a time so that `mope-core` inserts prompt tokens before each of them, and it pools its output
//! into the representation that routers and heads read.
//!
//! | module | owns |
//! |---|---|
//! | [`any`] | [`AnyEncoder`]: any backbone chosen by name at run time, with its input preparation |
//! | [`self_attention`] | [`SelfAttention`](self_attention::SelfAttention): multi-head self-attention as one operation (`ops::attention`) |
//! | [`linear_layer`] | the encoders' linear layers: burn's `Linear` parameters through `ops::linear` (one operation, hand-written backward) |
//! | [`unpadded`] | [`Unpadded`](unpadded::Unpadded): a padded batch's real tokens as rows, so row-wise work skips padding |
//! | [`transformer`] | [`TransformerLayer`]: self-attention + GELU feed-forward, post-norm (BERT) or pre-norm (ViT) |
//! | [`token_encoder`] | [`TokenEncoder`]: a BERT-shaped text encoder (word, position and token-type embeddings) |
//! | [`pooling`] | [`Pooling`]: `[CLS]`, mean over tokens, or mean including prompt tokens |
//! | [`weights`] | loading safetensors checkpoints through a key map, with errors naming file and key |
//! | [`bert`] | BERT-family encoders (BERT, MiniLM) from a Hugging Face snapshot |
//! | [`vit`] | [`ViT`]: Vision Transformer from Hugging Face ViT/DeiT snapshots |
//! | [`inverted_residual`] | the convolution blocks MobileNetV2 and EfficientNet-Lite share, and their padding conventions |
//! | [`mobilenet_v2`] | [`MobileNetV2`]: torchvision's ImageNet CNN, features and feature maps |
//! | [`efficientnet_lite`] | [`EfficientNetLite`]: EfficientNet-Lite0, an ImageNet CNN trained in TensorFlow |
//! | [`cnn`] | [`Cnn`]: the inverted-residual network both CNNs are, and alone a zero-layer encoder |
//! | [`frozen_batch_norm`] | batch norm with fixed statistics |
//! | [`frozen_map_memo`] | a frozen CNN's maps kept per input image, so that training computes each once |
//! | [`audio`] | Whisper's log-mel front end and encoder |
//! | [`ct2`] | reader of CTranslate2 model files |
//! | [`hybrid`] | [`CnnTokenEncoder`]: CNN feature-map tokens into a frozen pretrained BERT-family or Whisper transformer |
//! | [`swin`] | [`Swin`]: Swin Transformer from Hugging Face snapshots, prompts inside shifted windows |
//! | [`tokenizer`] | [`TextTokenizer`]: `tokenizer.json` or `vocab.txt` to [`TokenBatch`] |
//! | [`presets`] | backbones by name from a local weights directory |
//! | [`error`] | [`BackboneError`] |

pub mod any;
pub mod self_attention;
pub mod audio;
pub mod bert;
pub mod cnn;
pub mod ct2;
pub mod efficientnet_lite;
pub mod error;
pub mod frozen_batch_norm;
pub mod frozen_map_memo;
pub mod hybrid;
pub mod inverted_residual;
pub mod linear_layer;
pub mod mobilenet_v2;
pub mod pooling;
pub mod presets;
mod snapshot;
pub mod swin;
pub mod token_encoder;
pub mod tokenizer;
pub mod transformer;
pub mod unpadded;
pub mod vit;
pub mod weights;

pub use any::{AnyEncoder, BERT_CLS_ID, AnyInput, EncoderOptions, InputPreparer, LoadedEncoder, Modality, PreparedInput, load_encoder, missing_weights, modality_of};
pub use audio::log_mel::{LogMel, WINDOW_SAMPLES, pad_or_trim};
pub use audio::whisper::{WhisperEncoder, WhisperEncoderConfig, load_whisper_encoder};
pub use bert::{HfBertConfig, load_bert};
pub use efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig, load_efficientnet_lite};
pub use error::BackboneError;
pub use cnn::Cnn;
pub use hybrid::{CnnTokenEncoder, TokenTransformer};
pub use mobilenet_v2::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
pub use pooling::Pooling;
pub use presets::{InputSpec, Preset, WEIGHTS_DIR_ENV, by_name, default_weights_dir};
/// Image preprocessing of the presets (defined in the `data` crate, which has no model dependency).
pub use data::{IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess};
pub use swin::{PromptLayout, Swin, SwinConfig, load_swin};
pub use tokenizer::TextTokenizer;
pub use vit::{ViT, ViTConfig, load_vit};
pub use token_encoder::{TokenBatch, TokenEncoder, TokenEncoderConfig};
pub use transformer::{TransformerLayer, TransformerLayerConfig};
