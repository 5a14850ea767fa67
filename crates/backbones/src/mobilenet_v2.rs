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
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::BackboneError;
use crate::frozen_batch_norm::{FrozenBatchNorm2d, FrozenBatchNorm2dConfig};
use crate::weights::{LoadReport, Source, load_safetensors};

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

/// Conv → frozen batch norm → ReLU6 (no activation on projections).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// Convolution, no bias.
    pub conv: Conv2d<B>,
    /// Frozen batch norm.
    pub bn: Option<FrozenBatchNorm2d<B>>,
    #[module(skip)]
    relu6: bool,
}

impl<B: Backend> ConvBn<B> {
    fn new(device: &B::Device, channels: [usize; 2], kernel: usize, stride: usize, groups: usize, relu6: bool) -> Self {
        let pad = (kernel - 1) / 2;
        Self {
            conv: Conv2dConfig::new(channels, [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            bn: Some(FrozenBatchNorm2dConfig::new(channels[1]).init(device)),
            relu6,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; output `[batch, out, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv.forward(x);
        let y = match &self.bn {
            Some(bn) => bn.forward(y),
            None => y,
        };
        if self.relu6 { y.clamp(0.0, 6.0) } else { y }
    }

    /// Folds the (frozen) batch norm into the convolution: weights scaled per output channel,
    /// the shift as the convolution's bias. The same function, without the per-channel
    /// broadcasting passes (5× faster on the CPU backend).
    pub fn fold(self) -> Self {
        let Some(bn) = &self.bn else { return self };
        let (scale, shift) = bn.scale_shift();
        let weight = self.conv.weight.val();
        let [out, ..] = weight.dims();
        // Detached: new leaf tensors, like loaded weights (on an autodiff backend the products
        // would otherwise be graph nodes, which cannot become parameters).
        let folded = (weight * scale.reshape([out, 1, 1, 1])).detach();
        let mut conv = self.conv;
        conv.weight = Param::initialized(conv.weight.id, folded);
        conv.bias = Some(Param::from_tensor(shift.detach()));
        Self { conv, bn: None, relu6: self.relu6 }
    }
}

/// Inverted residual block: 1×1 expansion, 3×3 depthwise, 1×1 linear projection, residual when
/// shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// Expansion (absent when the expansion factor is 1).
    pub expand: Option<ConvBn<B>>,
    /// Depthwise 3×3.
    pub depthwise: ConvBn<B>,
    /// Linear projection.
    pub project: ConvBn<B>,
    #[module(skip)]
    residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; output `[batch, out, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(h));
        if self.residual { x + y } else { y }
    }
}

/// MobileNetV2.
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    /// 3×3 stride-2 stem (`features.0`).
    pub stem: ConvBn<B>,
    /// The 17 inverted residual blocks (`features.1` to `features.17`).
    pub blocks: Vec<InvertedResidual<B>>,
    /// 1×1 convolution to the final width (`features.18`).
    pub head: ConvBn<B>,
    /// Classifier on the pooled features (`classifier.1`).
    pub classifier: Option<Linear<B>>,
}

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
        let mut input = make_divisible(32.0 * self.width_mult, 8);
        let stem = ConvBn::new(device, [3, input], 3, 2, 1, true);
        let mut blocks = Vec::new();
        for (expansion, channels, repeats, first_stride) in STAGES {
            let output = make_divisible(channels as f64 * self.width_mult, 8);
            for i in 0..repeats {
                let stride = if i == 0 { first_stride } else { 1 };
                let hidden = input * expansion;
                blocks.push(InvertedResidual {
                    expand: (expansion != 1).then(|| ConvBn::new(device, [input, hidden], 1, 1, 1, true)),
                    depthwise: ConvBn::new(device, [hidden, hidden], 3, stride, hidden, true),
                    project: ConvBn::new(device, [hidden, output], 1, 1, 1, false),
                    residual: stride == 1 && input == output,
                });
                input = output;
            }
        }
        let head = ConvBn::new(device, [input, self.feature_width()], 1, 1, 1, true);
        MobileNetV2 {
            stem,
            blocks,
            head,
            classifier: self.num_classes.map(|n| LinearConfig::new(self.feature_width(), n).init(device)),
        }
    }
}

impl<B: Backend> MobileNetV2<B> {
    /// Folds every frozen batch norm into its convolution ([`ConvBn::fold`]); done on loading.
    pub fn fold_batch_norms(self) -> Self {
        let blocks = self
            .blocks
            .into_iter()
            .map(|b| InvertedResidual { expand: b.expand.map(ConvBn::fold), depthwise: b.depthwise.fold(), project: b.project.fold(), ..b })
            .collect();
        Self { stem: self.stem.fold(), blocks, head: self.head.fold(), ..self }
    }

    /// The feature map after torchvision's `features[0..=index]` (0: stem, 1-17: blocks, 18: head).
    /// `features.13` gives 14×14×96 and `features.18` 7×7×1280 for a 224×224 input.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, channels, h', w']`
    ///
    /// # Panics
    /// If `index > 18`.
    pub fn feature_map(&self, pixels: Tensor<B, 4>, index: usize) -> Tensor<B, 4> {
        assert!(index <= self.blocks.len() + 1, "feature index {index} out of range 0..={}", self.blocks.len() + 1);
        let mut x = self.stem.forward(pixels);
        for block in self.blocks.iter().take(index) {
            x = block.forward(x);
        }
        if index == self.blocks.len() + 1 { self.head.forward(x) } else { x }
    }

    /// Channels of [`feature_map`](Self::feature_map)`(_, index)`, read from the weights' shapes.
    ///
    /// # Panics
    /// If `index > 18`.
    pub fn feature_channels(&self, index: usize) -> usize {
        let conv = match index {
            0 => &self.stem.conv,
            i if i <= self.blocks.len() => &self.blocks[i - 1].project.conv,
            i if i == self.blocks.len() + 1 => &self.head.conv,
            i => panic!("feature index {i} out of range 0..={}", self.blocks.len() + 1),
        };
        conv.weight.dims()[0]
    }

    /// Globally averaged final features.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, h, w]`; output `[batch, feature_width]`
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let map = self.feature_map(pixels, self.blocks.len() + 1);
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
        let classifier = self.classifier.as_ref().expect("MobileNetV2 built without a classifier (num_classes = None)");
        classifier.forward(self.features(pixels))
    }
}

/// The torchvision key of a [`MobileNetV2`] parameter (see the table in the module docs).
pub fn mobilenet_v2_key(param: &str) -> Option<Source> {
    let parts: Vec<&str> = param.split('.').collect();
    let conv_bn = |base: String, rest: &[&str], conv: &str, bn: &str| -> Option<Source> {
        match rest {
            ["conv", "weight"] => Some(Source::Copy(format!("{base}.{conv}.weight"))),
            ["bn", leaf @ ("weight" | "bias" | "running_mean" | "running_var")] => Some(Source::Copy(format!("{base}.{bn}.{leaf}"))),
            _ => None,
        }
    };
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
    if !path.exists() {
        return Err(BackboneError::MissingFile {
            path: path.to_path_buf(),
            hint: "Run `cargo xtask fetch-assets` to fetch and convert torchvision's MobileNetV2 ImageNet weights.".into(),
        });
    }
    let (model, report) = load_safetensors(config.init::<B>(device), path, mobilenet_v2_key)?;
    Ok((model.fold_batch_norms(), report))
}

/// MobileNetV2 as a zero-layer encoder: its pooled ImageNet features are one token, and there is
/// no layer to prompt. This lets a CNN be the *complementary* encoder whose representation routes
/// the experts (its features are frozen and cached); it cannot be the prompted main encoder.
impl<B: Backend> mope_core::PromptableEncoder<B> for MobileNetV2<B> {
    /// Normalised pixels `[batch, 3, height, width]`.
    type Input = Tensor<B, 4>;

    fn d_model(&self) -> usize {
        self.feature_channels(self.blocks.len() + 1)
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
    fn embed(&self, pixels: &Tensor<B, 4>) -> mope_core::EncoderTokens<B> {
        mope_core::EncoderTokens { tokens: self.features(pixels.clone()).unsqueeze_dim(1), mask_pad: None }
    }

    fn layer(&self, index: usize, _: Tensor<B, 3>, _: Option<Tensor<B, 2, burn::tensor::Bool>>) -> Tensor<B, 3> {
        panic!("MobileNetV2 has no layer {index} to prompt: it is a zero-layer encoder")
    }

    /// # Shapes
    /// - `tokens`: `[batch, 1, channels]`; output `[batch, channels]`
    fn pool(&self, tokens: Tensor<B, 3>, _: Option<Tensor<B, 2, burn::tensor::Bool>>, _: usize) -> Tensor<B, 2> {
        let [batch, _, channels] = tokens.dims();
        tokens.slice([0..batch, 0..1, 0..channels]).reshape([batch, channels])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

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
