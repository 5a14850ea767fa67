//! The pMoE model: several frozen experts run on the same sample, each with its own
//! expert-specific prompt tokens (EPTs) at its top `depth` layers, mixed across experts by a
//! [`TokenDispatcher`] per expert and layer; the experts' outputs meet in one head.
//!
//! | [`Combine`] | prompts of expert `k` at step `t` | head |
//! |---|---|---|
//! | [`Combine::Dispatch`] (pMoE) | dispatched from every expert's EPTs (+ what `k` carried) | linear over `[pooled_1 ; … ; pooled_K]` |
//! | [`Combine::Mean`] (mean of experts) | `k`'s own EPTs (VPT-deep per expert) | mean of one linear head per expert |
//! | [`Combine::Concat`] (late fusion) | none: the frozen experts' pooled outputs | linear over `[pooled_1 ; … ; pooled_K]` |
//!
//! Prompted layers are aligned from the top: step `t` of `depth` is layer `n_k − depth + t` of
//! expert `k` (`n_k` layers), so experts of different depths exchange prompts at the same
//! distance from their outputs. With a single expert both combinations are deep prompt tuning (VPT-deep)
//! on that expert (for `Dispatch`, with `carry` off: the dispatcher then has one source).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Bool, Tensor, backend::Backend};
use mope_core::{LayerPromptSource, PromptableEncoder, PromptedTokens, forward_prompted, materialize, vpt_init_range};
use ops::{FastSplice, RoutingMixture};
use serde::{Deserialize, Serialize};

use crate::dispatcher::{TokenDispatcher, TokenDispatcherConfig};
use crate::prompt_tokens::ExpertPromptTokens;
use crate::width_maps::WidthMaps;

/// How the experts are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    /// pMoE: prompt tokens dispatched across experts, one head over all experts' outputs.
    Dispatch,
    /// Mean of experts: each expert prompt-tuned on its own, class scores averaged.
    Mean,
    /// Late fusion: no prompts; one head over the frozen experts' concatenated pooled outputs.
    Concat,
}

/// Configuration of a [`PmoeClassifier`].
#[derive(Config, Debug)]
pub struct PmoeConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// How the experts are combined.
    #[config(default = "Combine::Dispatch")]
    pub combine: Combine,
    /// EPTs per expert per prompted layer `N_p`.
    #[config(default = 10)]
    pub prompt_len: usize,
    /// Prompted layers, counted from the top of each expert; 0: every layer of the shallowest.
    #[config(default = 0)]
    pub depth: usize,
    /// The dispatcher also reads, as a source, the prompts an expert carried out of its previous
    /// prompted layer (the paper's accumulated prompts).
    #[config(default = true)]
    pub carry: bool,
    /// Softmax temperature of the dispatchers.
    #[config(default = 1.0)]
    pub temperature: f64,
    /// Half-width of the uniform EPT initialisation; `None`: VPT's value for 16-pixel patches
    /// and the expert's width.
    #[config(default = "None")]
    pub init_range: Option<f64>,
}

/// Frozen experts, their EPTs, the dispatchers and the head.
#[derive(Module, Debug)]
pub struct PmoeClassifier<B: Backend, E> {
    /// Frozen experts.
    pub experts: Vec<E>,
    /// EPTs, one set per expert; empty for [`Combine::Concat`].
    pub prompts: Vec<ExpertPromptTokens<B>>,
    /// Dispatchers, `[expert][step]`; empty for [`Combine::Mean`] and [`Combine::Concat`].
    pub dispatchers: Vec<Vec<TokenDispatcher<B>>>,
    /// Maps between experts' widths for the dispatchers (none for [`Combine::Mean`],
    /// [`Combine::Concat`], or where every width matches).
    pub width_maps: WidthMaps<B>,
    /// One head over the concatenated outputs ([`Combine::Dispatch`], [`Combine::Concat`]) or
    /// one per expert ([`Combine::Mean`]).
    pub heads: Vec<Linear<B>>,
    /// First prompted layer of each expert.
    first_layers: Vec<usize>,
    #[module(skip)]
    combine: Combine,
}

/// Where a dispatcher sat and what it decided.
#[derive(Debug, Clone)]
pub struct Dispatch<B: Backend> {
    /// The expert it fed.
    pub expert: usize,
    /// That expert's layer.
    pub layer: usize,
    /// Weight of each source for each slot (sources: the experts' EPTs in order, then the
    /// carried prompt if any). Shape `[batch, prompt_len, num_sources]`.
    pub weights: Tensor<B, 3>,
}

impl<B: Backend> Dispatch<B> {
    /// Each sample's weight of each source, averaged over the prompt slots; each row sums to 1.
    ///
    /// # Shapes
    /// - output: `[batch, num_sources]`
    pub fn sample_weights(&self) -> Tensor<B, 2> {
        let [batch, _, sources] = self.weights.dims();
        self.weights.clone().mean_dim(1).reshape([batch, sources])
    }
}

/// Output of [`PmoeClassifier::forward`].
#[derive(Debug, Clone)]
pub struct PmoeOutput<B: Backend> {
    /// Class scores. Shape `[batch, num_classes]`.
    pub logits: Tensor<B, 2>,
    /// Every dispatcher's decision, expert by expert, bottom to top.
    pub dispatch: Vec<Dispatch<B>>,
}

/// Output of [`PmoeClassifier::forward_dense`].
#[derive(Debug, Clone)]
pub struct PmoeDenseOutput<B: Backend> {
    /// Class scores per position of the finest expert grid.
    /// Shape `[batch, num_classes, height, width]`.
    pub logits: Tensor<B, 4>,
    /// Every dispatcher's decision, expert by expert, bottom to top.
    pub dispatch: Vec<Dispatch<B>>,
}

impl PmoeConfig {
    /// The number of prompted layers with these experts.
    ///
    /// # Panics
    /// If there is no expert, an expert has no layer, or `depth` exceeds an expert's layers.
    pub fn resolved_depth<B: Backend, E: PromptableEncoder<B>>(&self, experts: &[E]) -> usize {
        assert!(!experts.is_empty(), "pMoE needs at least one expert");
        let shallowest = experts.iter().map(|e| e.num_layers()).min().expect("experts is not empty");
        assert!(shallowest > 0, "every pMoE expert needs a layer to prompt");
        assert!(self.depth <= shallowest, "depth {} exceeds the shallowest expert's {shallowest} layers", self.depth);
        if self.depth == 0 { shallowest } else { self.depth }
    }

    /// Builds the model around pretrained experts, which are frozen
    /// ([`PromptableEncoder::freeze`]).
    ///
    /// # Panics
    /// As [`resolved_depth`](Self::resolved_depth), or if `num_classes` or `prompt_len` is 0
    /// (`prompt_len` is not read by [`Combine::Concat`]).
    pub fn init<B: Backend, E: PromptableEncoder<B>>(&self, experts: Vec<E>, device: &B::Device) -> PmoeClassifier<B, E> {
        assert!(self.num_classes > 0, "num_classes must be at least 1");
        assert!(self.prompt_len > 0 || self.combine == Combine::Concat, "prompt_len must be at least 1");
        let depth = if self.combine == Combine::Concat { 0 } else { self.resolved_depth(&experts) };
        let first_layers: Vec<usize> = experts.iter().map(|e| e.num_layers() - depth).collect();
        // widths[t][k]: expert k's token width at step t.
        let widths: Vec<Vec<usize>> =
            (0..depth).map(|t| experts.iter().zip(&first_layers).map(|(e, first)| e.layer_width(first + t)).collect()).collect();
        // Trainable parts are materialised in this order, so a seed alone fixes their values.
        let prompted = if self.combine == Combine::Concat { 0 } else { experts.len() };
        let prompts = (0..prompted)
            .map(|k| {
                let own: Vec<usize> = widths.iter().map(|w| w[k]).collect();
                let range = self.init_range.unwrap_or_else(|| vpt_init_range(16, own[0]));
                materialize(ExpertPromptTokens::init(&own, self.prompt_len, range, device))
            })
            .collect();
        let dispatchers = match self.combine {
            Combine::Mean | Combine::Concat => Vec::new(),
            Combine::Dispatch => (0..experts.len())
                .map(|k| {
                    widths
                        .iter()
                        .enumerate()
                        .map(|(t, w)| {
                            // Nothing is carried into the first prompted layer.
                            TokenDispatcherConfig::new(w.clone(), k, self.prompt_len, self.carry && t > 0)
                                .with_temperature(self.temperature)
                                .init(device)
                        })
                        .map(materialize)
                        .collect()
                })
                .collect(),
        };
        let width_maps = match self.combine {
            Combine::Dispatch => WidthMaps::new(&widths, device),
            Combine::Mean | Combine::Concat => WidthMaps::new(&[], device),
        };
        let width_maps = materialize(width_maps);
        let d_out: Vec<usize> = experts.iter().map(|e| e.d_model()).collect();
        let heads = match self.combine {
            Combine::Dispatch | Combine::Concat => vec![LinearConfig::new(d_out.iter().sum(), self.num_classes).init(device)],
            Combine::Mean => d_out.iter().map(|&d| LinearConfig::new(d, self.num_classes).init(device)).collect(),
        };
        PmoeClassifier {
            experts: experts.into_iter().map(PromptableEncoder::freeze).collect(),
            prompts,
            dispatchers,
            width_maps,
            heads: heads.into_iter().map(materialize).collect(),
            first_layers,
            combine: self.combine,
        }
    }
}

/// One expert's forward pass: a [`LayerPromptSource`] that serves its dispatched (or own) EPTs.
struct ExpertRun<'a, B: Backend> {
    expert: usize,
    prompts: &'a [ExpertPromptTokens<B>],
    dispatchers: Option<&'a [TokenDispatcher<B>]>,
    width_maps: &'a WidthMaps<B>,
    first_layer: usize,
    prefix: usize,
    carried_len: usize,
    dispatch: Vec<Dispatch<B>>,
}

impl<B: RoutingMixture> LayerPromptSource<B> for ExpertRun<'_, B> {
    fn prompts(&mut self, layer: usize, hidden: &Tensor<B, 3>, mask_pad: Option<&Tensor<B, 2, Bool>>) -> Option<Tensor<B, 3>> {
        let own = &self.prompts[self.expert];
        let step = layer.checked_sub(self.first_layer).filter(|&t| t < own.steps.len())?;
        let [batch, seq_len, _] = hidden.dims();
        let prompts = match self.dispatchers {
            None => own.at(step).unsqueeze_dim::<3>(0).repeat_dim(0, batch),
            Some(dispatchers) => {
                let dispatcher = &dispatchers[step];
                let epts: Vec<Tensor<B, 2>> = self.prompts.iter().enumerate().map(|(j, p)| self.width_maps.carry(self.expert, step, j, p.at(step))).collect();
                let carried_tokens = (self.carried_len > 0).then(|| hidden.clone().narrow(1, self.prefix, self.carried_len));
                let carried = carried_tokens.filter(|_| dispatcher.num_sources() > epts.len());
                let start = self.prefix + self.carried_len;
                let patches = hidden.clone().narrow(1, start, seq_len - start);
                let mask = mask_pad.map(|m| m.clone().narrow(1, start, seq_len - start));
                let out = dispatcher.forward(&epts, carried, patches, mask.as_ref());
                self.dispatch.push(Dispatch { expert: self.expert, layer, weights: out.weights });
                out.prompts
            }
        };
        self.carried_len = prompts.dims()[1];
        Some(prompts)
    }

    /// Own EPTs replace the previous prompt outputs unread; a dispatcher with the carried prompt
    /// among its sources reads them.
    fn replaces_unread(&self, layer: usize) -> bool {
        let steps = self.prompts[self.expert].steps.len();
        let Some(step) = layer.checked_sub(self.first_layer).filter(|&t| t < steps) else { return false };
        self.dispatchers.is_none_or(|dispatchers| dispatchers[step].num_sources() <= self.prompts.len())
    }
}

impl<B: RoutingMixture + FastSplice, E: PromptableEncoder<B>> PmoeClassifier<B, E> {
    /// Number of experts.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Number of prompted layers per expert (0 for [`Combine::Concat`]).
    pub fn depth(&self) -> usize {
        self.prompts.first().map_or(0, |p| p.steps.len())
    }

    /// EPTs per expert per prompted layer (0 for [`Combine::Concat`]).
    pub fn prompt_len(&self) -> usize {
        self.prompts.first().map_or(0, |p| p.at(0).dims()[0])
    }

    /// First prompted layer of expert `k`.
    pub fn first_layer(&self, k: usize) -> usize {
        self.first_layers[k]
    }

    /// How the experts are combined.
    pub fn combine(&self) -> Combine {
        self.combine
    }

    /// Runs every expert with its prompts.
    ///
    /// # Panics
    /// If there is not one input per expert.
    fn run_experts(&self, inputs: &[E::Input]) -> (Vec<PromptedTokens<B>>, Vec<Dispatch<B>>) {
        assert_eq!(inputs.len(), self.experts.len(), "{} inputs for {} experts", inputs.len(), self.experts.len());
        let mut dispatch = Vec::new();
        let outputs = self
            .experts
            .iter()
            .zip(inputs)
            .enumerate()
            .map(|(k, (expert, input))| {
                if self.prompts.is_empty() {
                    return forward_prompted(expert, expert.embed(input), &mut ());
                }
                let mut run = ExpertRun {
                    expert: k,
                    prompts: &self.prompts,
                    dispatchers: self.dispatchers.get(k).map(Vec::as_slice),
                    width_maps: &self.width_maps,
                    first_layer: self.first_layers[k],
                    prefix: expert.num_prefix_tokens(),
                    carried_len: 0,
                    dispatch: Vec::new(),
                };
                let out = forward_prompted(expert, expert.embed(input), &mut run);
                dispatch.append(&mut run.dispatch);
                out
            })
            .collect();
        (outputs, dispatch)
    }

    /// Whether the head's input is a constant of the sample: late fusion ([`Combine::Concat`])
    /// over experts without a trainable part. It can then be computed once and cached.
    pub fn pooled_is_constant(&self) -> bool {
        self.combine == Combine::Concat && !self.experts.iter().any(PromptableEncoder::keeps_trainable_part)
    }

    /// The experts' pooled outputs as [`forward`](Self::forward) computes them (unprompted, for
    /// late fusion), concatenated and detached: the input of
    /// [`forward_constant`](Self::forward_constant).
    ///
    /// # Shapes
    /// - output: `[batch, Σ d_k]`
    ///
    /// # Panics
    /// If there is not one input per expert.
    pub fn constant_pooled(&self, inputs: &[E::Input]) -> Tensor<B, 2> {
        let (outputs, _) = self.run_experts(inputs);
        Tensor::cat(outputs.into_iter().map(|o| o.pooled).collect(), 1).detach()
    }

    /// Classifies from [`constant_pooled`](Self::constant_pooled)'s output (computed now or
    /// cached): the head alone. Equal to [`forward`](Self::forward) on the same inputs.
    ///
    /// # Shapes
    /// - `pooled`: `[batch, Σ d_k]`; output logits `[batch, num_classes]`
    ///
    /// # Panics
    /// If the pooled outputs are not constant ([`pooled_is_constant`](Self::pooled_is_constant)).
    pub fn forward_constant(&self, pooled: Tensor<B, 2>) -> PmoeOutput<B> {
        assert!(self.pooled_is_constant(), "only late fusion over experts without a trainable part classifies from constant pooled outputs");
        PmoeOutput { logits: self.heads[0].forward(pooled), dispatch: Vec::new() }
    }

    /// Classifies a batch; `inputs[k]` is the batch prepared for expert `k`.
    ///
    /// # Shapes
    /// - output logits: `[batch, num_classes]`
    ///
    /// # Panics
    /// If there is not one input per expert.
    pub fn forward(&self, inputs: &[E::Input]) -> PmoeOutput<B> {
        let (outputs, dispatch) = self.run_experts(inputs);
        let pooled: Vec<Tensor<B, 2>> = outputs.into_iter().map(|o| o.pooled).collect();
        let logits = match self.combine() {
            Combine::Dispatch | Combine::Concat => self.heads[0].forward(Tensor::cat(pooled, 1)),
            Combine::Mean => mean(self.heads.iter().zip(pooled).map(|(head, p)| head.forward(p)).collect()),
        };
        PmoeOutput { logits, dispatch }
    }

    /// Dense prediction (segmentation): each expert's final feature map, resized (bilinearly)
    /// to the finest expert grid, then the head at every position (concatenated maps for
    /// [`Combine::Dispatch`] and [`Combine::Concat`], the mean of per-expert heads for
    /// [`Combine::Mean`]). Upsample the logits to the label map.
    ///
    /// # Shapes
    /// - output logits: `[batch, num_classes, height, width]` (the finest grid)
    ///
    /// # Panics
    /// If an expert has no spatial grid ([`PromptableEncoder::feature_map`]), or there is not
    /// one input per expert.
    pub fn forward_dense(&self, inputs: &[E::Input]) -> PmoeDenseOutput<B> {
        let (outputs, dispatch) = self.run_experts(inputs);
        let maps: Vec<Tensor<B, 4>> = self
            .experts
            .iter()
            .zip(outputs)
            .enumerate()
            .map(|(k, (expert, out))| expert.feature_map(out.tokens, out.num_prompts).unwrap_or_else(|| panic!("expert {k} has no spatial grid for dense prediction")))
            .collect();
        let height = maps.iter().map(|m| m.dims()[2]).max().expect("at least one expert");
        let width = maps.iter().map(|m| m.dims()[3]).max().expect("at least one expert");
        let resized: Vec<Tensor<B, 4>> = maps
            .into_iter()
            .map(|m| {
                let [_, _, h, w] = m.dims();
                if (h, w) == (height, width) { m } else { interpolate(m, [height, width], InterpolateOptions::new(InterpolateMode::Bilinear)) }
            })
            .collect();
        let per_position = |head: &Linear<B>, map: Tensor<B, 4>| head.forward(map.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
        let logits = match self.combine() {
            Combine::Dispatch | Combine::Concat => per_position(&self.heads[0], Tensor::cat(resized, 1)),
            Combine::Mean => mean(self.heads.iter().zip(resized).map(|(head, m)| per_position(head, m)).collect()),
        };
        PmoeDenseOutput { logits, dispatch }
    }
}

fn mean<B: Backend, const D: usize>(parts: Vec<Tensor<B, D>>) -> Tensor<B, D> {
    let n = parts.len() as f64;
    parts.into_iter().reduce(|a, b| a + b).expect("at least one expert") / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Two slots, two sources: each sample's weights are the mean of its slots'.
    #[test]
    fn sample_weights_average_the_slots() {
        let weights = Tensor::<Flex, 3>::from_floats([[[1.0, 0.0], [0.5, 0.5]], [[0.2, 0.8], [0.4, 0.6]]], &Default::default());
        let dispatch = Dispatch { expert: 1, layer: 2, weights };
        let got = dispatch.sample_weights().into_data().to_vec::<f32>().unwrap();
        let expected = [0.75, 0.25, 0.3, 0.7];
        assert!(got.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-6), "{got:?}");
    }

    /// Own EPTs replace the previous layer's prompt outputs unread, and so does a dispatcher
    /// without the carried prompt among its sources; one that carries it reads them. Nothing is
    /// replaced below the first prompted layer.
    #[test]
    fn prompt_outputs_are_unread_unless_a_dispatcher_carries_them() {
        let device = Default::default();
        let expert = || backbones::ViTConfig::new(16, 4, 16, 2, 32, 3).init::<Flex>(&device);
        // Three layers: depth 2 prompts layers 1 and 2.
        let cases = [
            (1, Combine::Mean, true, 2, [false, true, true]),
            (2, Combine::Dispatch, false, 2, [false, true, true]),
            // The first prompted layer's dispatcher has nothing to carry.
            (2, Combine::Dispatch, true, 2, [false, true, false]),
            (1, Combine::Mean, true, 1, [false, false, true]),
        ];
        for (experts, combine, carry, depth, expected) in cases {
            let model = PmoeConfig::new(3).with_combine(combine).with_carry(carry).with_depth(depth).with_prompt_len(2).init((0..experts).map(|_| expert()).collect(), &device);
            let run = ExpertRun {
                expert: 0,
                prompts: &model.prompts,
                dispatchers: model.dispatchers.first().map(Vec::as_slice),
                width_maps: &model.width_maps,
                first_layer: model.first_layers[0],
                prefix: 1,
                carried_len: 0,
                dispatch: Vec::new(),
            };
            assert_eq!([0, 1, 2].map(|l| run.replaces_unread(l)), expected, "{experts} experts, {combine:?}, carry {carry}, depth {depth}");
        }
    }
}
