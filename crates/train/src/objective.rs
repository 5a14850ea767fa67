//! A dataset's task as a training objective: the forward pass it needs (class scores, or
//! per-pixel scores upsampled to the label map), its loss, and the metric that selects the best
//! epoch.

use backbones::AnyInput;
use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use data::Task;
use ops::Kernels;

use crate::feature_cache::{BatchInputs, MainInput};
use crate::model::{Model, Routing};
use crate::pair::{PreparedPair, class_targets, multi_hot_targets};

/// A dataset's task as a training objective: the forward pass it needs, its loss (cross-entropy;
/// sigmoid binary cross-entropy per label; per-pixel cross-entropy without unlabelled pixels)
/// and the metric that selects the best epoch.
pub trait Objective: Copy {
    /// Outputs of the head.
    fn num_outputs(self) -> usize;

    /// The metric that selects the best checkpoint and is reported against the paper.
    fn primary_metric(self) -> &'static str;

    /// Whether the task scores every position of the main input (segmentation), which no pooled
    /// representation replaces.
    fn is_dense(self) -> bool;

    /// Runs `model` on a batch's inputs ([`FeatureCache::inputs`](crate::FeatureCache::inputs)):
    /// class scores, or for segmentation the patch scores upsampled (bilinearly) to the main
    /// input's size, which is the label map's.
    ///
    /// # Panics
    /// For segmentation, if the main input is not pixels.
    fn forward<B: Kernels>(self, model: &Model<B>, inputs: BatchInputs<B>) -> BatchOutput<B>;

    /// Mean task loss of a batch.
    ///
    /// # Shapes
    /// - output `[1]`
    ///
    /// # Panics
    /// If the logits are not the task's kind.
    fn loss<B: Backend>(self, logits: &Logits<B>, items: &[PreparedPair]) -> Tensor<B, 1>;
}

/// Scores of a batch: per sample, or per pixel of the label map.
#[derive(Debug, Clone)]
pub enum Logits<B: Backend> {
    /// Shape `[batch, num_outputs]`.
    Scores(Tensor<B, 2>),
    /// Shape `[batch, num_classes, height, width]`, at the label map's size.
    Pixels(Tensor<B, 4>),
}

/// The forward pass of a batch under an objective.
#[derive(Debug, Clone)]
pub struct BatchOutput<B: Backend> {
    /// Scores.
    pub logits: Logits<B>,
    /// Routing weights of every routing site.
    pub routing: Routing<B>,
    /// Importance loss. Shape `[1]`.
    pub importance_loss: Tensor<B, 1>,
}

impl Objective for Task {
    fn num_outputs(self) -> usize {
        match self {
            Self::Classification { num_classes } | Self::Segmentation { num_classes, .. } => num_classes,
            Self::MultiLabel { num_labels } => num_labels,
        }
    }

    fn is_dense(self) -> bool {
        matches!(self, Self::Segmentation { .. })
    }

    fn primary_metric(self) -> &'static str {
        match self {
            Self::Classification { .. } => "accuracy",
            Self::MultiLabel { .. } => "f1_macro",
            Self::Segmentation { .. } => "mean_iou",
        }
    }

    fn forward<B: Kernels>(self, model: &Model<B>, inputs: BatchInputs<B>) -> BatchOutput<B> {
        let BatchInputs { main, complementary } = inputs;
        match self {
            Self::Segmentation { .. } => {
                let MainInput::Encoder(main) = main else { panic!("segmentation reads the main encoder's every position") };
                let out = model.dense(&main, complementary);
                let AnyInput::Pixels(pixels) = main else { panic!("segmentation reads images") };
                let [_, _, height, width] = pixels.dims();
                let logits = interpolate(out.logits, [height, width], InterpolateOptions::new(InterpolateMode::Bilinear));
                BatchOutput { logits: Logits::Pixels(logits), routing: out.routing, importance_loss: out.importance_loss }
            }
            _ => {
                let out = match main {
                    MainInput::Encoder(main) => model.classify(&main, complementary),
                    MainInput::Pooled(pooled) => model.classify_constant(Some(pooled), complementary),
                    MainInput::Unread => model.classify_constant(None, complementary),
                };
                BatchOutput { logits: Logits::Scores(out.logits), routing: out.routing, importance_loss: out.importance_loss }
            }
        }
    }

    fn loss<B: Backend>(self, logits: &Logits<B>, items: &[PreparedPair]) -> Tensor<B, 1> {
        match (self, logits) {
            (Self::Classification { .. }, Logits::Scores(logits)) => {
                let device = logits.device();
                CrossEntropyLossConfig::new().init(&device).forward(logits.clone(), class_targets(items, &device))
            }
            (Self::MultiLabel { num_labels }, Logits::Scores(logits)) => {
                let device = logits.device();
                let targets = multi_hot_targets::<B>(items, num_labels, &device).int();
                BinaryCrossEntropyLossConfig::new().with_logits(true).init(&device).forward(logits.clone(), targets)
            }
            (Self::Segmentation { ignore_index, .. }, Logits::Pixels(logits)) => pixel_cross_entropy(logits.clone(), items, ignore_index),
            (objective, _) => panic!("{objective:?} got logits of another kind"),
        }
    }
}

/// Mean cross-entropy over the labelled pixels of a batch.
///
/// # Shapes
/// - `logits`: `[batch, num_classes, height, width]`; output `[1]`
fn pixel_cross_entropy<B: Backend>(logits: Tensor<B, 4>, items: &[PreparedPair], ignore_index: u8) -> Tensor<B, 1> {
    let [batch, classes, height, width] = logits.dims();
    let n = batch * height * width;
    let device = logits.device();
    let (mut targets, mut valid) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for item in items {
        for &c in item.mask.as_ref().expect("segmentation items carry their label map") {
            let labelled = c != ignore_index && (c as usize) < classes;
            targets.push(if labelled { c as i64 } else { 0 });
            valid.push(if labelled { 1f32 } else { 0.0 });
        }
    }
    let count = valid.iter().sum::<f32>().max(1.0);
    let log_p = log_softmax(logits.permute([0, 2, 3, 1]).reshape([n, classes]), 1);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let valid = Tensor::<B, 1>::from_data(TensorData::new(valid, [n]), &device);
    (log_p.gather(1, targets).reshape([n]) * valid).sum().neg() / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn pixel_cross_entropy_leaves_unlabelled_pixels_out() {
        let device = Default::default();
        // One image of 1×3 pixels, 2 classes. Pixel 0: logits [0, ln 3], label 1 → −ln(3/4).
        // Pixel 1: logits [ln 3, 0], label 0 → −ln(3/4). Pixel 2 is unlabelled (255).
        let l3 = 3f32.ln();
        let logits = Tensor::<Flex, 4>::from_data(TensorData::new(vec![0.0, l3, 5.0, l3, 0.0, -5.0], [1, 2, 1, 3]), &device);
        let loss = pixel_cross_entropy(logits, &[PreparedPair::of_mask(vec![1, 0, 255])], 255).into_scalar();
        assert!((loss - -(0.75f32).ln()).abs() < 1e-6, "{loss}");
    }
}
