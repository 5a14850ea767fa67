//! A frozen image transformer made of real pretrained models available from the package
//! registries: a CNN's feature map ([`Cnn`]: MobileNetV2 or EfficientNet-Lite0), read as a
//! sequence of tokens, fed into the frozen pretrained transformer layers of a text encoder
//! (BERT-family, e.g. all-MiniLM-L6-v2) or of Whisper's audio encoder, in the spirit of
//! "pretrained transformers as universal computation engines" (Lu et al. 2022). No pretrained ViT
//! exists in any registry these machines reach; this gives MoPE and pMoE a real frozen
//! transformer over images to insert prompts into, and pMoE experts that share no pretrained
//! weights (MobileNetV2 into MiniLM, EfficientNet-Lite0 into Whisper).
//!
//! ```text
//! pixels → CNN up to map k (frozen)  [B, C, h, w] → [B, h·w, C]
//!        → projection C → d_model (trained: part of the adapter)
//!        → BERT:    [word_embedding([CLS]) ; projected] + positions, embedding norm (frozen)
//!          Whisper: projected + the first h·w sinusoidal positions (no [CLS])
//!        → transformer layers (frozen, prompts inserted here) → mean of the tokens
//! ```
//! The projection is the one part that cannot be pretrained: it maps CNN channels into the
//! transformer's embedding space. It stays trainable when the encoder is frozen
//! ([`PromptableEncoder::freeze`]) and is counted and saved with the adapter.

use std::ops::Range;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::Kernels;

use crate::audio::whisper::WhisperEncoder;
use crate::cnn::Cnn;
use crate::frozen_map_memo::FrozenMapMemo;
use crate::token_encoder::TokenEncoder;

/// The pretrained transformer whose layers a [`CnnTokenEncoder`] drives.
// One per encoder: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TokenTransformer<B: Backend> {
    /// A BERT-family encoder: a `[CLS]` token first, its position embeddings and embedding norm.
    Bert(TokenEncoder<B>),
    /// Whisper's audio encoder: its sinusoidal positions, pre-norm layers and final norm.
    Whisper(WhisperEncoder<B>),
}

impl<B: Backend> TokenTransformer<B> {
    /// Token width.
    pub fn d_model(&self) -> usize {
        match self {
            Self::Bert(e) => e.word_embeddings.weight.dims()[1],
            Self::Whisper(e) => e.positions.dims()[1],
        }
    }
}

impl<B: Kernels> TokenTransformer<B> {
    fn encoder(&self) -> &dyn TransformerLayers<B> {
        match self {
            Self::Bert(e) => e,
            Self::Whisper(e) => e,
        }
    }
}

/// What [`CnnTokenEncoder`] needs of either transformer, as an object (the two `Input` types differ).
trait TransformerLayers<B: Backend> {
    fn depth(&self) -> usize;
    fn prefix(&self) -> usize;
    fn run_layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3>;
    fn run_layer_discarding(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3>;
    fn pool_reads_prompt_outputs(&self) -> bool;
    fn run_pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2>;
}

impl<B: Kernels, E: PromptableEncoder<B>> TransformerLayers<B> for E {
    fn depth(&self) -> usize {
        self.num_layers()
    }
    fn prefix(&self) -> usize {
        self.num_prefix_tokens()
    }
    fn run_layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        self.layer(index, tokens, mask_pad)
    }
    fn run_layer_discarding(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3> {
        self.layer_discarding(index, tokens, mask_pad, discard)
    }
    fn pool_reads_prompt_outputs(&self) -> bool {
        self.pool_reads_prompts()
    }
    fn run_pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        self.pool(tokens, mask_pad, num_prompts)
    }
}

/// CNN feature-map tokens into a pretrained transformer.
#[derive(Module, Debug)]
pub struct CnnTokenEncoder<B: Backend> {
    /// Frozen CNN (no classifier).
    pub cnn: Cnn<B>,
    /// Trainable projection of CNN channels to the transformer width.
    pub projection: Linear<B>,
    /// Frozen transformer.
    pub transformer: TokenTransformer<B>,
    #[module(skip)]
    feature_index: usize,
    /// The BERT vocabulary's `[CLS]` id (Whisper has no `[CLS]`).
    #[module(skip)]
    cls_id: usize,
    /// The CNN's maps kept per image (off unless [`CnnTokenEncoder::with_frozen_map_memo`]).
    #[module(skip)]
    memo: FrozenMapMemo,
}

impl<B: Backend> CnnTokenEncoder<B> {
    /// Assembles the encoder from its two pretrained parts. `feature_index` is the CNN map whose
    /// cells become the tokens (MobileNetV2's 13: 14×14×96 for 224×224 images; 18: 7×7×1280);
    /// `cls_id` is a BERT vocabulary's `[CLS]` id (101 for BERT's; unused with Whisper).
    pub fn new(cnn: Cnn<B>, transformer: TokenTransformer<B>, feature_index: usize, cls_id: usize, device: &B::Device) -> Self {
        let channels = cnn.feature_channels(feature_index);
        let d_model = transformer.d_model();
        Self {
            cnn,
            projection: LinearConfig::new(channels, d_model).init(device),
            transformer,
            feature_index,
            cls_id,
            memo: FrozenMapMemo::default(),
        }
    }

    /// Keeps the frozen CNN's maps per image, up to `budget` bytes (0: none), so that training
    /// computes each image's map once: the CNN is frozen and nothing before it trains.
    pub fn with_frozen_map_memo(self, budget: usize) -> Self {
        Self { memo: FrozenMapMemo::with_budget(budget), ..self }
    }

    /// The tokens it makes of a `side × side` image (its CNN map's cells, after a `[CLS]` for a
    /// BERT), and the most its transformer takes (its positions): the CNN runs once on a blank
    /// image of that size on `device` to find its map's size. (The projection is not touched:
    /// reading even its device would draw its lazily initialised weights before the seed is set.)
    pub fn tokens_and_limit(&self, side: usize, device: &B::Device) -> (usize, usize) {
        let [_, _, h, w] = self.cnn.feature_map(Tensor::zeros([1, 3, side, side], device), self.feature_index).dims();
        match &self.transformer {
            TokenTransformer::Bert(bert) => (1 + h * w, bert.max_position()),
            TokenTransformer::Whisper(whisper) => (h * w, whisper.max_positions()),
        }
    }
}

impl<B: Kernels> PromptableEncoder<B> for CnnTokenEncoder<B> {
    /// Normalised pixels `[batch, 3, height, width]` (the CNN's normalisation).
    type Input = Tensor<B, 4>;

    fn d_model(&self) -> usize {
        self.transformer.d_model()
    }

    fn num_layers(&self) -> usize {
        self.transformer.encoder().depth()
    }

    fn num_prefix_tokens(&self) -> usize {
        self.transformer.encoder().prefix()
    }

    /// # Shapes
    /// - `pixels`: `[batch, 3, height, width]`
    /// - output tokens: `[batch, prefix + h·w, d_model]` (prefix: 1 `[CLS]` for BERT, 0 for
    ///   Whisper), no mask
    fn embed(&self, pixels: &Tensor<B, 4>) -> EncoderTokens<B> {
        // The CNN is frozen and nothing before it trains: no graph is kept through it, and its
        // map of an image is a constant (kept by the memo when it is on).
        let map = self.memo.map(pixels, |pixels| self.cnn.feature_map(pixels, self.feature_index).detach());
        let [batch, channels, h, w] = map.dims();
        let tokens = map.reshape([batch, channels, h * w]).swap_dims(1, 2); // [batch, h·w, channels]
        let projected = self.projection.forward(tokens);
        match &self.transformer {
            TokenTransformer::Bert(bert) => {
                let cls_ids = Tensor::<B, 2, Int>::full([batch, 1], self.cls_id as i64, &projected.device());
                let cls = bert.word_embeddings.forward(cls_ids);
                bert.embed_vectors(Tensor::cat(vec![cls, projected], 1))
            }
            TokenTransformer::Whisper(whisper) => whisper.embed_vectors(projected),
        }
    }

    fn layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        self.transformer.encoder().run_layer(index, tokens, mask_pad)
    }

    fn layer_discarding(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, discard: Range<usize>) -> Tensor<B, 3> {
        self.transformer.encoder().run_layer_discarding(index, tokens, mask_pad, discard)
    }

    fn pool_reads_prompts(&self) -> bool {
        self.transformer.encoder().pool_reads_prompt_outputs()
    }

    fn pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        self.transformer.encoder().run_pool(tokens, mask_pad, num_prompts)
    }

    /// The CNN's grid of tokens after the transformer (14×14 for a 224 input at MobileNetV2's
    /// features.13).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, prefix + prompts + h·w, d_model]`; output `[batch, d_model, h, w]`
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        Some(mope_core::square_feature_map(tokens, self.num_prefix_tokens() + num_prompts))
    }

    /// The projection.
    fn keeps_trainable_part(&self) -> bool {
        true
    }

    /// Freezes the CNN and the transformer; the projection stays trainable.
    fn freeze(self) -> Self {
        Self { cnn: self.cnn.no_grad(), transformer: self.transformer.no_grad(), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::whisper::WhisperEncoderConfig;
    use crate::efficientnet_lite::EfficientNetLiteConfig;
    use crate::mobilenet_v2::MobileNetV2Config;
    use crate::pooling::Pooling;
    use crate::token_encoder::TokenEncoderConfig;
    use burn::backend::{Autodiff, Flex};
    use mope_core::forward_prompted;

    type AB = Autodiff<Flex>;

    fn small<B: Kernels>(device: &B::Device) -> CnnTokenEncoder<B> {
        let cnn = MobileNetV2Config::new().with_width_mult(0.25).with_num_classes(None).init(device);
        let transformer = TokenEncoderConfig::new(30, 16, 2, 32, 2).with_max_position(80).with_pooling(Pooling::Mean).init(device);
        CnnTokenEncoder::new(cnn, TokenTransformer::Bert(transformer), 13, 2, device)
    }

    #[test]
    fn feature_map_cells_become_tokens_after_cls() {
        let device = Default::default();
        let encoder = small::<Flex>(&device);
        let pixels = Tensor::<Flex, 4>::random([2, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let embedded = encoder.embed(&pixels);
        // features.13 of a 64×64 image at width 0.25: 4×4 cells of 24 channels.
        assert_eq!(embedded.tokens.dims(), [2, 1 + 16, 16]);
        let out = forward_prompted(&encoder, embedded, &mut ());
        assert_eq!(out.pooled.dims(), [2, 16]);
    }

    /// The tokens an image size makes, against the transformer's positions: what setup checks
    /// before training (80 positions: 64×64 makes 1 + 4×4, 560×560 makes 1 + 35×35).
    #[test]
    fn tokens_and_limit_count_the_map_s_cells() {
        let device = Default::default();
        let encoder = small::<Flex>(&device);
        assert_eq!(encoder.tokens_and_limit(64, &device), (17, 80));
        assert_eq!(encoder.tokens_and_limit(560, &device), (1 + 35 * 35, 80));
        // The trainable projection's weights are drawn lazily, after the run's seed is set: the
        // check must not draw them (it once did, and pMoE's runs stopped repeating their seed).
        assert!(!encoder.projection.weight.is_initialized() && !encoder.projection.bias.as_ref().unwrap().is_initialized());
    }

    #[test]
    fn freezing_keeps_only_the_projection_trainable() {
        let device = Default::default();
        let encoder = small::<AB>(&device).freeze();
        let trainable: Vec<String> = mope_core::float_params::<AB, _>(&encoder, |_, _| false)
            .into_iter()
            .filter(|p| p.trainable)
            .map(|p| p.path)
            .collect();
        assert_eq!(trainable, ["projection.weight", "projection.bias"]);
    }

    #[test]
    fn efficientnet_tokens_enter_whisper_without_a_cls_token() {
        let device = Default::default();
        let cnn = EfficientNetLiteConfig::lite0().with_num_classes(None).init::<Flex>(&device);
        let whisper = WhisperEncoderConfig::new(8, 16, 2, 32, 2).with_max_positions(20).init(&device);
        let encoder = CnnTokenEncoder::new(cnn, TokenTransformer::Whisper(whisper), 17, 0, &device);
        assert_eq!((encoder.d_model(), encoder.num_layers(), encoder.num_prefix_tokens()), (16, 2, 0));
        let pixels = Tensor::<Flex, 4>::random([2, 3, 96, 96], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let embedded = encoder.embed(&pixels);
        // The head map of a 96×96 image: 3×3 cells, each a token, positions added, nothing before them.
        assert_eq!(embedded.tokens.dims(), [2, 9, 16]);
        let out = forward_prompted(&encoder, embedded, &mut ());
        assert_eq!(out.pooled.dims(), [2, 16]);
        assert_eq!(PromptableEncoder::feature_map(&encoder, out.tokens, 0).unwrap().dims(), [2, 16, 3, 3]);
    }
}
