//! A frozen ImageNet CNN of either family, behind one type: [`MobileNetV2`] (torchvision) or
//! [`EfficientNetLite`] (TensorFlow's Lite0). What the CNN-token hybrid ([`crate::hybrid`]) reads
//! its tokens from, and, alone, a zero-layer encoder whose pooled features can route the
//! experts (it has no layer to prompt).

use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};

use crate::efficientnet_lite::EfficientNetLite;
use crate::mobilenet_v2::MobileNetV2;

/// One of the frozen CNNs.
#[derive(Module, Debug)]
pub enum Cnn<B: Backend> {
    /// torchvision's MobileNetV2.
    MobileNetV2(MobileNetV2<B>),
    /// EfficientNet-Lite.
    EfficientNetLite(EfficientNetLite<B>),
}

impl<B: Backend> Cnn<B> {
    /// Index of the last map, the 1×1 head convolution's (18 for MobileNetV2, 17 for
    /// EfficientNet-Lite0): what [`features`](Self::features) pools.
    pub fn head_index(&self) -> usize {
        match self {
            Self::MobileNetV2(n) => n.blocks.len() + 1,
            Self::EfficientNetLite(n) => n.head_index(),
        }
    }

    /// The feature map at `index` (0: stem; 1 to `head_index - 1`: after each block; the head).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, channels, h', w']`
    ///
    /// # Panics
    /// If `index > head_index`.
    pub fn feature_map(&self, pixels: Tensor<B, 4>, index: usize) -> Tensor<B, 4> {
        match self {
            Self::MobileNetV2(n) => n.feature_map(pixels, index),
            Self::EfficientNetLite(n) => n.feature_map(pixels, index),
        }
    }

    /// Channels of the map at `index`.
    ///
    /// # Panics
    /// If `index > head_index`.
    pub fn feature_channels(&self, index: usize) -> usize {
        match self {
            Self::MobileNetV2(n) => n.feature_channels(index),
            Self::EfficientNetLite(n) => n.feature_channels(index),
        }
    }

    /// Globally averaged final features.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, channels of the head]`
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Self::MobileNetV2(n) => n.features(pixels),
            Self::EfficientNetLite(n) => n.features(pixels),
        }
    }
}

/// The CNN as a zero-layer encoder: its pooled ImageNet features are one token, and there is no
/// layer to prompt. This lets a CNN be the *complementary* encoder whose representation routes
/// the experts (its features are frozen and cached); it cannot be the prompted main encoder.
impl<B: Backend> PromptableEncoder<B> for Cnn<B> {
    /// Normalised pixels `[batch, 3, height, width]`.
    type Input = Tensor<B, 4>;

    fn d_model(&self) -> usize {
        self.feature_channels(self.head_index())
    }

    fn num_layers(&self) -> usize {
        0
    }

    fn num_prefix_tokens(&self) -> usize {
        0
    }

    /// # Shapes
    /// - `pixels`: `[batch, 3, height, width]`
    /// - output tokens: `[batch, 1, channels]` (the pooled features), no mask
    fn embed(&self, pixels: &Tensor<B, 4>) -> EncoderTokens<B> {
        EncoderTokens { tokens: self.features(pixels.clone()).unsqueeze_dim(1), mask_pad: None }
    }

    fn layer(&self, index: usize, _: Tensor<B, 3>, _: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        panic!("a CNN has no layer {index} to prompt: it is a zero-layer encoder")
    }

    /// # Shapes
    /// - `tokens`: `[batch, 1, channels]`; output `[batch, channels]`
    fn pool(&self, tokens: Tensor<B, 3>, _: Option<Tensor<B, 2, Bool>>, _: usize) -> Tensor<B, 2> {
        let [batch, _, channels] = tokens.dims();
        tokens.slice([0..batch, 0..1, 0..channels]).reshape([batch, channels])
    }
}
