//! MobileNetV2 (Sandler et al. 2018) as torchvision defines it, loading torchvision's checkpoint
//! keys (converted to safetensors by `cargo xtask fetch-assets`). A frozen convolutional image
//! encoder: its pooled features or its feature maps (as tokens) feed the prompted transformers.
//!
//! Key map (torchvision → burn; `blocks.i` is `features.{i+1}`):
//!
//! | torchvision | burn ([`MobileNetV2`]) |
//! |---|---|
//! | `features.0.{0,1}` | `stem.{conv,bn}` |
//! | `features.1.conv.{0.0,0.1}`, `conv.{1,2}` (expansion 1) | `blocks.0.depthwise.{conv,bn}`, `blocks.0.project.{conv,bn}` |
//! | `features.i.conv.{0.0,0.1}`, `conv.{1.0,1.1}`, `conv.{2,3}` | `blocks.{i-1}.expand`, `.depthwise`, `.project` `{conv,bn}` |
//! | `features.18.{0,1}` | `head.{conv,bn}` |
//! | `classifier.1` | `classifier` (weight transposed) |

use std::path::Path;

use burn::config::Config;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;

use crate::cnn::{Cnn, conv_bn_source, load_folded};
use crate::error::BackboneError;
use crate::inverted_residual::{ConvBnShape, InvertedResidualShape, Padding};
use crate::weights::{LoadReport, Source};

/// `(expansion, channels, repeats, first stride)` of each stage, as in the paper's Table 2.
const STAGES: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// Configuration of a [`MobileNetV2`].
#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Width multiplier.
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Classes of the classifier; `None` for a feature extractor.
    #[config(default = "Some(1000)")]
    pub num_classes: Option<usize>,
}

/// MobileNetV2: a [`Cnn`] of torchvision's shape.
pub type MobileNetV2<B> = Cnn<B>;

/// torchvision's `_make_divisible`: the nearest multiple of `divisor`, never 10% below `value`.
pub fn make_divisible(value: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut rounded = (((value + d / 2.0) / d).floor() * d).max(d) as usize;
    if (rounded as f64) < 0.9 * value {
        rounded += divisor;
    }
    rounded
}

impl MobileNetV2Config {
    /// Width of the final features.
    pub fn feature_width(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), 8)
    }

    /// Initialises the network on `device` (random weights; load pretrained ones afterwards).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileNetV2<B> {
        // torchvision: symmetric padding, batch-norm epsilon 1e-5.
        let (padding, eps) = (Padding::Symmetric, 1e-5);
        let mut input = make_divisible(32.0 * self.width_mult, 8);
        let stem = ConvBnShape { channels: [3, input], kernel: 3, stride: 2, groups: 1, relu6: true }.init(padding, eps, device);
        let mut blocks = Vec::new();
        for (expansion, channels, repeats, first_stride) in STAGES {
            let output = make_divisible(channels as f64 * self.width_mult, 8);
            for i in 0..repeats {
                let stride = if i == 0 { first_stride } else { 1 };
                blocks.push(InvertedResidualShape { input, output, expansion, kernel: 3, stride }.init(padding, eps, device));
                input = output;
            }
        }
        let head = ConvBnShape::pointwise([input, self.feature_width()], true).init(padding, eps, device);
        Cnn { stem, blocks, head, classifier: self.num_classes.map(|n| LinearConfig::new(self.feature_width(), n).init(device)) }
    }
}

/// The torchvision key of a [`MobileNetV2`] parameter (see the table in the module docs).
pub fn mobilenet_v2_key(param: &str) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let conv_bn = |base: String, rest: &[&str], conv: &str, bn: &str| conv_bn_source(&format!("{base}.{conv}"), &format!("{base}.{bn}"), rest);
    match parts.as_slice() {
        ["stem", rest @ ..] => conv_bn("features.0".into(), rest, "0", "1"),
        ["head", rest @ ..] => conv_bn("features.18".into(), rest, "0", "1"),
        ["classifier", "weight"] => Some(Source::Transpose("classifier.1.weight".into())),
        ["classifier", "bias"] => Some(Source::Copy("classifier.1.bias".into())),
        ["blocks", i, part, rest @ ..] => {
            let i: usize = i.parse().ok()?;
            let base = format!("features.{}.conv", i + 1);
            // Block 0 has no expansion, so its layers sit one index lower.
            let shift = usize::from(i == 0);
            match *part {
                "expand" => conv_bn(base, rest, "0.0", "0.1"),
                "depthwise" => conv_bn(base, rest, &format!("{}.0", 1 - shift), &format!("{}.1", 1 - shift)),
                "project" => conv_bn(base, rest, &(2 - shift).to_string(), &(3 - shift).to_string()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Loads torchvision MobileNetV2 weights from a safetensors file.
pub fn load_mobilenet_v2<B: Backend>(
    path: &Path,
    config: &MobileNetV2Config,
    device: &B::Device,
) -> Result<(MobileNetV2<B>, LoadReport), BackboneError> {
    let hint = "Run `cargo xtask fetch-assets` to fetch and convert torchvision's MobileNetV2 ImageNet weights.";
    load_folded(config.init::<B>(device), path, mobilenet_v2_key, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tensor;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(8.0, 8), 8);
        assert_eq!(make_divisible(4.0, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(96.0 * 0.75, 8), 72);
        assert_eq!(make_divisible(1280.0, 8), 1280);
    }

    #[test]
    fn key_map_follows_the_table() {
        let key = |p: &str| mobilenet_v2_key(p).map(|s| s.key().to_string());
        assert_eq!(key("stem.conv.weight").as_deref(), Some("features.0.0.weight"));
        assert_eq!(key("stem.bn.running_var").as_deref(), Some("features.0.1.running_var"));
        assert_eq!(key("blocks.0.depthwise.conv.weight").as_deref(), Some("features.1.conv.0.0.weight"));
        assert_eq!(key("blocks.0.project.conv.weight").as_deref(), Some("features.1.conv.1.weight"));
        assert_eq!(key("blocks.0.project.bn.bias").as_deref(), Some("features.1.conv.2.bias"));
        assert_eq!(key("blocks.5.expand.bn.weight").as_deref(), Some("features.6.conv.0.1.weight"));
        assert_eq!(key("blocks.5.depthwise.conv.weight").as_deref(), Some("features.6.conv.1.0.weight"));
        assert_eq!(key("blocks.5.project.conv.weight").as_deref(), Some("features.6.conv.2.weight"));
        assert_eq!(key("blocks.5.project.bn.running_mean").as_deref(), Some("features.6.conv.3.running_mean"));
        assert_eq!(key("head.conv.weight").as_deref(), Some("features.18.0.weight"));
        assert_eq!(mobilenet_v2_key("classifier.weight"), Some(Source::Transpose("classifier.1.weight".into())));
    }

    #[test]
    fn shapes_follow_the_paper() {
        let device = Default::default();
        let net = MobileNetV2Config::new().with_width_mult(0.25).with_num_classes(Some(10)).init::<Flex>(&device);
        assert_eq!(net.blocks.len(), 17);
        let x = Tensor::<Flex, 4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(net.feature_map(x.clone(), 13).dims(), [2, 24, 4, 4]);
        for index in [0, 1, 13, 17, 18] {
            assert_eq!(net.feature_channels(index), net.feature_map(x.clone(), index).dims()[1], "features.{index}");
        }
        assert_eq!(net.forward(x).dims(), [2, 10]);
    }
}
