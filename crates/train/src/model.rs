//! The model a run trains, chosen by the experiment: MoPE or one of its baselines over a main and
//! a complementary encoder ([`FusionModel`]), or pMoE or one of its baselines over several image
//! experts ([`ExpertsModel`]); and the two forward passes tasks need (class scores, patch scores).

use backbones::{AnyEncoder, AnyInput};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, backend::Backend};
use data::ImagePreprocess;
use mope_core::{AdapterConfig, AdapterError, AdapterSaveReport, MopePrompts, MultimodalClassifier, ParamSummary, RoutingOutput};
use ops::Kernels;
use pmoe::{Dispatch, PmoeClassifier};

use crate::device::TrainBackend;

/// MoPE and its baselines over two run-time-chosen encoders.
pub type FusionModel<B> = MultimodalClassifier<B, AnyEncoder<B>, AnyEncoder<B>>;

/// pMoE and its baselines over run-time-chosen image experts, all fed from one prepared image.
#[derive(Module, Debug)]
pub struct ExpertsModel<B: Backend> {
    /// Experts, prompts, dispatchers, head.
    pub classifier: PmoeClassifier<B, AnyEncoder<B>>,
    /// How the shared image becomes each expert's input.
    #[module(skip)]
    pub inputs: Vec<PixelAdapt>,
}

/// A run's model.
// One model per run: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model<B: Backend> {
    /// MoPE and its baselines.
    Fusion(FusionModel<B>),
    /// pMoE and its baselines.
    Experts(ExpertsModel<B>),
}

/// Where a routing decision was taken: a MoPE router at a layer of the main encoder
/// (`expert: None`), or the pMoE dispatcher feeding `expert` at its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// The pMoE expert the dispatcher feeds.
    pub expert: Option<usize>,
    /// The layer.
    pub layer: usize,
}

/// Per-sample routing weights of each site; each row sums to 1. MoPE: over the prompt experts;
/// pMoE: over the sources (the experts' EPTs, then the carried prompt), averaged over slots.
///
/// Shapes: `[batch, num_experts_or_sources]` each.
pub type Routing<B> = Vec<(Site, Tensor<B, 2>)>;

/// Scores of a batch with what routed them.
#[derive(Debug, Clone)]
pub struct ModelOutput<B: Backend, const D: usize> {
    /// Class scores `[batch, num_outputs]`, or patch scores `[batch, num_classes, height, width]`.
    pub logits: Tensor<B, D>,
    /// Routing weights of every site.
    pub routing: Routing<B>,
    /// Importance loss (0 where nothing is regularised). Shape `[1]`.
    pub importance_loss: Tensor<B, 1>,
}

impl<B: Backend, const D: usize> ModelOutput<B, D> {
    /// The output of a MoPE-family classifier: its routers' weights and importance loss.
    fn of_routers(logits: Tensor<B, D>, routing: Vec<(usize, RoutingOutput<B>)>, importance_loss: Tensor<B, 1>) -> Self {
        let routing = routing.into_iter().map(|(layer, r)| (Site { expert: None, layer }, r.weights)).collect();
        Self { logits, routing, importance_loss }
    }

    /// The output of a pMoE-family classifier: each dispatcher's weights averaged over its slots;
    /// nothing regularised.
    fn of_dispatchers(logits: Tensor<B, D>, dispatch: Vec<Dispatch<B>>) -> Self {
        let routing = dispatch.iter().map(|d| (Site { expert: Some(d.expert), layer: d.layer }, d.sample_weights())).collect();
        Self { importance_loss: Tensor::zeros([1], &logits.device()), logits, routing }
    }
}

/// What a model needs of a sample's main input (what the main encoder, or the experts, read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainUse {
    /// The encoder runs on it at every step: it is prompted, or part of it trains.
    Encoded,
    /// Its pooled representation is a constant of the sample (late fusion over encoders without
    /// a trainable part): computed once, then cached ([`FeatureCache`](crate::FeatureCache)).
    Constant,
    /// The head does not read it (late fusion's probe of the complementary modality alone).
    Unread,
}

impl<B: Kernels> Model<B> {
    /// What the model needs of the main input.
    pub fn main_use(&self) -> MainUse {
        match self {
            Self::Fusion(m) if !m.reads_main() => MainUse::Unread,
            Self::Fusion(m) if m.main_is_constant() => MainUse::Constant,
            Self::Experts(m) if m.classifier.pooled_is_constant() => MainUse::Constant,
            _ => MainUse::Encoded,
        }
    }

    /// The constant pooled representation of the main input ([`MainUse::Constant`]): the main
    /// encoder's, or the experts' concatenated.
    ///
    /// # Shapes
    /// - output: `[batch, width]`
    pub fn main_feature(&self, main: &AnyInput<B>) -> Tensor<B, 2> {
        match self {
            Self::Fusion(m) => m.main_feature(main),
            Self::Experts(m) => m.classifier.constant_pooled(&m.expert_inputs(main)),
        }
    }

    /// Class scores from precomputed representations, for a model whose main representation is
    /// constant or unread ([`main_use`](Self::main_use)): the head alone.
    ///
    /// # Shapes
    /// - `main`: `[batch, width]` ([`main_feature`](Self::main_feature)), `None` where unread;
    ///   `complementary`: `[batch, d_complementary]`, for the models that read one
    /// - output logits: `[batch, num_outputs]`
    ///
    /// # Panics
    /// If the model's main representation is encoded at every step, or an input it reads is missing.
    pub fn classify_constant(&self, main: Option<Tensor<B, 2>>, complementary: Option<Tensor<B, 2>>) -> ModelOutput<B, 2> {
        match self {
            Self::Fusion(m) => {
                let out = m.forward_constant(main, complementary.expect("the complementary feature of the batch"));
                ModelOutput::of_routers(out.logits, out.routing, out.importance_loss)
            }
            Self::Experts(m) => {
                let out = m.classifier.forward_constant(main.expect("the experts' pooled outputs of the batch"));
                ModelOutput::of_dispatchers(out.logits, out.dispatch)
            }
        }
    }

    /// Deep prompts of the complementary encoder (trained at their own learning rate).
    pub fn complementary_prompts(&self) -> Option<&MopePrompts<B>> {
        match self {
            Self::Fusion(m) => m.complementary_prompts.as_ref(),
            Self::Experts(_) => None,
        }
    }

    /// Whether the model reads a complementary representation.
    pub fn reads_complementary(&self) -> bool {
        matches!(self, Self::Fusion(_))
    }

    /// The complementary encoder's pooled representation.
    ///
    /// # Shapes
    /// - output: `[batch, d_complementary]`
    ///
    /// # Panics
    /// For a model without a complementary encoder.
    pub fn complementary_feature(&self, input: &AnyInput<B>) -> Tensor<B, 2> {
        match self {
            Self::Fusion(m) => m.complementary_feature(input),
            Self::Experts(_) => panic!("pMoE models read no complementary modality"),
        }
    }

    /// Class scores of a batch.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`, for the models that read one
    /// - output logits: `[batch, num_outputs]`
    ///
    /// # Panics
    /// If `complementary` is missing for a model that reads it.
    pub fn classify(&self, main: &AnyInput<B>, complementary: Option<Tensor<B, 2>>) -> ModelOutput<B, 2> {
        match self {
            Self::Fusion(m) => {
                let out = m.forward_with_feature(main, complementary.expect("the complementary feature of the batch"));
                ModelOutput::of_routers(out.logits, out.routing, out.importance_loss)
            }
            Self::Experts(m) => {
                let out = m.classifier.forward(&m.expert_inputs(main));
                ModelOutput::of_dispatchers(out.logits, out.dispatch)
            }
        }
    }

    /// Patch scores of a batch (segmentation), at the model's finest patch grid.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`, for the models that read one
    /// - output logits: `[batch, num_classes, height, width]`
    ///
    /// # Panics
    /// If `complementary` is missing for a model that reads it, or an encoder has no patch grid.
    pub fn dense(&self, main: &AnyInput<B>, complementary: Option<Tensor<B, 2>>) -> ModelOutput<B, 4> {
        match self {
            Self::Fusion(m) => {
                let out = m.forward_dense_with_feature(main, complementary.expect("the complementary feature of the batch"));
                ModelOutput::of_routers(out.logits, out.routing, out.importance_loss)
            }
            Self::Experts(m) => {
                let out = m.classifier.forward_dense(&m.expert_inputs(main));
                ModelOutput::of_dispatchers(out.logits, out.dispatch)
            }
        }
    }
}

/// The parameters trained at one learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearningRateGroup {
    /// Every trainable parameter but the complementary encoder's prompts (`train.lr`).
    Main,
    /// The complementary encoder's deep prompts (`train.complementary_lr`, official `--lr_vis`).
    Complementary,
}

impl<B: TrainBackend> Model<B> {
    /// The gradients of a backward pass, split into this model's learning-rate groups, the main
    /// group first.
    pub fn gradient_groups(&self, mut grads: B::Gradients) -> Vec<(LearningRateGroup, GradientsParams)> {
        let complementary = self.complementary_prompts().map(|p| GradientsParams::from_module(&mut grads, p));
        let mut groups = vec![(LearningRateGroup::Main, GradientsParams::from_grads(grads, self))];
        groups.extend(complementary.map(|g| (LearningRateGroup::Complementary, g)));
        groups
    }
}

/// Adapters and parameter tables are those of the classifier inside, so that their keys read
/// `prompts.…`, `head.…` whichever family the run is of.
impl<B: TrainBackend> Model<B> {
    /// Saves the trainable parameters (see [`mope_core::save_adapter`]).
    pub fn save_adapter(&self, dir: &std::path::Path, method: &str, base_model: serde_json::Value, config: serde_json::Value) -> Result<AdapterSaveReport, AdapterError> {
        match self {
            Self::Fusion(m) => mope_core::save_adapter(m, dir, method, base_model, config),
            Self::Experts(m) => mope_core::save_adapter(&m.classifier, dir, method, base_model, config),
        }
    }

    /// Trainable and total parameters per module.
    pub fn summary(&self) -> ParamSummary {
        match self {
            Self::Fusion(m) => ParamSummary::of(m),
            Self::Experts(m) => ParamSummary::of(&m.classifier),
        }
    }
}

impl<B: Backend> Model<B> {
    /// Loads an adapter saved by [`save_adapter`](Model::save_adapter) (see
    /// [`mope_core::load_adapter`]).
    pub fn load_adapter(self, dir: &std::path::Path) -> Result<(Self, AdapterConfig), AdapterError> {
        match self {
            Self::Fusion(m) => mope_core::load_adapter(m, dir).map(|(m, c)| (Self::Fusion(m), c)),
            Self::Experts(ExpertsModel { classifier, inputs }) => {
                mope_core::load_adapter(classifier, dir).map(|(classifier, c)| (Self::Experts(ExpertsModel { classifier, inputs }), c))
            }
        }
    }
}

impl<B: Backend> ExpertsModel<B> {
    /// Each expert's input, made from the shared image.
    ///
    /// # Panics
    /// If `main` is not pixels.
    pub fn expert_inputs(&self, main: &AnyInput<B>) -> Vec<AnyInput<B>> {
        let AnyInput::Pixels(pixels) = main else { panic!("pMoE experts read images") };
        self.inputs.iter().map(|adapt| AnyInput::Pixels(adapt.apply(pixels.clone()))).collect()
    }
}

/// Turns pixels prepared for one image preprocessing into those of another on the device: the
/// normalisation is undone and redone (`x · std_from / std_to + (mean_from − mean_to) / std_to`
/// per channel) and the crop is resized bilinearly. (Resizing the shared crop, rather than
/// re-cropping the original, keeps one decode per sample; the crops differ only where the
/// presets' resize-to-crop ratios do.)
#[derive(Debug, Clone, PartialEq)]
pub struct PixelAdapt {
    size: usize,
    scale: [f32; 3],
    shift: [f32; 3],
}

impl PixelAdapt {
    /// From pixels prepared by `from` to pixels as `to` would prepare them.
    pub fn new(from: &ImagePreprocess, to: &ImagePreprocess) -> Self {
        let scale = std::array::from_fn(|c| from.std[c] / to.std[c]);
        let shift = std::array::from_fn(|c| (from.mean[c] - to.mean[c]) / to.std[c]);
        Self { size: to.size, scale, shift }
    }

    /// Adapts a batch.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, height, width]`; output `[batch, 3, size, size]`
    pub fn apply<B: Backend>(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, height, width] = pixels.dims();
        let mut x = pixels;
        if self.scale != [1.0; 3] || self.shift != [0.0; 3] {
            let device = x.device();
            let scale = Tensor::<B, 1>::from_floats(self.scale, &device).reshape([1, 3, 1, 1]);
            let shift = Tensor::<B, 1>::from_floats(self.shift, &device).reshape([1, 3, 1, 1]);
            x = x * scale + shift;
        }
        if (height, width) != (self.size, self.size) {
            x = interpolate(x, [self.size, self.size], InterpolateOptions::new(InterpolateMode::Bilinear));
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    #[test]
    fn pixels_are_renormalised_per_channel_and_resized() {
        let device = Default::default();
        let from = ImagePreprocess { resize: 8, size: 4, mean: [0.5; 3], std: [0.5; 3] };
        let to = ImagePreprocess { resize: 4, size: 2, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
        // A constant image of raw value 0.8 in every channel: (0.8 − 0.5) / 0.5 = 0.6 as prepared.
        let x = Tensor::<Flex, 4>::full([1, 3, 4, 4], 0.6, &device);
        let y = PixelAdapt::new(&from, &to).apply(x);
        assert_eq!(y.dims(), [1, 3, 2, 2]);
        let expected: Vec<f32> = (0..3).flat_map(|c| [(0.8 - to.mean[c]) / to.std[c]; 4]).collect();
        y.to_data().assert_approx_eq::<f32>(&Tensor::<Flex, 1>::from_floats(expected.as_slice(), &device).reshape([1, 3, 2, 2]).to_data(), Tolerance::absolute(1e-5));
        let same = PixelAdapt::new(&from, &from);
        let x = Tensor::<Flex, 4>::random([2, 3, 4, 4], burn::tensor::Distribution::Default, &device);
        same.apply(x.clone()).to_data().assert_eq(&x.to_data(), true);
    }
}
