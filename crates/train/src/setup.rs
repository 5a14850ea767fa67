//! Setting a run up: the encoders an experiment names loaded, checked against its method, and
//! the model built around them from the seed, with the sample preparation its encoders need.

use std::sync::Arc;

use anyhow::{Context, Result};
use backbones::{AnyEncoder, EncoderOptions, LoadedEncoder, load_encoder};
use burn::tensor::backend::Backend;
use data::Task;
use mope_core::materialize;
use ops::Kernels;
use serde_json::json;

use crate::feature_cache::{self, FeatureStores};
use crate::model::{ExpertsModel, Model, PixelAdapt};
use crate::objective::Objective;
use crate::pair::PairPrepare;
use crate::spec::ExperimentSpec;

/// A model ready to train or evaluate, with what it needs around it.
#[derive(Debug)]
pub struct Setup<B: Backend> {
    /// The model, encoders frozen.
    pub model: Model<B>,
    /// Sample preparation for its encoders.
    pub prepare: Arc<PairPrepare>,
    /// Loss and metrics.
    pub objective: Task,
    /// Class (label) names.
    pub labels: Vec<String>,
    /// The model's configuration (saved in adapters): a `MultimodalClassifierConfig` or a
    /// `PmoeConfig`.
    pub classifier: serde_json::Value,
    /// Names of the encoders (saved in adapters).
    pub base_model: serde_json::Value,
    /// Where constant features are kept between runs (see [`FeatureCache`](crate::FeatureCache)).
    pub feature_stores: FeatureStores,
}

impl<B: Kernels> Setup<B> {
    /// Loads the encoders the experiment names and builds the model.
    ///
    /// Hybrid encoders keep their frozen CNN's map of each image on the CPU backend
    /// ([`backbones::frozen_map_memo`]): computed once per image instead of at every step.
    pub fn load(spec: &ExperimentSpec, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        if spec.model.is_pmoe() {
            return Self::load_experts(spec, labels, objective, device);
        }
        // Checked by name before any weight is read (from_encoders checks loaded encoders).
        if matches!(objective, Task::Segmentation { .. }) && backbones::modality_of(&spec.model.main)? != backbones::Modality::Image {
            anyhow::bail!("segmentation needs an image main encoder (ViT, Swin or a hybrid); `{}` is not one", spec.model.main);
        }
        let weights = spec.weights_dir();
        let options = |depth| encoder_options::<B>(spec, depth, device);
        let main = load_fitted(spec, &spec.model.main, &weights, options(spec.model.main_reads_depth), device)
            .with_context(|| format!("main encoder `{}` (model.main)", spec.model.main))?;
        let complementary = load_fitted(spec, &spec.model.complementary, &weights, options(spec.model.complementary_reads_depth), device)
            .with_context(|| format!("complementary encoder `{}` (model.complementary)", spec.model.complementary))?;
        Self::from_encoders(spec, main, complementary, labels, objective, device)
    }

    /// Builds the classifier around two loaded encoders.
    pub fn from_encoders(
        spec: &ExperimentSpec,
        main: LoadedEncoder<B>,
        complementary: LoadedEncoder<B>,
        labels: Vec<String>,
        objective: Task,
        device: &B::Device,
    ) -> Result<Self> {
        use mope_core::PromptableEncoder;
        if matches!(objective, Task::Segmentation { .. }) && (main.encoder.num_layers() == 0 || !matches!(main.preparer, backbones::InputPreparer::Image(..))) {
            anyhow::bail!("segmentation needs a prompted image main encoder (ViT, Swin or a hybrid); `{}` is not one", main.name);
        }
        if matches!(objective, Task::Segmentation { .. }) && spec.model.head_input() == mope_core::HeadInput::Complementary {
            anyhow::bail!("model.head = \"complementary\" has no positions to segment: segmentation heads read the main encoder's patches");
        }
        let method = spec.model.method.fusion().context("a two-encoder method (MoPE and its baselines) needs `model.main` and `model.complementary`")?;
        if main.encoder.num_layers() == 0 && method.prompts_main() {
            anyhow::bail!("main encoder `{}` has no layer to prompt: use it as the complementary encoder, or with method late-fusion or fine-tuning", main.name);
        }
        if complementary.encoder.num_layers() == 0 && spec.model.complementary_prompt_len > 0 {
            anyhow::bail!("complementary encoder `{}` has no layer to prompt: set model.complementary_prompt_len = 0", complementary.name);
        }
        let cache_dir = spec.cache_dir();
        let feature_stores = FeatureStores {
            main: cache_dir.as_ref().map(|dir| feature_cache::store_path(dir, spec, &format!("main:{}", main.name), &main.weights, spec.model.main_reads_depth)),
            complementary: cache_dir
                .as_ref()
                .map(|dir| feature_cache::store_path(dir, spec, &complementary.name, &complementary.weights, spec.model.complementary_reads_depth)),
        };
        B::seed(device, spec.train.seed);
        // Trainable encoder parts (the hybrid's projection) are drawn from the seed first.
        let main_encoder = materialize(main.encoder);
        let classifier = spec.classifier_config(objective.num_outputs());
        let model = Model::Fusion(classifier.init(main_encoder, complementary.encoder, device));
        Ok(Self {
            model,
            prepare: Arc::new(PairPrepare::new(main.preparer, Some(complementary.preparer), cache_dir.map(|c| c.join("images")))),
            objective,
            labels,
            classifier: serde_json::to_value(&classifier)?,
            base_model: json!({ "main": main.name, "complementary": complementary.name }),
            feature_stores,
        })
    }

    /// Loads the image experts a pMoE-family experiment names and builds the model.
    fn load_experts(spec: &ExperimentSpec, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        let weights = spec.weights_dir();
        let options = encoder_options::<B>(spec, spec.model.main_reads_depth, device);
        let experts = spec
            .model
            .experts
            .iter()
            .enumerate()
            .map(|(k, name)| load_fitted(spec, name, &weights, options, device).with_context(|| format!("expert {k} `{name}` (model.experts)")))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_experts(spec, experts, labels, objective, device)
    }

    /// Builds a pMoE-family model around loaded image experts. They all read one prepared
    /// image: the largest crop any of them asks for, with the normalisation of the last expert
    /// that asks for it, adapted on the device to each expert's own ([`PixelAdapt`]: exact, the
    /// normalisations are affine).
    pub fn from_experts(spec: &ExperimentSpec, experts: Vec<LoadedEncoder<B>>, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        use mope_core::PromptableEncoder;
        // Late fusion (`Combine::Concat`) classifies from the experts' pooled features and prompts
        // nothing: any image encoder serves (a CNN's own pooled feature too). The other
        // combinations prompt every expert's layers, and segmentation reads every expert's grid of
        // tokens.
        let config = spec.pmoe_config(objective.num_outputs());
        let segments = matches!(objective, Task::Segmentation { .. });
        let needs_layers = config.combine != pmoe::Combine::Concat || segments;
        let mut preprocess = Vec::with_capacity(experts.len());
        for (k, e) in experts.iter().enumerate() {
            match &e.preparer {
                backbones::InputPreparer::Image(modality, pre) if e.encoder.num_layers() > 0 || !needs_layers => preprocess.push((*modality, *pre)),
                backbones::InputPreparer::Image(..) => {
                    anyhow::bail!("expert {k} `{}` (model.experts) has no layer to prompt: prompted or segmenting experts are ViT, Swin or a hybrid (method late-fusion classifies from any image encoder)", e.name)
                }
                _ => anyhow::bail!("expert {k} `{}` (model.experts): pMoE experts are image encoders", e.name),
            }
        }
        let (_, shared) = *preprocess.iter().max_by_key(|(_, p)| p.size).context("`model.experts` is empty")?;
        let modality = preprocess[0].0;
        let names: Vec<String> = experts.iter().map(|e| e.name.clone()).collect();
        let weights: Vec<std::path::PathBuf> = experts.iter().flat_map(|e| e.weights.clone()).collect();
        let shallowest = experts.iter().map(|e| e.encoder.num_layers()).min().unwrap_or(0);
        anyhow::ensure!(!needs_layers || config.depth <= shallowest, "pmoe.depth = {} exceeds the shallowest expert's {shallowest} layers", config.depth);
        B::seed(device, spec.train.seed);
        // Trainable encoder parts (the hybrids' projections) are drawn from the seed first.
        let encoders: Vec<AnyEncoder<B>> = experts.into_iter().map(|e| materialize(e.encoder)).collect();
        let classifier = config.init(encoders, device);
        let model = Model::Experts(ExpertsModel { classifier, inputs: preprocess.iter().map(|(_, p)| PixelAdapt::new(&shared, p)).collect() });
        Ok(Self {
            model,
            prepare: Arc::new(PairPrepare::new(backbones::InputPreparer::Image(modality, shared), None, spec.cache_dir().map(|c| c.join("images")))),
            objective,
            labels,
            classifier: serde_json::to_value(&config)?,
            feature_stores: FeatureStores {
                main: spec.cache_dir().map(|dir| feature_cache::store_path(&dir, spec, &format!("experts:{}", names.join(",")), &weights, spec.model.main_reads_depth)),
                complementary: None,
            },
            base_model: json!({ "experts": names }),
        })
    }
}

/// The encoder `name` loaded from `weights` and fitted to the experiment's limits ([`fit_to_limits`]).
fn load_fitted<B: Backend>(spec: &ExperimentSpec, name: &str, weights: &std::path::Path, options: EncoderOptions, device: &B::Device) -> Result<LoadedEncoder<B>> {
    fit_to_limits(spec, load_encoder(name, weights, options, device)?)
}

/// Fits what the experiment asks of `encoder`'s inputs to the limits its weights set, before any
/// training: the text is truncated at `model.max_text_tokens` (default: the preset's length,
/// capped at the encoder's positions);
/// a clip of `model.audio_seconds` must give no more tokens than Whisper's positions; a ViT or
/// Swin reads images of the size it was made for (`model.image_size` cannot change it); a
/// CNN-token hybrid's map of the image fits its transformer's positions. Each
/// refusal names the limit, what exceeds it and the key that changes it.
pub fn fit_to_limits<B: Backend>(spec: &ExperimentSpec, mut encoder: LoadedEncoder<B>) -> Result<LoadedEncoder<B>> {
    use backbones::{AnyEncoder, InputPreparer, Swin, ViT};
    let m = &spec.model;
    encoder.preparer = match (&encoder.encoder, encoder.preparer) {
        (AnyEncoder::Text(text), InputPreparer::Text(tokenizer)) => {
            let limit = text.max_position();
            if (1..3).contains(&m.max_text_tokens) {
                anyhow::bail!("model.max_text_tokens = {} leaves no room for text beside [CLS] and [SEP]: at least 3", m.max_text_tokens);
            }
            if m.max_text_tokens > limit {
                anyhow::bail!(
                    "model.max_text_tokens = {} is more than the {limit} positions of the text encoder (its config.json's max_position_embeddings)",
                    m.max_text_tokens
                );
            }
            let tokens = if m.max_text_tokens > 0 { m.max_text_tokens } else { tokenizer.max_len().min(limit) };
            InputPreparer::Text(tokenizer.with_max_len(tokens)?)
        }
        (AnyEncoder::Whisper(whisper), InputPreparer::Audio { seconds, mel }) => {
            const RATE: usize = backbones::audio::log_mel::SAMPLE_RATE;
            let frames = mel.frames((seconds * RATE as f64).round() as usize);
            let (tokens, limit) = (backbones::WhisperEncoder::<B>::tokens_for(frames), whisper.max_positions());
            if frames < 2 {
                anyhow::bail!("model.audio_seconds = {seconds} gives {frames} spectrogram frames: at least 0.02 s");
            }
            if tokens > limit {
                let most = (2 * limit) as f64 / mel.frames(RATE) as f64;
                anyhow::bail!(
                    "model.audio_seconds = {seconds} gives {frames} spectrogram frames, {tokens} encoder tokens: more than the {limit} positions of the audio encoder; set model.audio_seconds to at most {most}"
                );
            }
            InputPreparer::Audio { seconds, mel }
        }
        (AnyEncoder::ViT(vit), InputPreparer::Image(_, pre)) if pre.size != vit.image_size() => {
            anyhow::bail!(image_size_refusal(m.image_size, pre.size, vit.image_size(), "ViT"))
        }
        (AnyEncoder::Swin(swin), InputPreparer::Image(_, pre)) if pre.size != swin.image_size() => {
            anyhow::bail!(image_size_refusal(m.image_size, pre.size, swin.image_size(), "Swin"))
        }
        (AnyEncoder::Hybrid(hybrid), InputPreparer::Image(modality, pre)) => {
            let (tokens, limit) = hybrid.tokens_and_limit(pre.size, &Default::default());
            if tokens > limit {
                anyhow::bail!(
                    "{}×{} images make {tokens} tokens of the CNN's map, more than the {limit} positions of the transformer it feeds: lower model.image_size",
                    pre.size,
                    pre.size
                );
            }
            InputPreparer::Image(modality, pre)
        }
        (AnyEncoder::ViT(ViT { patch_embedding, .. }) | AnyEncoder::Swin(Swin { patch_embedding, .. }), _) if patch_embedding.weight.dims()[1] != 3 => {
            anyhow::bail!(
                "the image encoder reads {}-channel images (its config.json's num_channels); images are prepared with 3 (RGB, or depth tiled to three)",
                patch_embedding.weight.dims()[1]
            )
        }
        (_, preparer) => preparer,
    };
    Ok(encoder)
}

/// Why a ViT or Swin cannot read `asked`-pixel images.
fn image_size_refusal(key: usize, asked: usize, made_for: usize, family: &str) -> String {
    format!(
        "the {family} reads {made_for}×{made_for} images (its config.json's image_size; its position embeddings are made for it), \
         model.image_size = {key} asks for {asked}×{asked}: leave model.image_size at 0 for ViT and Swin encoders"
    )
}

/// How the experiment's encoders read their inputs (`depth`: an image encoder reads the depth
/// image).
fn encoder_options<B: Backend>(spec: &ExperimentSpec, depth: bool, device: &B::Device) -> EncoderOptions {
    EncoderOptions {
        depth,
        audio_seconds: spec.model.audio_seconds,
        image_size: spec.model.image_size,
        frozen_map_memo_bytes: frozen_map_memo_bytes::<B>(device),
        ..EncoderOptions::default()
    }
}

/// The bytes of frozen CNN maps each hybrid encoder keeps: 1 GiB on the CPU backend (`flex`),
/// where the images are on the host anyway; none on a GPU, where keeping them would copy every
/// batch back to the host.
fn frozen_map_memo_bytes<B: Backend>(device: &B::Device) -> usize {
    if B::name(device).contains("flex") { 1 << 30 } else { 0 }
}
