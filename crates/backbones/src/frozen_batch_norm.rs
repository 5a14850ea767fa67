//! Batch normalisation with fixed statistics, as a frozen pretrained CNN uses it: always the
//! evaluation form `(x - running_mean) / sqrt(running_var + eps) * weight + bias`, whatever the
//! backend. (The official MoPE code's mapper BatchNorm got stuck in evaluation mode by accident;
//! here a frozen backbone's norms are in evaluation mode by construction.)

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, backend::Backend};

/// Configuration of a [`FrozenBatchNorm2d`].
#[derive(Config, Debug)]
pub struct FrozenBatchNorm2dConfig {
    /// Channels.
    pub num_features: usize,
    /// Epsilon added to the variance (torchvision: 1e-5).
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// Batch norm over the channels of `[batch, channels, height, width]` with fixed statistics.
/// Field names are PyTorch's, so checkpoints map one to one.
#[derive(Module, Debug)]
pub struct FrozenBatchNorm2d<B: Backend> {
    /// Scale `[channels]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[channels]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Mean `[channels]`.
    pub running_mean: Param<Tensor<B, 1>>,
    /// Variance `[channels]`.
    pub running_var: Param<Tensor<B, 1>>,
    #[module(skip)]
    epsilon: f64,
}

impl FrozenBatchNorm2dConfig {
    /// Initialises an identity normalisation on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> FrozenBatchNorm2d<B> {
        let n = [self.num_features];
        FrozenBatchNorm2d {
            weight: Initializer::Ones.init(n, device),
            bias: Initializer::Zeros.init(n, device),
            running_mean: Initializer::Zeros.init(n, device),
            running_var: Initializer::Ones.init(n, device),
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> FrozenBatchNorm2d<B> {
    /// Normalises `x`.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`; output the same
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let channels = self.weight.dims()[0];
        let per_channel = |t: Tensor<B, 1>| t.reshape([1, channels, 1, 1]);
        let (scale, shift) = self.scale_shift();
        x * per_channel(scale) + per_channel(shift)
    }

    /// The affine map this normalisation is: `y = scale · x + shift`, per channel.
    ///
    /// # Shapes
    /// - outputs: `[channels]` each
    pub fn scale_shift(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let scale = self.weight.val() / (self.running_var.val() + self.epsilon).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        (scale, shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    #[test]
    fn normalises_with_running_statistics() {
        let device = Default::default();
        let mut bn = FrozenBatchNorm2dConfig::new(2).with_epsilon(0.0).init::<Flex>(&device);
        bn.running_mean = Param::from_tensor(Tensor::from_floats([1.0, -2.0], &device));
        bn.running_var = Param::from_tensor(Tensor::from_floats([4.0, 0.25], &device));
        bn.weight = Param::from_tensor(Tensor::from_floats([3.0, 1.0], &device));
        bn.bias = Param::from_tensor(Tensor::from_floats([0.5, 0.0], &device));
        let x = Tensor::<Flex, 4>::from_floats([[[[5.0]], [[-1.0]]]], &device);
        // (5 - 1) / 2 * 3 + 0.5 = 6.5 ; (-1 + 2) / 0.5 = 2
        let expected = Tensor::<Flex, 4>::from_floats([[[[6.5]], [[2.0]]]], &device);
        bn.forward(x).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
    }
}
