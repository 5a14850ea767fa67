//! Per-layer MoPE prompts: static prompt, dynamic prompt (a routed mixture of prompt experts) and
//! mapped prompts, concatenated in that order and inserted before each prompted layer.
//!
//! The parts can be switched off one by one, which gives the baselines of the paper from the same
//! module: static only is vanilla deep prompt tuning (VPT), static + mapped is sequential fusion
//! ("conditional prompt" without experts), all three is MoPE.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Bool, Tensor, backend::Backend};
use ops::{RoutingMixture, masked_mean};

use crate::deep_prompt::LayerPromptSource;
use crate::experts::{PromptExperts, PromptExpertsConfig, vpt_init_range};
use crate::mapper::{PromptMapper, PromptMapperConfig};
use crate::router::{Router, RouterConfig, RouterSettings, RoutingOutput};

/// Configuration of [`MopePrompts`]. Field names follow burn; the official MoPE flag names are
/// given where they exist.
#[derive(Config, Debug)]
pub struct MopePromptsConfig {
    /// Number of layers of the prompted encoder.
    pub num_layers: usize,
    /// Token width of the prompted encoder (of every layer, unless `layer_widths` is set).
    pub d_model: usize,
    /// Width of the complementary representation the router and mapper read (0 when there is none,
    /// as for vanilla prompt tuning).
    pub d_complementary: usize,
    /// Static prompt tokens per layer (official `--prompt_length`); 0 disables the static prompt.
    #[config(default = 6)]
    pub static_len: usize,
    /// Prompt experts per layer (official `--moe_n_experts`); 0 disables the dynamic prompt.
    #[config(default = 4)]
    pub num_experts: usize,
    /// Tokens per expert prompt (official `--prompt_length`).
    #[config(default = 6)]
    pub expert_len: usize,
    /// Mapped prompt tokens (shared by all layers); 0 disables the mapper.
    #[config(default = 1)]
    pub mapped_len: usize,
    /// Layers that receive fresh prompts; `None` prompts every layer. Layers left out keep the
    /// previous layer's prompt outputs in the sequence.
    #[config(default = "None")]
    pub prompted_layers: Option<Vec<usize>>,
    /// Token width of each layer, for encoders that widen (Swin); `None`: `d_model` everywhere.
    #[config(default = "None")]
    pub layer_widths: Option<Vec<usize>>,
    /// Router settings shared by all layers (each layer's keys use `key_seed + layer`).
    #[config(default = "RouterSettings::new()")]
    pub router: RouterSettings,
    /// Mapper hidden width.
    #[config(default = 384)]
    pub mapper_hidden: usize,
    /// Dropout on the mapped tokens.
    #[config(default = 0.1)]
    pub mapper_dropout: f64,
    /// Half-width of the uniform prompt initialisation; `None` uses VPT's value for the width.
    #[config(default = "None")]
    pub init_range: Option<f64>,
}

/// The prompts of one layer.
#[derive(Module, Debug)]
pub struct LayerPrompts<B: Backend> {
    /// Static prompt. Shape `[static_len, d_model]`.
    pub static_prompt: Option<Param<Tensor<B, 2>>>,
    /// Prompt experts of the dynamic prompt.
    pub experts: Option<PromptExperts<B>>,
    /// Router of the dynamic prompt.
    pub router: Option<Router<B>>,
}

/// MoPE prompts for every layer of one encoder.
#[derive(Module, Debug)]
pub struct MopePrompts<B: Backend> {
    /// One entry per encoder layer; `None` for layers that get no fresh prompt.
    pub layers: Vec<Option<LayerPrompts<B>>>,
    /// Mapper of the mapped prompt tokens (a field named `mapper` would clash with burn's derive).
    pub mapped: Option<PromptMapper<B>>,
}

impl MopePromptsConfig {
    /// Token width at `layer`.
    pub fn width(&self, layer: usize) -> usize {
        self.layer_widths.as_ref().map_or(self.d_model, |w| w[layer])
    }

    /// The distinct widths, in order of first appearance (one mapper output each).
    pub fn distinct_widths(&self) -> Vec<usize> {
        let mut widths = Vec::new();
        for layer in 0..self.num_layers {
            let w = self.width(layer);
            if !widths.contains(&w) {
                widths.push(w);
            }
        }
        if widths.is_empty() {
            widths.push(self.d_model);
        }
        widths
    }

    /// Number of prompt tokens inserted at a prompted layer.
    pub fn tokens_per_layer(&self) -> usize {
        self.static_len + if self.num_experts > 0 { self.expert_len } else { 0 } + self.mapped_len
    }

    /// Initialises the prompts on `device`.
    ///
    /// # Panics
    /// If no prompt part is enabled, if the router or mapper needs a complementary representation
    /// and `d_complementary` is 0, or if a prompted layer index is out of range.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MopePrompts<B> {
        assert!(self.tokens_per_layer() > 0, "MoPE prompts need at least one static, expert or mapped token");
        let needs_complementary = self.num_experts > 0 && self.router.d_cross > 0 || self.mapped_len > 0;
        assert!(
            !needs_complementary || self.d_complementary > 0,
            "the router and mapper read a complementary representation, but d_complementary is 0"
        );
        if let Some(widths) = &self.layer_widths {
            assert_eq!(widths.len(), self.num_layers, "layer_widths has {} entries for {} layers", widths.len(), self.num_layers);
        }
        let prompted: Vec<bool> = match &self.prompted_layers {
            None => vec![true; self.num_layers],
            Some(list) => {
                let mut mask = vec![false; self.num_layers];
                for &l in list {
                    assert!(l < self.num_layers, "prompted layer {l} out of range 0..{}", self.num_layers);
                    mask[l] = true;
                }
                mask
            }
        };
        let layers = prompted
            .iter()
            .enumerate()
            .map(|(layer, &on)| {
                let width = self.width(layer);
                let range = self.init_range.unwrap_or_else(|| vpt_init_range(4, width));
                let init = Initializer::Uniform { min: -range, max: range };
                on.then(|| LayerPrompts {
                    static_prompt: (self.static_len > 0).then(|| init.init([self.static_len, width], device)),
                    experts: (self.num_experts > 0).then(|| {
                        PromptExpertsConfig::new(self.num_experts, self.expert_len, width)
                            .with_init_range(Some(range))
                            .init(device)
                    }),
                    router: (self.num_experts > 0).then(|| self.router_config(layer).init(device)),
                })
            })
            .collect();
        MopePrompts {
            layers,
            mapped: (self.mapped_len > 0).then(|| {
                PromptMapperConfig::new(self.d_complementary, self.distinct_widths())
                    .with_num_tokens(self.mapped_len)
                    .with_d_hidden(self.mapper_hidden)
                    .with_dropout(self.mapper_dropout)
                    .init(device)
            }),
        }
    }

    fn router_config(&self, layer: usize) -> RouterConfig {
        let s = &self.router;
        let settings = s
            .clone()
            .with_d_cross(if self.d_complementary > 0 { s.d_cross } else { 0 })
            .with_key_seed(s.key_seed.wrapping_add(layer as u64));
        RouterConfig::new(self.num_experts, self.width(layer), self.d_complementary.max(1)).with_settings(settings)
    }
}

impl<B: Backend> MopePrompts<B> {
    /// Starts one forward pass: computes the mapped tokens once, then serves each layer's prompts
    /// and records its routing.
    ///
    /// # Shapes
    /// - `complementary`: `[batch, d_complementary]`, or `None` when no part reads it
    pub fn run(&self, complementary: Option<Tensor<B, 2>>) -> MopeRun<'_, B> {
        let mapped = match (&self.mapped, &complementary) {
            (Some(mapper), Some(y)) => mapper.forward(y.clone()),
            (Some(_), None) => panic!("mapped prompts need the complementary representation"),
            (None, _) => Vec::new(),
        };
        MopeRun {
            prompts: self,
            complementary,
            mapped,
            routing: Vec::new(),
        }
    }

    /// Number of layers with a router (the routed layers).
    pub fn num_routed_layers(&self) -> usize {
        self.layers.iter().flatten().filter(|l| l.router.is_some()).count()
    }
}

/// One forward pass of [`MopePrompts`]: a [`LayerPromptSource`] that records routing decisions.
#[derive(Debug)]
pub struct MopeRun<'a, B: Backend> {
    prompts: &'a MopePrompts<B>,
    complementary: Option<Tensor<B, 2>>,
    /// Mapped tokens of each width.
    mapped: Vec<Tensor<B, 3>>,
    /// Routing of each routed layer, in layer order, as `(layer, routing)`.
    pub routing: Vec<(usize, RoutingOutput<B>)>,
}

impl<B: RoutingMixture> LayerPromptSource<B> for MopeRun<'_, B> {
    fn prompts(
        &mut self,
        layer: usize,
        hidden: &Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
    ) -> Option<Tensor<B, 3>> {
        let this = self.prompts.layers.get(layer)?.as_ref()?;
        let [batch, _, d_model] = hidden.dims();
        let mut parts = Vec::with_capacity(3);
        if let Some(p) = &this.static_prompt {
            let [len, _] = p.dims();
            parts.push(p.val().unsqueeze_dim::<3>(0).expand([batch, len, d_model]));
        }
        if let (Some(experts), Some(router)) = (&this.experts, &this.router) {
            let y = self.complementary.clone().unwrap_or_else(|| {
                Tensor::zeros([batch, 1], &hidden.device())
            });
            let routing = router.forward(masked_mean(hidden.clone(), mask_pad), y);
            parts.push(experts.mix_routed(routing.logits.clone(), routing.softmax));
            self.routing.push((layer, routing));
        }
        if let Some(m) = self.mapped.iter().find(|m| m.dims()[2] == d_model) {
            parts.push(m.clone());
        }
        Some(Tensor::cat(parts, 1))
    }

    /// A layer without a router replaces the previous prompt outputs unread; a router reads
    /// them through the mean of the hidden state.
    fn replaces_unread(&self, layer: usize) -> bool {
        self.prompts.layers.get(layer).and_then(Option::as_ref).is_some_and(|l| l.router.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    type B = Flex;

    #[test]
    fn layer_prompt_is_static_then_dynamic_then_mapped() {
        let device = Default::default();
        let cfg = MopePromptsConfig::new(3, 8, 5)
            .with_static_len(2)
            .with_num_experts(3)
            .with_expert_len(4)
            .with_mapped_len(1)
            .with_mapper_hidden(6);
        let prompts = cfg.init::<B>(&device);
        assert_eq!(cfg.tokens_per_layer(), 7);
        let y = Tensor::<B, 2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
        let hidden = Tensor::<B, 3>::random([2, 9, 8], Distribution::Normal(0.0, 1.0), &device);
        let mut run = prompts.run(Some(y.clone()));
        let p = run.prompts(1, &hidden, None).unwrap();
        assert_eq!(p.dims(), [2, 7, 8]);

        let layer = prompts.layers[1].as_ref().unwrap();
        let static_part = layer.static_prompt.as_ref().unwrap().val().unsqueeze_dim::<3>(0).repeat_dim(0, 2);
        let routing = layer.router.as_ref().unwrap().forward(hidden.clone().mean_dim(1).squeeze_dim(1), y.clone());
        let dynamic = layer.experts.as_ref().unwrap().mix_routed(routing.logits, routing.softmax);
        let mapped = prompts.mapped.as_ref().unwrap().forward(y).remove(0);
        let expected = Tensor::cat(vec![static_part, dynamic, mapped], 1);
        p.to_data().assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
        assert_eq!(run.routing.len(), 1);
        assert_eq!(run.routing[0].0, 1);
    }

    #[test]
    fn static_only_is_vanilla_prompt_tuning() {
        let device = Default::default();
        let prompts = MopePromptsConfig::new(2, 8, 0)
            .with_num_experts(0)
            .with_mapped_len(0)
            .with_static_len(3)
            .init::<B>(&device);
        assert!(prompts.mapped.is_none());
        assert_eq!(prompts.num_routed_layers(), 0);
        let hidden = Tensor::<B, 3>::zeros([4, 5, 8], &device);
        let mut run = prompts.run(None);
        let p = run.prompts(0, &hidden, None).unwrap();
        assert_eq!(p.dims(), [4, 3, 8]);
        assert!(run.routing.is_empty());
    }

    #[test]
    fn widening_encoders_get_prompts_of_each_layer_width() {
        let device = Default::default();
        let cfg = MopePromptsConfig::new(3, 16, 5)
            .with_layer_widths(Some(vec![8, 8, 16]))
            .with_static_len(1)
            .with_num_experts(2)
            .with_expert_len(2)
            .with_mapper_hidden(4);
        assert_eq!(cfg.distinct_widths(), [8, 16]);
        let prompts = cfg.init::<B>(&device);
        let y = Tensor::<B, 2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
        let mut run = prompts.run(Some(y));
        for (layer, width) in [(0, 8), (2, 16)] {
            let hidden = Tensor::<B, 3>::zeros([2, 4, width], &device);
            assert_eq!(run.prompts(layer, &hidden, None).unwrap().dims(), [2, 4, width]);
        }
    }

    #[test]
    fn only_listed_layers_are_prompted() {
        let device = Default::default();
        let prompts = MopePromptsConfig::new(4, 8, 5)
            .with_prompted_layers(Some(vec![1, 3]))
            .with_mapper_hidden(4)
            .init::<B>(&device);
        let present: Vec<bool> = prompts.layers.iter().map(Option::is_some).collect();
        assert_eq!(present, [false, true, false, true]);
        assert_eq!(prompts.num_routed_layers(), 2);
    }

    /// Prompts replace the previous layer's outputs unread where no router reads them (through
    /// the mean of the hidden state); an unprompted layer replaces nothing.
    #[test]
    fn prompt_outputs_are_unread_only_before_a_prompted_layer_without_router() {
        let device = Default::default();
        for (num_experts, expected) in [(0, [false, true, false, true]), (2, [false; 4])] {
            let prompts = MopePromptsConfig::new(4, 8, 5)
                .with_prompted_layers(Some(vec![1, 3]))
                .with_num_experts(num_experts)
                .with_mapper_hidden(4)
                .init::<B>(&device);
            let run = prompts.run(Some(Tensor::zeros([1, 5], &device)));
            assert_eq!((0..4).map(|l| run.replaces_unread(l)).collect::<Vec<_>>(), expected, "{num_experts} experts");
        }
    }
}
