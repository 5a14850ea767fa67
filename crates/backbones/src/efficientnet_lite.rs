//! EfficientNet-Lite (Tan & Le 2019; the "Lite" variants of the TensorFlow model garden, made for
//! mobile accelerators: no squeeze-and-excitation, ReLU6 instead of swish, the stem and head kept
//! at 32 and 1280 channels), loading the ImageNet weights of Lite0 in the key names of
//! EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._expand_conv`, …; converted to safetensors by
//! `cargo xtask fetch-assets`). A second frozen CNN, pretrained apart from MobileNetV2, whose
//! feature maps become tokens for pMoE's experts.
//!
//! The weights were trained in TensorFlow, so every convolution pads as TensorFlow's `SAME` does
//! ([`Padding::TfSame`]: the odd pixel after), batch norms use epsilon 1e-3, and pixels are
//! normalised as `(v - 127) / 128` on the 0-255 scale. `docs/backbones.md` gives the evidence
//! (real photographs, batch-norm statistics) for each of the three.
//!
//! Key map (EfficientNet-PyTorch → burn; `blocks.i` is `_blocks.i`, and block 0 has no expansion):
//!
//! | EfficientNet-PyTorch | burn ([`EfficientNetLite`]) |
//! |---|---|
//! | `_conv_stem`, `_bn0` | `stem.{conv,bn}` |
//! | `_blocks.i._expand_conv`, `._bn0` | `blocks.i.expand.{conv,bn}` |
//! | `_blocks.i._depthwise_conv`, `._bn1` | `blocks.i.depthwise.{conv,bn}` |
//! | `_blocks.i._project_conv`, `._bn2` | `blocks.i.project.{conv,bn}` |
//! | `_conv_head`, `_bn1` | `head.{conv,bn}` |
//! | `_fc` | `classifier` (weight transposed) |

use std::path::Path;

use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;

use crate::cnn::{Cnn, conv_bn_source, load_folded};
use crate::error::BackboneError;
use crate::inverted_residual::{ConvBnShape, InvertedResidualShape, Padding};
use crate::weights::{LoadReport, Source};

/// Batch-norm epsilon of the TensorFlow models.
const BN_EPSILON: f64 = 1e-3;

/// One stage of inverted residual blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Expansion factor of the hidden width.
    pub expansion: usize,
    /// Depthwise kernel side.
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Output channels.
    pub channels: usize,
    /// Blocks.
    pub repeats: usize,
}

const fn stage(expansion: usize, kernel: usize, stride: usize, channels: usize, repeats: usize) -> Stage {
    Stage { expansion, kernel, stride, channels, repeats }
}

/// Configuration of an [`EfficientNetLite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfficientNetLiteConfig {
    /// Stem channels.
    pub stem: usize,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Channels of the 1×1 head convolution (the final features).
    pub head: usize,
    /// Classes of the classifier; `None` for a feature extractor.
    pub num_classes: Option<usize>,
}

impl EfficientNetLiteConfig {
    /// EfficientNet-Lite0 (the B0 stages; 4.65 M parameters with the ImageNet classifier).
    pub fn lite0() -> Self {
        Self {
            stem: 32,
            stages: vec![stage(1, 3, 1, 16, 1), stage(6, 3, 2, 24, 2), stage(6, 5, 2, 40, 2), stage(6, 3, 2, 80, 3), stage(6, 5, 1, 112, 3), stage(6, 5, 2, 192, 4), stage(6, 3, 1, 320, 1)],
            head: 1280,
            num_classes: Some(1000),
        }
    }

    /// The same network with `num_classes` (`None`: no classifier).
    pub fn with_num_classes(self, num_classes: Option<usize>) -> Self {
        Self { num_classes, ..self }
    }

    /// Initialises the network on `device` (random weights; load pretrained ones afterwards).
    pub fn init<B: Backend>(&self, device: &B::Device) -> EfficientNetLite<B> {
        let padding = Padding::TfSame;
        let stem = ConvBnShape { channels: [3, self.stem], kernel: 3, stride: 2, groups: 1, relu6: true }.init(padding, BN_EPSILON, device);
        let mut blocks = Vec::new();
        let mut input = self.stem;
        for s in &self.stages {
            for i in 0..s.repeats {
                let stride = if i == 0 { s.stride } else { 1 };
                let shape = InvertedResidualShape { input, output: s.channels, expansion: s.expansion, kernel: s.kernel, stride };
                blocks.push(shape.init(padding, BN_EPSILON, device));
                input = s.channels;
            }
        }
        let head = ConvBnShape::pointwise([input, self.head], true).init(padding, BN_EPSILON, device);
        Cnn { stem, blocks, head, classifier: self.num_classes.map(|n| LinearConfig::new(self.head, n).init(device)) }
    }
}

/// EfficientNet-Lite: a [`Cnn`] of its shape.
pub type EfficientNetLite<B> = Cnn<B>;

/// The EfficientNet-PyTorch key of an [`EfficientNetLite`] parameter (see the table in the module docs).
pub fn efficientnet_lite_key(param: &str) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    match parts.as_slice() {
        ["stem", rest @ ..] => conv_bn_source("_conv_stem", "_bn0", rest),
        ["head", rest @ ..] => conv_bn_source("_conv_head", "_bn1", rest),
        ["classifier", "weight"] => Some(Source::Transpose("_fc.weight".into())),
        ["classifier", "bias"] => Some(Source::Copy("_fc.bias".into())),
        ["blocks", i, part, rest @ ..] => {
            let base = format!("_blocks.{}", i.parse::<usize>().ok()?);
            let (conv, bn) = match *part {
                "expand" => ("_expand_conv", "_bn0"),
                "depthwise" => ("_depthwise_conv", "_bn1"),
                "project" => ("_project_conv", "_bn2"),
                _ => return None,
            };
            conv_bn_source(&format!("{base}.{conv}"), &format!("{base}.{bn}"), rest)
        }
        _ => None,
    }
}

/// Loads EfficientNet-Lite weights (EfficientNet-PyTorch key names) from a safetensors file.
/// The checkpoint's `num_batches_tracked` counters are left unused.
pub fn load_efficientnet_lite<B: Backend>(
    path: &Path,
    config: &EfficientNetLiteConfig,
    device: &B::Device,
) -> Result<(EfficientNetLite<B>, LoadReport), BackboneError> {
    let hint = "Run `cargo xtask fetch-assets` to fetch and convert the EfficientNet-Lite0 ImageNet weights.";
    load_folded(config.init::<B>(device), path, efficientnet_lite_key, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Module;
    use burn::tensor::Tensor;

    #[test]
    fn key_map_follows_the_table() {
        let key = |p: &str| efficientnet_lite_key(p).map(|s| s.key().to_string());
        assert_eq!(key("stem.conv.weight").as_deref(), Some("_conv_stem.weight"));
        assert_eq!(key("stem.bn.running_var").as_deref(), Some("_bn0.running_var"));
        assert_eq!(key("blocks.0.depthwise.conv.weight").as_deref(), Some("_blocks.0._depthwise_conv.weight"));
        assert_eq!(key("blocks.0.project.bn.bias").as_deref(), Some("_blocks.0._bn2.bias"));
        assert_eq!(key("blocks.7.expand.bn.running_mean").as_deref(), Some("_blocks.7._bn0.running_mean"));
        assert_eq!(key("blocks.7.depthwise.bn.weight").as_deref(), Some("_blocks.7._bn1.weight"));
        assert_eq!(key("head.conv.weight").as_deref(), Some("_conv_head.weight"));
        assert_eq!(key("head.bn.bias").as_deref(), Some("_bn1.bias"));
        assert_eq!(efficientnet_lite_key("classifier.weight"), Some(Source::Transpose("_fc.weight".into())));
        assert_eq!(key("blocks.x.expand.conv.weight"), None);
    }

    #[test]
    fn lite0_has_the_published_shapes() {
        let device = Default::default();
        let net = EfficientNetLiteConfig::lite0().init::<Flex>(&device);
        assert_eq!(net.blocks.len(), 16);
        let params: usize = net.num_params();
        // The checkpoint's 247 tensors besides its 49 batch counters hold 4,694,024 values
        // (batch-norm statistics included, as here before folding).
        assert_eq!(params, 4_694_024);
        let x = Tensor::<Flex, 4>::zeros([1, 3, 64, 64], &device);
        assert_eq!(net.feature_map(x.clone(), 11).dims(), [1, 112, 4, 4]);
        assert_eq!(net.feature_map(x.clone(), 17).dims(), [1, 1280, 2, 2]);
        // TensorFlow's padding keeps ceil(h / stride) for odd sides: 72 → 36 → 18 → 9 → 5 → 3.
        assert_eq!(net.feature_map(Tensor::zeros([1, 3, 72, 72], &device), 17).dims(), [1, 1280, 3, 3]);
        for index in [0, 1, 11, 16, 17] {
            assert_eq!(net.feature_channels(index), net.feature_map(x.clone(), index).dims()[1], "index {index}");
        }
    }
}
