//! A frozen image transformer made of two real pretrained models available from the package
//! registries: MobileNetV2's feature map, read as a sequence of tokens, fed into the frozen
//! pretrained transformer layers of a BERT-family text encoder (all-MiniLM-L6-v2 by default), in
//! the spirit of "pretrained transformers as universal computation engines" (Lu et al. 2022).
//! No pretrained ViT exists in any registry these machines reach; this gives MoPE and pMoE a
//! real frozen transformer over images to insert prompts into.
//!
//! ```text
//! pixels → MobileNetV2 features[..=k] (frozen)  [B, C, h, w] → [B, h·w, C]
//!        → projection C → d_model (trained: part of the adapter)
//!        → [word_embedding([CLS]) ; projected] + positions, embedding norm (frozen)
//!        → transformer layers (frozen, prompts inserted here) → pooling
//! ```
//! The projection is the one part that cannot be pretrained: it maps CNN channels into the
//! transformer's embedding space. It stays trainable when the encoder is frozen
//! ([`PromptableEncoder::freeze`]) and is counted and saved with the adapter.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};
use ops::Kernels;

use crate::bert::load_bert;
use crate::error::BackboneError;
use crate::frozen_map_memo::FrozenMapMemo;
use crate::mobilenet_v2::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use crate::pooling::Pooling;
use crate::token_encoder::TokenEncoder;

/// MobileNetV2 feature-map tokens into a pretrained transformer.
#[derive(Module, Debug)]
pub struct CnnTokenEncoder<B: Backend> {
    /// Frozen CNN (no classifier).
    pub cnn: MobileNetV2<B>,
    /// Trainable projection of CNN channels to the transformer width.
    pub projection: Linear<B>,
    /// Frozen transformer: its embeddings give `[CLS]`, positions and the embedding norm.
    pub transformer: TokenEncoder<B>,
    #[module(skip)]
    feature_index: usize,
    #[module(skip)]
    cls_id: usize,
    /// The CNN's maps kept per image (off unless [`CnnTokenEncoder::with_frozen_map_memo`]).
    #[module(skip)]
    memo: FrozenMapMemo,
}

impl<B: Backend> CnnTokenEncoder<B> {
    /// Assembles the encoder from its two pretrained parts. `feature_index` is torchvision's
    /// `features` index whose output becomes the tokens (13: 14×14×96 for 224×224 images;
    /// 18: 7×7×1280); `cls_id` is the transformer vocabulary's `[CLS]` id (101 for BERT's).
    pub fn new(cnn: MobileNetV2<B>, transformer: TokenEncoder<B>, feature_index: usize, cls_id: usize, device: &B::Device) -> Self {
        let channels = cnn.feature_channels(feature_index);
        let d_model = transformer.word_embeddings.weight.dims()[1];
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
}

impl<B: Kernels> PromptableEncoder<B> for CnnTokenEncoder<B> {
    /// Normalised pixels `[batch, 3, height, width]` (ImageNet statistics).
    type Input = Tensor<B, 4>;

    fn d_model(&self) -> usize {
        self.transformer.d_model()
    }

    fn num_layers(&self) -> usize {
        self.transformer.num_layers()
    }

    fn num_prefix_tokens(&self) -> usize {
        1
    }

    /// # Shapes
    /// - `pixels`: `[batch, 3, height, width]`
    /// - output tokens: `[batch, 1 + h·w, d_model]`, no mask
    fn embed(&self, pixels: &Tensor<B, 4>) -> EncoderTokens<B> {
        // The CNN is frozen and nothing before it trains: no graph is kept through it, and its
        // map of an image is a constant (kept by the memo when it is on).
        let map = self.memo.map(pixels, |pixels| self.cnn.feature_map(pixels, self.feature_index).detach());
        let [batch, channels, h, w] = map.dims();
        let tokens = map.reshape([batch, channels, h * w]).swap_dims(1, 2); // [batch, h·w, channels]
        let projected = self.projection.forward(tokens);
        let device = projected.device();
        let cls_ids = Tensor::<B, 2, Int>::full([batch, 1], self.cls_id as i64, &device);
        let cls = self.transformer.word_embeddings.forward(cls_ids);
        self.transformer.embed_vectors(Tensor::cat(vec![cls, projected], 1))
    }

    fn layer(&self, index: usize, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        self.transformer.layer(index, tokens, mask_pad)
    }

    fn pool(&self, tokens: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, num_prompts: usize) -> Tensor<B, 2> {
        self.transformer.pool(tokens, mask_pad, num_prompts)
    }

    /// The CNN's grid of tokens after the transformer (14×14 for a 224 input at features.13).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, 1 + prompts + h·w, d_model]`; output `[batch, d_model, h, w]`
    fn feature_map(&self, tokens: Tensor<B, 3>, num_prompts: usize) -> Option<Tensor<B, 4>> {
        Some(mope_core::square_feature_map(tokens, 1 + num_prompts))
    }

    /// Freezes the CNN and the transformer; the projection stays trainable.
    fn freeze(self) -> Self {
        Self { cnn: self.cnn.no_grad(), transformer: self.transformer.no_grad(), ..self }
    }
}

/// Loads MobileNetV2 (`model.safetensors` of torchvision's weights) and a BERT-family snapshot
/// directory, and assembles them.
pub fn load_cnn_token_encoder<B: Backend>(
    mobilenet: &Path,
    transformer_dir: &Path,
    feature_index: usize,
    device: &B::Device,
) -> Result<CnnTokenEncoder<B>, BackboneError> {
    let (cnn, _) = load_mobilenet_v2(mobilenet, &MobileNetV2Config::new().with_num_classes(None), device)?;
    let (transformer, _) = load_bert(transformer_dir, Pooling::Mean, device)?;
    Ok(CnnTokenEncoder::new(cnn, transformer, feature_index, 101, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_encoder::TokenEncoderConfig;
    use burn::backend::{Autodiff, Flex};
    use mope_core::forward_prompted;

    type AB = Autodiff<Flex>;

    fn small<B: Backend>(device: &B::Device) -> CnnTokenEncoder<B> {
        let cnn = MobileNetV2Config::new().with_width_mult(0.25).with_num_classes(None).init(device);
        let transformer = TokenEncoderConfig::new(30, 16, 2, 32, 2).with_max_position(80).with_pooling(Pooling::Mean).init(device);
        CnnTokenEncoder::new(cnn, transformer, 13, 2, device)
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
}
