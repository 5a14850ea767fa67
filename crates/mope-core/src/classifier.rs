//! A multimodal classifier over two frozen encoders: MoPE and the baselines it is compared with,
//! selected by [`FusionMethod`].
//!
//! | method | main encoder prompts | head input |
//! |---|---|---|
//! | [`FusionMethod::Mope`] | static + routed experts + mapped | main pooled |
//! | [`FusionMethod::Sequential`] | static + mapped (no experts) | main pooled |
//! | [`FusionMethod::PromptTuning`] | static only (vanilla deep prompt tuning) | `[main pooled ; complementary]` |
//! | [`FusionMethod::LateFusion`] | none (linear probe on frozen features) | `[main pooled ; complementary]` |
//! | [`FusionMethod::FineTuning`] | none; the main encoder itself trains | `[main pooled ; complementary]` |
//!
//! [`HeadInput`] overrides what the head reads, so that heads can be compared like for like and
//! each modality measured alone: MoPE or prompt tuning under the concatenated head, prompt tuning
//! with the head on the main encoder only (the main modality alone), or a linear probe on the
//! complementary feature only (late fusion's head on that modality alone).
//!
//! The complementary encoder is frozen; its pooled representation is computed without prompts
//! (and can then be cached across epochs) unless `complementary_prompt_len > 0`, in which case it
//! is itself deep-prompt-tuned (the official code's `--train_instructor`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use ops::{FastSplice, RoutingMixture};
use serde::{Deserialize, Serialize};

use crate::deep_prompt::{PromptedTokens, forward_prompted};
use crate::encoder::PromptableEncoder;
use crate::params::{materialize, unfreeze};
use crate::prompts::{MopePrompts, MopePromptsConfig};
use crate::regularizer::importance_loss;
use crate::router::RoutingOutput;

/// How the two modalities are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusionMethod {
    /// Mixture of prompt experts (the method of the paper).
    Mope,
    /// Static and mapped prompts, no experts ("conditional prompt" / sequential fusion).
    Sequential,
    /// Static deep prompts in the main encoder, features concatenated at the head.
    PromptTuning,
    /// No prompts: a linear head on the concatenated frozen features.
    LateFusion,
    /// No prompts: every parameter of the main encoder trains with the head (the upper
    /// reference of parameter-efficient methods); the complementary encoder stays frozen.
    FineTuning,
}

impl FusionMethod {
    /// Name used in adapter files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mope => "mope",
            Self::Sequential => "sequential",
            Self::PromptTuning => "prompt-tuning",
            Self::LateFusion => "late-fusion",
            Self::FineTuning => "fine-tuning",
        }
    }

    /// What the method's head reads unless [`MultimodalClassifierConfig::head`] says otherwise.
    pub fn default_head(self) -> HeadInput {
        match self {
            Self::Mope | Self::Sequential => HeadInput::Main,
            Self::PromptTuning | Self::LateFusion | Self::FineTuning => HeadInput::Both,
        }
    }

    /// Whether the method inserts prompts into the main encoder.
    pub fn prompts_main(self) -> bool {
        !matches!(self, Self::LateFusion | Self::FineTuning)
    }
}

/// What the classification head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInput {
    /// The main encoder's pooled representation.
    Main,
    /// The main encoder's pooled representation and the complementary one, concatenated.
    Both,
    /// The complementary representation only (the main encoder is not run): a linear probe of
    /// the complementary modality alone. Only for methods without prompts in the main encoder.
    Complementary,
}

/// Configuration of a [`MultimodalClassifier`].
#[derive(Config, Debug)]
pub struct MultimodalClassifierConfig {
    /// Fusion method.
    pub method: FusionMethod,
    /// Number of output classes (labels, for multi-label tasks).
    pub num_classes: usize,
    /// Prompts of the main encoder. `num_layers`, `d_model` and `d_complementary` are taken from
    /// the encoders at [`init`](Self::init); the method switches parts off as in the table above.
    pub prompts: MopePromptsConfig,
    /// Deep static prompt tokens per layer in the complementary encoder (official `--t_prompt_length`);
    /// 0 keeps it frozen without prompts.
    #[config(default = 0)]
    pub complementary_prompt_len: usize,
    /// Importance values at or below this are zeroed (official code: 0.1).
    #[config(default = 0.1)]
    pub importance_threshold: f64,
    /// What the head reads; `None`: the method's default ([`FusionMethod::default_head`]).
    #[config(default = "None")]
    pub head: Option<HeadInput>,
}

/// Two frozen encoders, the trainable prompts of the chosen method, and a linear head.
#[derive(Module, Debug)]
pub struct MultimodalClassifier<B: Backend, M, C> {
    /// Frozen main encoder (prompted).
    pub main: M,
    /// Frozen complementary encoder.
    pub complementary: C,
    /// Prompts of the main encoder (`None` for late fusion).
    pub prompts: Option<MopePrompts<B>>,
    /// Static deep prompts of the complementary encoder.
    pub complementary_prompts: Option<MopePrompts<B>>,
    /// Classification head.
    pub head: Linear<B>,
    #[module(skip)]
    head_input: HeadInput,
    /// The main encoder itself trains (fine-tuning).
    #[module(skip)]
    main_trains: bool,
    importance_threshold: f64,
}

/// Output of [`MultimodalClassifier::forward`].
#[derive(Debug, Clone)]
pub struct ClassifierOutput<B: Backend> {
    /// Class scores. Shape `[batch, num_classes]`.
    pub logits: Tensor<B, 2>,
    /// Routing of every routed layer of the main encoder, as `(layer, routing)`.
    pub routing: Vec<(usize, RoutingOutput<B>)>,
    /// Importance loss averaged over routed layers (0 without routing). Shape `[1]`.
    pub importance_loss: Tensor<B, 1>,
}

/// Routing of every routed layer, as `(layer, routing)`.
pub type LayerRouting<B> = Vec<(usize, RoutingOutput<B>)>;

/// Output of [`MultimodalClassifier::forward_dense_with_feature`].
#[derive(Debug, Clone)]
pub struct DenseOutput<B: Backend> {
    /// Class scores per patch. Shape `[batch, num_classes, height, width]`.
    pub logits: Tensor<B, 4>,
    /// Routing of every routed layer of the main encoder, as `(layer, routing)`.
    pub routing: Vec<(usize, RoutingOutput<B>)>,
    /// Importance loss averaged over routed layers (0 without routing). Shape `[1]`.
    pub importance_loss: Tensor<B, 1>,
}

impl MultimodalClassifierConfig {
    /// What the head reads: [`head`](Self::head), or the method's default.
    pub fn head_input(&self) -> HeadInput {
        self.head.unwrap_or(self.method.default_head())
    }

    /// The prompt configuration actually used with this main encoder, a complementary
    /// representation of width `d_complementary`, and this method.
    pub fn resolved_prompts<B: Backend, M: PromptableEncoder<B>>(&self, main: &M, d_complementary: usize) -> MopePromptsConfig {
        let mut p = self.prompts.clone();
        p.num_layers = main.num_layers();
        p.d_model = main.d_model();
        p.d_complementary = d_complementary;
        let widths: Vec<usize> = (0..p.num_layers).map(|l| main.layer_width(l)).collect();
        p.layer_widths = widths.iter().any(|&w| w != p.d_model).then_some(widths);
        if p.prompted_layers.is_none() {
            p.prompted_layers = main.default_prompted_layers();
        }
        match self.method {
            FusionMethod::Mope | FusionMethod::LateFusion | FusionMethod::FineTuning => {}
            FusionMethod::Sequential => p.num_experts = 0,
            FusionMethod::PromptTuning => {
                p.num_experts = 0;
                p.mapped_len = 0;
            }
        }
        p
    }

    /// Builds the classifier around two pretrained encoders, which are frozen
    /// ([`PromptableEncoder::freeze`]); with [`FusionMethod::FineTuning`] the main encoder is
    /// made entirely trainable instead.
    ///
    /// # Panics
    /// If `num_classes` is 0, or the head reads the complementary representation only for a
    /// method that prompts or trains the main encoder.
    pub fn init<B: Backend, M: PromptableEncoder<B>, C: PromptableEncoder<B>>(
        &self,
        main: M,
        complementary: C,
        device: &B::Device,
    ) -> MultimodalClassifier<B, M, C> {
        assert!(self.num_classes > 0, "num_classes must be at least 1");
        let head_input = self.head_input();
        assert!(
            head_input != HeadInput::Complementary || self.method == FusionMethod::LateFusion,
            "a head on the complementary representation only is late fusion's probe of that modality; method {} trains the main encoder's side",
            self.method.name()
        );
        let (d_main, d_comp) = (main.d_model(), complementary.d_model());
        // Trainable parts are materialised in declaration order, so a seed alone fixes their values.
        let prompts = self.method.prompts_main().then(|| materialize(self.resolved_prompts(&main, d_comp).init(device)));
        let complementary_prompts = (self.complementary_prompt_len > 0).then(|| {
            MopePromptsConfig::new(complementary.num_layers(), d_comp, 0)
                .with_static_len(self.complementary_prompt_len)
                .with_num_experts(0)
                .with_mapped_len(0)
                .with_init_range(Some(0.3))
                .init(device)
        })
        .map(materialize);
        let d_head = match head_input {
            HeadInput::Main => d_main,
            HeadInput::Both => d_main + d_comp,
            HeadInput::Complementary => d_comp,
        };
        MultimodalClassifier {
            main: if self.method == FusionMethod::FineTuning { unfreeze(main) } else { main.freeze() },
            complementary: complementary.freeze(),
            prompts,
            complementary_prompts,
            head: materialize(LinearConfig::new(d_head, self.num_classes).init(device)),
            head_input,
            main_trains: self.method == FusionMethod::FineTuning,
            importance_threshold: self.importance_threshold,
        }
    }
}

impl<B: RoutingMixture + FastSplice, M: PromptableEncoder<B>, C: PromptableEncoder<B>> MultimodalClassifier<B, M, C> {
    /// Pooled representation of the complementary modality (the router's pairing prior).
    /// Without complementary prompts it carries no gradient, so it can be cached.
    ///
    /// # Shapes
    /// - output: `[batch, d_complementary]`
    pub fn complementary_feature(&self, input: &C::Input) -> Tensor<B, 2> {
        let embedded = self.complementary.embed(input);
        match &self.complementary_prompts {
            Some(prompts) => forward_prompted(&self.complementary, embedded, &mut prompts.run(None)).pooled,
            None => forward_prompted(&self.complementary, embedded, &mut ()).pooled.detach(),
        }
    }

    /// Whether the head reads the main encoder (all but late fusion's probe of the complementary
    /// modality alone).
    pub fn reads_main(&self) -> bool {
        self.head_input != HeadInput::Complementary
    }

    /// Whether the main encoder's pooled representation of a sample is a constant: no prompts,
    /// and nothing of the encoder trains (late fusion and its probe of the main modality, over
    /// an encoder without a trainable part). It can then be computed once and cached, as the
    /// complementary one.
    pub fn main_is_constant(&self) -> bool {
        self.prompts.is_none() && !self.main_trains && !self.main.keeps_trainable_part()
    }

    /// The main encoder's pooled representation, without prompts and detached: what
    /// [`forward_constant`](Self::forward_constant) reads where [`main_is_constant`](Self::main_is_constant).
    ///
    /// # Shapes
    /// - output: `[batch, d_main]`
    pub fn main_feature(&self, main: &M::Input) -> Tensor<B, 2> {
        forward_prompted(&self.main, self.main.embed(main), &mut ()).pooled.detach()
    }

    /// Classifies from precomputed pooled representations: the head alone, for a classifier whose
    /// main representation is constant ([`main_is_constant`](Self::main_is_constant)); `main` is
    /// `None` where the head does not read it ([`reads_main`](Self::reads_main)). Equal to
    /// [`forward_with_feature`](Self::forward_with_feature) with `main` computed by
    /// [`main_feature`](Self::main_feature).
    ///
    /// # Shapes
    /// - `main`: `[batch, d_main]`, `complementary`: `[batch, d_complementary]`
    /// - output logits: `[batch, num_classes]`
    ///
    /// # Panics
    /// If the head reads a main representation that is not constant, or `main` is missing where
    /// the head reads it.
    pub fn forward_constant(&self, main: Option<Tensor<B, 2>>, complementary: Tensor<B, 2>) -> ClassifierOutput<B> {
        assert!(
            self.main_is_constant() || !self.reads_main(),
            "the main encoder is prompted or trained: its representation is not a constant"
        );
        self.check_complementary_width(&complementary);
        let importance_loss = self.mean_importance_loss(&[], &complementary.device());
        let logits = match (main, self.head_input) {
            (_, HeadInput::Complementary) => self.head.forward(complementary),
            (Some(main), _) => {
                let ([_, width], expected) = (main.dims(), self.main.d_model());
                assert_eq!(width, expected, "main representation has width {width}, the main encoder's is {expected}");
                self.head_logits(main, complementary)
            }
            (None, head) => panic!("the head reads the main encoder ({head:?}) but no main representation was given"),
        };
        ClassifierOutput { logits, routing: Vec::new(), importance_loss }
    }

    /// Classifies a batch of paired inputs.
    ///
    /// # Shapes
    /// - output logits: `[batch, num_classes]`
    pub fn forward(&self, main: &M::Input, complementary: &C::Input) -> ClassifierOutput<B> {
        let feature = self.complementary_feature(complementary);
        self.forward_with_feature(main, feature)
    }

    /// Classifies with a precomputed complementary representation (see
    /// [`complementary_feature`](Self::complementary_feature)).
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`
    /// - output logits: `[batch, num_classes]`
    ///
    /// # Panics
    /// If `complementary` is not `d_complementary` wide.
    pub fn forward_with_feature(&self, main: &M::Input, complementary: Tensor<B, 2>) -> ClassifierOutput<B> {
        if !self.reads_main() {
            return self.forward_constant(None, complementary);
        }
        let (out, routing, importance_loss) = self.prompted_main(main, &complementary);
        ClassifierOutput { logits: self.head_logits(out.pooled, complementary), routing, importance_loss }
    }

    /// The head on what it reads ([`HeadInput`]) of the main encoder's pooled representation
    /// and the complementary one.
    ///
    /// # Shapes
    /// - `pooled`: `[batch, d_main]`, `complementary`: `[batch, d_complementary]`
    /// - output: `[batch, num_classes]`
    pub fn head_logits(&self, pooled: Tensor<B, 2>, complementary: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(match self.head_input {
            HeadInput::Main => pooled,
            HeadInput::Both => Tensor::cat(vec![pooled, complementary], 1),
            HeadInput::Complementary => complementary,
        })
    }

    /// The importance loss of a forward pass: the mean over the routed layers of each layer's
    /// [`importance_loss`] at this classifier's threshold; 0 when nothing was routed.
    ///
    /// # Shapes
    /// - output: `[1]`
    pub fn mean_importance_loss(&self, routing: &[(usize, RoutingOutput<B>)], device: &B::Device) -> Tensor<B, 1> {
        let n = routing.len() as f64;
        routing
            .iter()
            .map(|(_, r)| importance_loss(r.weights.clone(), self.importance_threshold))
            .reduce(|a, b| a + b)
            .map_or_else(|| Tensor::zeros([1], device), |sum| sum / n)
    }

    /// Dense prediction (segmentation): the head applied to every patch of the main encoder's
    /// final feature map (a linear decoder), with the complementary feature concatenated at each
    /// position where the head reads both ([`HeadInput::Both`]). The logits are at the encoder's
    /// patch resolution; upsample them to the label map.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`
    /// - output logits: `[batch, num_classes, height, width]` (the patch grid)
    ///
    /// # Panics
    /// If the main encoder has no spatial grid ([`PromptableEncoder::feature_map`]), or the head
    /// reads the complementary representation only (it has no positions).
    pub fn forward_dense_with_feature(&self, main: &M::Input, complementary: Tensor<B, 2>) -> DenseOutput<B> {
        let (out, routing, importance_loss) = self.prompted_main(main, &complementary);
        let map = self.main.feature_map(out.tokens, out.num_prompts).expect("the main encoder has no spatial grid for dense prediction");
        let [batch, _, height, width] = map.dims();
        let per_position = map.permute([0, 2, 3, 1]); // [batch, height, width, d_main]
        let per_position = match self.head_input {
            HeadInput::Main => per_position,
            HeadInput::Both => {
                let [_, d_comp] = complementary.dims();
                Tensor::cat(vec![per_position, complementary.reshape([batch, 1, 1, d_comp]).expand([batch, height, width, d_comp])], 3)
            }
            HeadInput::Complementary => panic!("a head on the complementary representation alone has no positions to segment"),
        };
        let logits = self.head.forward(per_position).permute([0, 3, 1, 2]);
        DenseOutput { logits, routing, importance_loss }
    }

    /// # Panics
    /// If `complementary` is not the complementary encoder's width.
    fn check_complementary_width(&self, complementary: &Tensor<B, 2>) {
        let [_, width] = complementary.dims();
        let expected = self.complementary.d_model();
        assert_eq!(width, expected, "complementary feature has width {width}, the complementary encoder's is {expected}");
    }

    /// The prompted forward pass of the main encoder, its routing and importance loss.
    fn prompted_main(&self, main: &M::Input, complementary: &Tensor<B, 2>) -> (PromptedTokens<B>, LayerRouting<B>, Tensor<B, 1>) {
        self.check_complementary_width(complementary);
        let embedded = self.main.embed(main);
        let device = embedded.tokens.device();
        let (out, routing) = match &self.prompts {
            Some(prompts) => {
                let mut run = prompts.run(Some(complementary.clone()));
                let out = forward_prompted(&self.main, embedded, &mut run);
                (out, run.routing)
            }
            None => (forward_prompted(&self.main, embedded, &mut ()), Vec::new()),
        };
        let importance = self.mean_importance_loss(&routing, &device);
        (out, routing, importance)
    }
}
