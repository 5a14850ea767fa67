//! Any promptable backbone behind one type, chosen by name at run time: what a command line or
//! an experiment file needs, where the encoder pair is not known at compile time.
//!
//! A name is a preset ([`crate::presets`]) or `<cnn>+<transformer>`, the CNN-token hybrid
//! ([`CnnTokenEncoder`]) made of a CNN preset (`mobilenet-v2`, `efficientnet-lite0`) and a
//! BERT-family or Whisper preset, e.g. `mobilenet-v2+all-minilm-l6-v2` or
//! `efficientnet-lite0@17+whisper-base`, the real frozen image transformers that the package
//! registries provide. `<preset>=<dir>` reads a model of the preset's family from a directory of
//! the user's (a Hugging Face snapshot: `vit-base-patch16-224-in21k=/models/dino-vitb16`, a
//! medical ViT-B/16, a small ViT), with the preset's pooling and normalisation and the input size
//! its `config.json` gives. `<cnn>@<index>+<transformer>` picks the CNN map whose cells become
//! the tokens (`mobilenet-v2@18+all-minilm-l6-v2`: the last, 1280-channel map at stride 32;
//! default the last map at stride 16, [`Preset::cnn_maps`]). A bare CNN preset
//! (`mobilenet-v2`, `efficientnet-lite0`) is a zero-layer encoder: its pooled features route the
//! experts, but it has no layer to prompt.

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::Kernels;

use crate::audio::whisper::WhisperEncoder;
use crate::error::BackboneError;
use crate::cnn::Cnn;
use crate::hybrid::CnnTokenEncoder;
use crate::presets::{Family, InputSpec, PRESETS, Preset, by_name};
use crate::swin::{PromptLayout, Swin};
use crate::token_encoder::{TokenBatch, TokenEncoder};
use crate::tokenizer::TextTokenizer;
use crate::vit::ViT;
use data::ImagePreprocess;

/// The input modality an encoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Text (a sample's `text`).
    Text,
    /// An RGB image (a sample's `image`).
    Image,
    /// A depth image tiled to three channels (a sample's `depth`).
    Depth,
    /// 16 kHz audio (a sample's `audio`).
    Audio,
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Depth => "depth",
            Self::Audio => "audio",
        })
    }
}

/// A prepared batch for an [`AnyEncoder`].
#[derive(Debug, Clone)]
pub enum AnyInput<B: Backend> {
    /// Token ids and padding mask.
    Tokens(TokenBatch<B>),
    /// Normalised pixels. Shape `[batch, 3, height, width]`.
    Pixels(Tensor<B, 4>),
    /// Log-mel spectrograms. Shape `[batch, n_mels, frames]`.
    Mel(Tensor<B, 3>),
}

impl<B: Backend> AnyInput<B> {
    /// Number of samples in the batch.
    pub fn batch_size(&self) -> usize {
        match self {
            Self::Tokens(t) => t.ids.dims()[0],
            Self::Pixels(p) => p.dims()[0],
            Self::Mel(m) => m.dims()[0],
        }
    }
}

/// One of the promptable backbones.
// One encoder value per model: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyEncoder<B: Backend> {
    /// BERT-family text encoder.
    Text(TokenEncoder<B>),
    /// Vision Transformer.
    ViT(ViT<B>),
    /// Swin Transformer.
    Swin(Swin<B>),
    /// CNN feature-map tokens into a pretrained transformer.
    Hybrid(CnnTokenEncoder<B>),
    /// Whisper's audio encoder.
    Whisper(WhisperEncoder<B>),
    /// A CNN's pooled features as a zero-layer encoder: a complementary encoder, a late-fusion
    /// main encoder or expert, never a prompted one.
    Cnn(Cnn<B>),
}

/// Dispatches `$body` on the encoder inside an [`AnyEncoder`].
macro_rules! each {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            AnyEncoder::Text($e) => $body,
            AnyEncoder::ViT($e) => $body,
            AnyEncoder::Swin($e) => $body,
            AnyEncoder::Hybrid($e) => $body,
            AnyEncoder::Whisper($e) => $body,
            AnyEncoder::Cnn($e) => $body,
        }
    };
}

impl<B: Backend> AnyEncoder<B> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text encoder",
            Self::ViT(_) => "ViT",
            Self::Swin(_) => "Swin",
            Self::Hybrid(_) => "CNN-token hybrid",
            Self::Whisper(_) => "Whisper encoder",
            Self::Cnn(_) => "CNN",
        }
    }
}

fn wrong_input(encoder: &str, expected: &str) -> ! {
    panic!("the {encoder} reads {expected}; prepare inputs with the encoder's own InputPreparer")
}

impl<B: Kernels> PromptableEncoder<B> for AnyEncoder<B> {
    type Input = AnyInput<B>;

    fn d_model(&self) -> usize {
        each!(self, e => e.d_model())
    }

    fn layer_width(&self, layer: usize) -> usize {
        each!(self, e => e.layer_width(layer))
    }

    fn num_layers(&self) -> usize {
        each!(self, e => e.num_layers())
    }

    fn default_prompted_layers(&self) -> Option<Vec<usize>> {
        each!(self, e => e.default_prompted_layers())
    }

    fn num_prefix_tokens(&self) -> usize {
        each!(self, e => e.num_prefix_tokens())
    }

    /// # Shapes
    /// - output tokens: `[batch, seq_len, d_model]`, mask `[batch, seq_len]`
    ///
    /// # Panics
    /// If the input is not the kind the encoder reads.
    fn embed(&self, input: &AnyInput<B>) -> EncoderTokens<B> {
        match (self, input) {
            (Self::Text(e), AnyInput::Tokens(t)) => e.embed(t),
            (Self::ViT(e), AnyInput::Pixels(p)) => e.embed(p),
            (Self::Swin(e), AnyInput::Pixels(p)) => e.embed(p),
            (Self::Hybrid(e), AnyInput::Pixels(p)) => e.embed(p),
            (Self::Whisper(e), AnyInput::Mel(m)) => e.embed(m),
            (Self::Cnn(e), AnyInput::Pixels(p)) => e.embed(p),
            (Self::Text(_), _) => wrong_input(self.kind(), "tokens"),
            (Self::Whisper(_), _) => wrong_input(self.kind(), "log-mel spectrograms"),
            _ => wrong_input(self.kind(), "pixels"),
        }
    }

    /// # Shapes
    /// - `tokens`: `[batch, seq_len, width]`, output the same
    fn layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        each!(self, e => e.layer(index, tokens, mask_pad))
    }

    /// # Shapes
    /// - `tokens`: `[batch, seq_len, width]`, output the same
    fn layer_discarding(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3> {
        each!(self, e => e.layer_discarding(index, tokens, mask_pad, discard))
    }

    fn pool_reads_prompts(&self) -> bool {
        each!(self, e => e.pool_reads_prompts())
    }

    fn keeps_trainable_part(&self) -> bool {
        each!(self, e => e.keeps_trainable_part())
    }

    /// # Shapes
    /// - output: `[batch, d_model, height, width]` for image encoders, `None` otherwise
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        each!(self, e => PromptableEncoder::feature_map(e, tokens, num_prompts))
    }

    fn freeze(self) -> Self {
        match self {
            Self::Text(e) => Self::Text(e.freeze()),
            Self::ViT(e) => Self::ViT(e.freeze()),
            Self::Swin(e) => Self::Swin(e.freeze()),
            Self::Hybrid(e) => Self::Hybrid(e.freeze()),
            Self::Whisper(e) => Self::Whisper(e.freeze()),
            Self::Cnn(e) => Self::Cnn(e.freeze()),
        }
    }

    /// # Shapes
    /// - `tokens`: `[batch, seq_len, width]`, output `[batch, d_model]`
    fn pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        each!(self, e => e.pool(tokens, mask_pad, num_prompts))
    }
}

/// How raw samples become an [`AnyInput`] for one encoder: its modality and preprocessing.
#[allow(clippy::large_enum_variant)] // one per encoder
#[derive(Debug, Clone)]
pub enum InputPreparer {
    /// Tokenisation.
    Text(TextTokenizer),
    /// Image decoding, resizing and normalisation, for RGB or depth.
    Image(Modality, ImagePreprocess),
    /// 16 kHz audio, zero-padded or trimmed to `seconds`, then Whisper's log-mel spectrogram.
    Audio {
        /// Clip length every clip is padded or trimmed to (Whisper was trained on 30 s).
        seconds: f64,
        /// The spectrogram front end.
        mel: crate::LogMel,
    },
}

impl InputPreparer {
    /// The sample field this reads.
    pub fn modality(&self) -> Modality {
        match self {
            Self::Text(_) => Modality::Text,
            Self::Image(m, _) => *m,
            Self::Audio { .. } => Modality::Audio,
        }
    }
}

/// A loaded encoder, its preparer and the name it was loaded by.
#[derive(Debug)]
pub struct LoadedEncoder<B: Backend> {
    /// The encoder (not yet frozen).
    pub encoder: AnyEncoder<B>,
    /// How to prepare its input.
    pub preparer: InputPreparer,
    /// The name it was loaded by.
    pub name: String,
    /// The directories its weights were read from (none: made in memory); the stamps of their
    /// files key its cached features.
    pub weights: Vec<PathBuf>,
}

/// Options of [`load_encoder`].
#[derive(Debug, Clone, Copy)]
pub struct EncoderOptions {
    /// Read depth images instead of RGB (image encoders only).
    pub depth: bool,
    /// Clip length for audio encoders, in seconds.
    pub audio_seconds: f64,
    /// Prompt layout of Swin models.
    pub swin_layout: PromptLayout,
    /// Side of the square image crop, overriding the preset's (the resize keeps the preset's
    /// resize-to-crop ratio); 0: the preset's. Smaller crops give fewer tokens: faster, coarser.
    pub image_size: usize,
    /// Bytes of frozen CNN maps a hybrid keeps per image ([`crate::frozen_map_memo`]); 0: none.
    pub frozen_map_memo_bytes: usize,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self { depth: false, audio_seconds: 30.0, swin_layout: PromptLayout::PerSample, image_size: 0, frozen_map_memo_bytes: 0 }
    }
}

/// The CNN preset and feature-map index of a hybrid's CNN part, `<preset>` (the preset's
/// default map) or `<preset>@<index>`.
fn hybrid_cnn(name: &str, cnn: &str) -> Result<(&'static Preset, usize), BackboneError> {
    let (preset_name, index) = match cnn.split_once('@') {
        Some((preset, index)) => (preset, Some(index)),
        None => (cnn, None),
    };
    let cnns = || PRESETS.iter().filter(|p| p.cnn_maps().is_some()).map(|p| p.name).collect::<Vec<_>>().join(", ");
    let not_a_cnn = || BackboneError::InvalidName {
        name: name.to_string(),
        reason: format!("a hybrid `<cnn>[@<map>]+<transformer>` needs a CNN preset first ({}), not `{preset_name}`", cnns()),
    };
    let preset = by_name(preset_name).map_err(|_| not_a_cnn())?;
    let Some((default, head)) = preset.cnn_maps() else { return Err(not_a_cnn()) };
    match index.map(|i| i.parse::<usize>()) {
        None => Ok((preset, default)),
        Some(Ok(i)) if (1..=head).contains(&i) => Ok((preset, i)),
        Some(_) => Err(BackboneError::InvalidName {
            name: name.to_string(),
            reason: format!("`@{}`: the feature index of {preset_name} is a number from 1 to {head}", index.unwrap_or_default()),
        }),
    }
}

/// The transformer preset of a hybrid: BERT-family or Whisper.
fn hybrid_transformer(name: &str, transformer: &str) -> Result<&'static Preset, BackboneError> {
    match by_name(transformer) {
        Ok(preset) if matches!(preset.family, Family::Bert | Family::Whisper) => Ok(preset),
        _ => {
            let known: Vec<&str> = PRESETS.iter().filter(|p| matches!(p.family, Family::Bert | Family::Whisper)).map(|p| p.name).collect();
            Err(BackboneError::InvalidName {
                name: name.to_string(),
                reason: format!("a hybrid `<cnn>[@<map>]+<transformer>` needs a BERT-family or Whisper preset second ({}), not `{transformer}`", known.join(", ")),
            })
        }
    }
}

/// The `[CLS]` id of the uncased BERT vocabulary that MiniLM shares.
pub const BERT_CLS_ID: usize = 101;

/// The modality the encoder called `name` reads (RGB for image encoders), without loading it.
pub fn modality_of(name: &str) -> Result<Modality, BackboneError> {
    if let Some((cnn, transformer)) = name.split_once('+') {
        hybrid_cnn(name, cnn)?;
        hybrid_transformer(name, transformer)?;
        return Ok(Modality::Image);
    }
    let preset = name.split_once('=').map_or(name, |(preset, _)| preset);
    Ok(match by_name(preset)?.input {
        InputSpec::Text { .. } => Modality::Text,
        InputSpec::Image(_) => Modality::Image,
        InputSpec::Audio => Modality::Audio,
    })
}

/// The `image_size` of a ViT or Swin `config.json`.
fn configured_image_size(dir: &Path) -> Result<usize, BackboneError> {
    #[derive(serde::Deserialize)]
    struct ImageSize {
        image_size: usize,
    }
    Ok(crate::snapshot::read_config::<ImageSize>(&dir.join("config.json"))?.image_size)
}

/// What the encoder called `name` lacks in `weights_dir` (or its own folder, for
/// `<preset>=<dir>`): a message naming each missing folder or file and where to get it, or `None`
/// when its files are there. Reads no weights.
///
/// # Errors
/// If `name` names no preset.
pub fn missing_weights(name: &str, weights_dir: &Path) -> Result<Option<String>, BackboneError> {
    let missing = |dir: Result<PathBuf, BackboneError>| dir.err().map(|e| e.to_string());
    let found: Vec<String> = if let Some((cnn, transformer)) = name.split_once('+') {
        let (cnn, _) = hybrid_cnn(name, cnn)?;
        let transformer = hybrid_transformer(name, transformer)?;
        [missing(cnn.dir(weights_dir)), missing(transformer.dir(weights_dir))].into_iter().flatten().collect()
    } else {
        match name.split_once('=') {
            Some((preset, dir)) => missing(by_name(preset)?.dir_at(Path::new(dir))).into_iter().collect(),
            None => missing(by_name(name)?.dir(weights_dir)).into_iter().collect(),
        }
    };
    Ok((!found.is_empty()).then(|| found.join(" ")))
}

/// Loads the encoder called `name` (a preset, `<preset>=<dir>`, or `<cnn>+<transformer>`) from
/// `weights_dir`.
pub fn load_encoder<B: Backend>(
    name: &str,
    weights_dir: &Path,
    options: EncoderOptions,
    device: &B::Device,
) -> Result<LoadedEncoder<B>, BackboneError> {
    // `native`: the input side the weights were made for where it is not the preset's (0: the preset's).
    let image_at = |preset: &Preset, native: usize| match preset.input {
        InputSpec::Image(mut pre) => {
            let size = if options.image_size > 0 { options.image_size } else { native };
            if size > 0 {
                pre.resize = (size * pre.resize).div_ceil(pre.size);
                pre.size = size;
            }
            InputPreparer::Image(if options.depth { Modality::Depth } else { Modality::Image }, pre)
        }
        _ => unreachable!("image families have image input"),
    };
    let image = |preset: &Preset| image_at(preset, 0);
    if let Some((cnn, transformer)) = name.split_once('+') {
        let (cnn, feature_index) = hybrid_cnn(name, cnn)?;
        let transformer = hybrid_transformer(name, transformer)?;
        let dirs = vec![cnn.dir(weights_dir)?, transformer.dir(weights_dir)?];
        let encoder = CnnTokenEncoder::new(
            cnn.load_cnn(&dirs[0], device)?,
            transformer.load_token_transformer(&dirs[1], device)?,
            feature_index,
            BERT_CLS_ID,
            device,
        )
        .with_frozen_map_memo(options.frozen_map_memo_bytes);
        return Ok(LoadedEncoder { encoder: AnyEncoder::Hybrid(encoder), preparer: image(cnn), name: name.to_string(), weights: dirs });
    }
    let (preset, custom) = match name.split_once('=') {
        Some((preset, dir)) => (by_name(preset)?, Some(Path::new(dir))),
        None => (by_name(name)?, None),
    };
    let dir = match custom {
        Some(dir) => preset.dir_at(dir)?,
        None => preset.dir(weights_dir)?,
    };
    // ViT and Swin read the image size their position embeddings were made for, from the
    // snapshot's config.json (a preset's 224 is only the published models' size).
    let native = match preset.family {
        Family::ViT | Family::Swin => configured_image_size(&dir)?,
        _ => 0,
    };
    let (encoder, preparer) = match preset.family {
        Family::Bert => {
            let (encoder, tokenizer) = preset.load_text(&dir, device)?;
            (AnyEncoder::Text(encoder), InputPreparer::Text(tokenizer))
        }
        Family::ViT => (AnyEncoder::ViT(preset.load_vit(&dir, device)?), image_at(preset, native)),
        Family::Swin => (AnyEncoder::Swin(preset.load_swin(&dir, options.swin_layout, device)?), image_at(preset, native)),
        Family::Whisper => {
            (AnyEncoder::Whisper(preset.load_whisper(&dir, device)?), InputPreparer::Audio { seconds: options.audio_seconds, mel: crate::LogMel::whisper() })
        }
        Family::MobileNetV2 | Family::EfficientNetLite => (AnyEncoder::Cnn(preset.load_cnn(&dir, device)?), image(preset)),
    };
    Ok(LoadedEncoder { encoder, preparer, name: name.to_string(), weights: vec![dir] })
}

/// One sample's input prepared on the host (in a loader worker), ready to be collated.
#[derive(Debug, Clone, PartialEq)]
pub enum PreparedInput {
    /// Raw text; tokenised at collation, where the batch's longest sequence is known.
    Text(String),
    /// `3 × size × size` normalised pixels, channel-major.
    Pixels(Vec<f32>),
    /// A `n_mels × frames` log-mel spectrogram, row-major.
    Mel(Vec<f32>),
}

fn missing(sample: &data::Sample, modality: Modality) -> BackboneError {
    BackboneError::Data(data::DataError::missing_input(sample, format_args!("{modality}, which the encoder reads")))
}

impl InputPreparer {
    /// Prepares the part of `sample` this encoder reads. `images` decodes (and caches) images
    /// with this preparer's preprocessing.
    pub fn prepare(&self, sample: &data::Sample, images: Option<&data::ImageCache>) -> Result<PreparedInput, BackboneError> {
        match self {
            Self::Text(_) => Ok(PreparedInput::Text(sample.text.clone().ok_or_else(|| missing(sample, Modality::Text))?)),
            Self::Image(modality, pre) => {
                let path = match modality {
                    Modality::Depth => sample.depth.as_ref(),
                    _ => sample.image.as_ref(),
                }
                .ok_or_else(|| missing(sample, *modality))?;
                Ok(PreparedInput::Pixels(match images {
                    Some(cached) => cached.pixels(path)?,
                    None => pre.load(path)?,
                }))
            }
            Self::Audio { seconds, mel } => {
                let path = sample.audio.as_ref().ok_or_else(|| missing(sample, Modality::Audio))?;
                let (samples, rate) = data::read_wav(path)?;
                let samples = data::resample(&samples, rate, crate::audio::log_mel::SAMPLE_RATE as u32);
                let len = (seconds * crate::audio::log_mel::SAMPLE_RATE as f64).round() as usize;
                Ok(PreparedInput::Mel(mel.compute(&crate::audio::log_mel::pad_or_trim(&samples, len))))
            }
        }
    }

    /// Collates prepared inputs into one batch.
    ///
    /// # Shapes
    /// - output: tokens `[n, longest]`, pixels `[n, 3, size, size]` or mel `[n, n_mels, frames]`
    ///
    /// # Panics
    /// If an item was not prepared by this preparer.
    pub fn collate<B: Backend>(&self, items: &[&PreparedInput], device: &B::Device) -> Result<AnyInput<B>, BackboneError> {
        let n = items.len();
        match self {
            Self::Text(tokenizer) => {
                let texts: Vec<&str> = items
                    .iter()
                    .map(|i| match i {
                        PreparedInput::Text(t) => t.as_str(),
                        other => panic!("expected text, got {other:?}"),
                    })
                    .collect();
                Ok(AnyInput::Tokens(tokenizer.encode(&texts, device)?))
            }
            Self::Image(_, pre) => {
                let flat = flatten(items, |i| matches!(i, PreparedInput::Pixels(_)));
                Ok(AnyInput::Pixels(Tensor::from_data(burn::tensor::TensorData::new(flat, [n, 3, pre.size, pre.size]), device)))
            }
            Self::Audio { mel, .. } => {
                let flat = flatten(items, |i| matches!(i, PreparedInput::Mel(_)));
                let n_mels = mel.n_mels();
                let frames = flat.len() / (n * n_mels).max(1);
                Ok(AnyInput::Mel(Tensor::from_data(burn::tensor::TensorData::new(flat, [n, n_mels, frames]), device)))
            }
        }
    }
}

fn flatten(items: &[&PreparedInput], expected: impl Fn(&PreparedInput) -> bool) -> Vec<f32> {
    let mut flat = Vec::new();
    for item in items {
        assert!(expected(item), "item prepared for another encoder: {item:?}");
        match item {
            PreparedInput::Pixels(v) | PreparedInput::Mel(v) => flat.extend_from_slice(v),
            PreparedInput::Text(_) => unreachable!(),
        }
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_family_reads_a_users_directory_at_its_configured_size() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let name = format!("vit-base-patch16-224={}", fixtures.join("tiny-vit").display());
        assert_eq!(modality_of(&name).unwrap(), Modality::Image);
        let loaded = load_encoder::<burn::backend::Flex>(&name, Path::new("/nonexistent"), EncoderOptions::default(), &Default::default()).unwrap();
        assert!(matches!(loaded.encoder, AnyEncoder::ViT(_)));
        // The fixture's config.json says 32 pixels; the preset's normalisation is kept.
        assert!(matches!(loaded.preparer, InputPreparer::Image(Modality::Image, p) if p.size == 32 && p.mean == [0.5; 3]), "{:?}", loaded.preparer);
        let missing = format!("vit-base-patch16-224={}", fixtures.join("tiny-bert-nowhere").display());
        let error = load_encoder::<burn::backend::Flex>(&missing, Path::new("."), EncoderOptions::default(), &Default::default()).unwrap_err().to_string();
        assert!(error.contains("tiny-bert-nowhere/config.json: not found") && error.contains("`vit-base-patch16-224=<dir>` reads config.json, model.safetensors"), "{error}");
    }

    #[test]
    fn hybrid_names_may_pick_the_cnn_feature_index() {
        let index = |cnn: &str| hybrid_cnn("x", cnn).map(|(preset, i)| (preset.name, i)).unwrap();
        assert_eq!(index("mobilenet-v2"), ("mobilenet-v2", 13));
        assert_eq!(index("mobilenet-v2@18"), ("mobilenet-v2", 18));
        assert_eq!(index("efficientnet-lite0"), ("efficientnet-lite0", 11));
        assert_eq!(index("efficientnet-lite0@17"), ("efficientnet-lite0", 17));
        assert_eq!(modality_of("mobilenet-v2@7+all-minilm-l6-v2").unwrap(), Modality::Image);
        assert_eq!(modality_of("efficientnet-lite0@17+whisper-base").unwrap(), Modality::Image);
        for (bad, says) in [
            ("mobilenet-v2@19+all-minilm-l6-v2", "a number from 1 to 18"),
            ("mobilenet-v2@0+all-minilm-l6-v2", "a number from 1 to 18"),
            ("mobilenet-v2@top+all-minilm-l6-v2", "a number from 1 to 18"),
            ("efficientnet-lite0@18+whisper-base", "a number from 1 to 17"),
            ("all-minilm-l6-v2+whisper-base", "needs a CNN preset first (mobilenet-v2, efficientnet-lite0), not `all-minilm-l6-v2`"),
            ("resnet-50+whisper-base", "needs a CNN preset first (mobilenet-v2, efficientnet-lite0), not `resnet-50`"),
            ("mobilenet-v2+vit-base-patch16-224", "needs a BERT-family or Whisper preset second (all-minilm-l6-v2, bert-base-uncased, whisper-base)"),
        ] {
            let message = modality_of(bad).unwrap_err().to_string();
            assert!(message.contains(bad) && message.contains(says), "{message}");
        }
        let error = load_encoder::<burn::backend::Flex>("mobilenet-v2+efficientnet-lite0", Path::new("/nonexistent"), EncoderOptions::default(), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs a BERT-family or Whisper preset second") && error.contains("not `efficientnet-lite0`"), "{error}");
    }
}
