//! The building blocks that MobileNetV2 and EfficientNet-Lite share: a convolution followed by a
//! frozen batch norm and ReLU6 ([`ConvBn`]), and the inverted residual block (1×1 expansion,
//! depthwise k×k, 1×1 linear projection; [`InvertedResidual`]). The two families differ in the
//! depthwise kernel (3 for MobileNetV2, 3 or 5 for EfficientNet-Lite), the batch-norm epsilon and
//! the padding convention ([`Padding`]).

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::frozen_batch_norm::{FrozenBatchNorm2d, FrozenBatchNorm2dConfig};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `(k - 1) / 2` on every side: PyTorch's convention (torchvision's MobileNetV2).
    Symmetric,
    /// TensorFlow's `SAME`: the output is `ceil(input / stride)`, and the padding this needs is
    /// split with the odd pixel after (right and bottom). A stride-2 convolution of an even input
    /// pads nothing before it for k = 3 and one pixel for k = 5 (EfficientNet-Lite, trained in
    /// TensorFlow).
    TfSame,
}

/// Conv → frozen batch norm → ReLU6 (no activation on projections).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// Convolution, no bias (a bias after [`fold`](Self::fold)).
    pub conv: Conv2d<B>,
    /// Frozen batch norm (none after [`fold`](Self::fold)).
    pub bn: Option<FrozenBatchNorm2d<B>>,
    #[module(skip)]
    relu6: bool,
}

/// The shape of one [`ConvBn`].
#[derive(Debug, Clone, Copy)]
pub struct ConvBnShape {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Square kernel side.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Groups (the channels for a depthwise convolution).
    pub groups: usize,
    /// ReLU6 after the norm.
    pub relu6: bool,
}

impl ConvBnShape {
    /// A 1×1 convolution.
    pub fn pointwise(channels: [usize; 2], relu6: bool) -> Self {
        Self { channels, kernel: 1, stride: 1, groups: 1, relu6 }
    }

    /// A depthwise k×k convolution over `channels`, with ReLU6.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Self { channels: [channels, channels], kernel, stride, groups: channels, relu6: true }
    }

    /// Initialises it on `device` (identity norm, random weights; load pretrained ones afterwards).
    pub fn init<B: Backend>(self, padding: Padding, bn_epsilon: f64, device: &B::Device) -> ConvBn<B> {
        let padding = match padding {
            Padding::Symmetric => {
                let pad = (self.kernel - 1) / 2;
                PaddingConfig2d::Explicit(pad, pad, pad, pad)
            }
            Padding::TfSame => PaddingConfig2d::Same,
        };
        ConvBn {
            conv: Conv2dConfig::new(self.channels, [self.kernel, self.kernel])
                .with_stride([self.stride, self.stride])
                .with_padding(padding)
                .with_groups(self.groups)
                .with_bias(false)
                .init(device),
            bn: Some(FrozenBatchNorm2dConfig::new(self.channels[1]).with_epsilon(bn_epsilon).init(device)),
            relu6: self.relu6,
        }
    }
}

impl<B: Backend> ConvBn<B> {
    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; output `[batch, out, h', w']` (`h / stride` with symmetric
    ///   padding and odd kernels, `ceil(h / stride)` with TensorFlow's)
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

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.dims()[0]
    }
}

/// Inverted residual block: 1×1 expansion, depthwise k×k, 1×1 linear projection, residual when
/// shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// Expansion (absent when the expansion factor is 1).
    pub expand: Option<ConvBn<B>>,
    /// Depthwise k×k.
    pub depthwise: ConvBn<B>,
    /// Linear projection.
    pub project: ConvBn<B>,
    #[module(skip)]
    residual: bool,
}

/// The shape of one [`InvertedResidual`].
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidualShape {
    /// Input channels.
    pub input: usize,
    /// Output channels.
    pub output: usize,
    /// Expansion factor of the hidden width.
    pub expansion: usize,
    /// Depthwise kernel side.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
}

impl InvertedResidualShape {
    /// Initialises the block on `device`.
    pub fn init<B: Backend>(self, padding: Padding, bn_epsilon: f64, device: &B::Device) -> InvertedResidual<B> {
        let hidden = self.input * self.expansion;
        InvertedResidual {
            expand: (self.expansion != 1).then(|| ConvBnShape::pointwise([self.input, hidden], true).init(padding, bn_epsilon, device)),
            depthwise: ConvBnShape::depthwise(hidden, self.kernel, self.stride).init(padding, bn_epsilon, device),
            project: ConvBnShape::pointwise([hidden, self.output], false).init(padding, bn_epsilon, device),
            residual: self.stride == 1 && self.input == self.output,
        }
    }
}

impl<B: Backend> InvertedResidual<B> {
    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; output `[batch, out, h', w']` as for [`ConvBn::forward`]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(h));
        if self.residual { x + y } else { y }
    }

    /// Folds every batch norm of the block ([`ConvBn::fold`]).
    pub fn fold(self) -> Self {
        Self { expand: self.expand.map(ConvBn::fold), depthwise: self.depthwise.fold(), project: self.project.fold(), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn tensorflow_same_padding_puts_the_odd_pixel_after() {
        let device = Default::default();
        // A 3×3 all-ones kernel, stride 2, over a 4×4 input numbered 1..16: SAME pads one row and
        // column after (bottom, right), none before, so output (0, 0) sums rows 0-2, columns 0-2.
        let mut conv = ConvBnShape { channels: [1, 1], kernel: 3, stride: 2, groups: 1, relu6: false }.init::<Flex>(Padding::TfSame, 1e-3, &device);
        conv.conv.weight = Param::from_tensor(Tensor::ones([1, 1, 3, 3], &device));
        conv.bn = None;
        let x = Tensor::<Flex, 1>::from_floats((1..=16).map(|v| v as f32).collect::<Vec<_>>().as_slice(), &device).reshape([1, 1, 4, 4]);
        let y = conv.forward(x).to_data().to_vec::<f32>().unwrap();
        // rows 0-2 × columns 0-2: 1+2+3+5+6+7+9+10+11 = 54; columns 2-3 (and padding) of rows 0-2:
        // 3+4+7+8+11+12 = 45; rows 2-3 × columns 0-2: 9+10+11+13+14+15 = 72; rows 2-3 × columns 2-3: 11+12+15+16 = 54.
        assert_eq!(y, [54.0, 45.0, 72.0, 54.0]);
        // Symmetric padding centres the windows one pixel earlier: (0, 0) sums rows and columns 0-1.
        let mut conv = ConvBnShape { channels: [1, 1], kernel: 3, stride: 2, groups: 1, relu6: false }.init::<Flex>(Padding::Symmetric, 1e-3, &device);
        conv.conv.weight = Param::from_tensor(Tensor::ones([1, 1, 3, 3], &device));
        conv.bn = None;
        let x = Tensor::<Flex, 1>::from_floats((1..=16).map(|v| v as f32).collect::<Vec<_>>().as_slice(), &device).reshape([1, 1, 4, 4]);
        assert_eq!(conv.forward(x).to_data().to_vec::<f32>().unwrap()[0], 1.0 + 2.0 + 5.0 + 6.0);
    }
}
