//! A frozen ImageNet CNN made of inverted residual blocks: MobileNetV2 (torchvision) and
//! EfficientNet-Lite (TensorFlow's Lite0) are both this network, built by their configurations
//! ([`MobileNetV2Config`](crate::MobileNetV2Config), [`EfficientNetLiteConfig`](crate::EfficientNetLiteConfig))
//! and loaded through their key maps. The CNN-token hybrid ([`crate::hybrid`]) reads its tokens
//! from a [`Cnn`]'s maps; alone, a [`Cnn`] is a zero-layer encoder whose pooled features can
//! route the experts or feed a late-fusion head (it has no layer to prompt).

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{EncoderTokens, PromptableEncoder};

use crate::error::BackboneError;
use crate::inverted_residual::{ConvBn, InvertedResidual};
use crate::weights::{LoadReport, Source, load_safetensors};

/// Stem, inverted residual blocks, a 1×1 head convolution and an optional classifier.
#[derive(Module, Debug)]
pub struct Cnn<B: Backend> {
    /// 3×3 stride-2 stem.
    pub stem: ConvBn<B>,
    /// The inverted residual blocks (17 for MobileNetV2, 16 for EfficientNet-Lite0).
    pub blocks: Vec<InvertedResidual<B>>,
    /// 1×1 convolution to the final width.
    pub head: ConvBn<B>,
    /// Classifier on the pooled features.
    pub classifier: Option<Linear<B>>,
}

impl<B: Backend> Cnn<B> {
    /// Folds every frozen batch norm into its convolution ([`ConvBn::fold`]); done on loading.
    pub fn fold_batch_norms(self) -> Self {
        let blocks = self.blocks.into_iter().map(InvertedResidual::fold).collect();
        Self { stem: self.stem.fold(), blocks, head: self.head.fold(), ..self }
    }

    /// Index of the head's map (18 for MobileNetV2, 17 for EfficientNet-Lite0): what
    /// [`features`](Self::features) pools.
    pub fn head_index(&self) -> usize {
        self.blocks.len() + 1
    }

    /// The feature map after the stem (index 0), block `index - 1`, or the head
    /// ([`head_index`](Self::head_index)). For MobileNetV2 these are torchvision's `features`
    /// indices: `features.13` gives 14×14×96 and `features.18` 7×7×1280 for a 224×224 input;
    /// EfficientNet-Lite0's 11 gives 14×14×112 and 17 gives 7×7×1280.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, channels, h', w']`
    ///
    /// # Panics
    /// If `index` is past the head.
    pub fn feature_map(&self, pixels: Tensor<B, 4>, index: usize) -> Tensor<B, 4> {
        assert!(index <= self.head_index(), "feature index {index} out of range 0..={}", self.head_index());
        let mut x = self.stem.forward(pixels);
        for block in self.blocks.iter().take(index) {
            x = block.forward(x);
        }
        if index == self.head_index() { self.head.forward(x) } else { x }
    }

    /// Channels of [`feature_map`](Self::feature_map)`(_, index)`, read from the weights' shapes.
    ///
    /// # Panics
    /// If `index` is past the head.
    pub fn feature_channels(&self, index: usize) -> usize {
        match index {
            0 => self.stem.out_channels(),
            i if i <= self.blocks.len() => self.blocks[i - 1].project.out_channels(),
            i if i == self.head_index() => self.head.out_channels(),
            i => panic!("feature index {i} out of range 0..={}", self.head_index()),
        }
    }

    /// Globally averaged final features.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, head channels]`
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let map = self.feature_map(pixels, self.head_index());
        let [batch, channels, height, width] = map.dims();
        map.reshape([batch, channels, height * width]).mean_dim(2).reshape([batch, channels])
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, num_classes]`
    ///
    /// # Panics
    /// If the network was built without a classifier.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let classifier = self.classifier.as_ref().expect("CNN built without a classifier (num_classes = None)");
        classifier.forward(self.features(pixels))
    }
}

/// Where a [`ConvBn`] parameter comes from in a checkpoint that keeps its convolution under
/// `conv` and its batch norm under `bn`; `rest` is the parameter path below the `ConvBn`
/// (`conv.weight`, `bn.running_mean`, …).
pub fn conv_bn_source(conv: &str, bn: &str, rest: &[&str]) -> Option<Source> {
    match rest {
        ["conv", "weight"] => Some(Source::Copy(format!("{conv}.weight"))),
        ["bn", leaf @ ("weight" | "bias" | "running_mean" | "running_var")] => Some(Source::Copy(format!("{bn}.{leaf}"))),
        _ => None,
    }
}

/// Loads `network`'s weights from the safetensors file `path` through `key`, then folds its
/// batch norms; a missing file is named with `hint` (how to get it).
pub(crate) fn load_folded<B: Backend>(
    network: Cnn<B>,
    path: &Path,
    key: fn(&str) -> Option<Source>,
    hint: &str,
) -> Result<(Cnn<B>, LoadReport), BackboneError> {
    if !path.exists() {
        return Err(BackboneError::MissingFile { path: path.to_path_buf(), hint: hint.into() });
    }
    let (model, report) = load_safetensors(network, path, key)?;
    Ok((model.fold_batch_norms(), report))
}

/// The CNN as a zero-layer encoder: its pooled ImageNet features are one token, and there is no
/// layer to prompt. This lets a CNN be the *complementary* encoder whose representation routes
/// the experts, or a frozen feature under late fusion (main encoder or pMoE-family expert; its
/// features are frozen and cached); it cannot be a prompted encoder.
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

    /// # Panics
    /// Always: a CNN has no layer to prompt.
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
