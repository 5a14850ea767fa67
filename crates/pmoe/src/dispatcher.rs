//! The dynamic token dispatcher of one expert at one prompted layer: it builds the prompt tokens
//! that expert consumes from the expert-specific prompt tokens (EPTs) of *every* expert and from
//! the prompts the expert carried out of its previous prompted layer, with weights read from the
//! expert's own current tokens.
//!
//! For target expert `k`, slot `i` of `N_p`, and sources `j` (the `K` experts' EPTs, then the
//! carried prompt when there is one):
//!
//! ```text
//! r        = standardise([mean of k's patch tokens ; mean of k's carried prompt tokens])
//! w[i, ·]  = softmax(gate(r)[i, ·] / τ)                   (a distribution over the sources)
//! P̂_k[i]  = Σ_{j<K} w[i, j] · proj_{j→k}(EPT_j[i]) + w[i, K] · carried_k[i]
//! ```
//!
//! The dispatcher receives the EPTs already in `k`'s width: `proj_{j→k}` is the identity where the
//! two experts have the same width (the paper's setting: ViT-B experts, all 768 wide) and a
//! learned linear map shared by the layers where they do not ([`crate::width_maps`]). The gate starts at
//! zero, so every slot starts as the plain mean of its sources. With a single source (one expert,
//! nothing carried) the weight is exactly 1 and the dispatcher hands the expert its own EPTs:
//! deep prompt tuning. The mixture is [`ops::routing_mixture`]'s softmax-mixture with one routing
//! group per slot (one CubeCL kernel on `wgpu`/`cuda`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use ops::{RoutingMixture, RoutingSoftmax, masked_mean, routing_weights, softmax_mix};

/// Configuration of a [`TokenDispatcher`].
#[derive(Config, Debug)]
pub struct TokenDispatcherConfig {
    /// Token width of every expert at this step, in expert order.
    pub widths: Vec<usize>,
    /// Which expert this dispatcher feeds.
    pub target: usize,
    /// Prompt tokens per expert `N_p`.
    pub prompt_len: usize,
    /// Whether the carried prompt (the target's prompt outputs of its previous prompted layer) is
    /// a source.
    pub carry: bool,
    /// Softmax temperature `τ`.
    #[config(default = 1.0)]
    pub temperature: f64,
}

/// Dispatches prompt tokens to one expert at one prompted layer.
#[derive(Module, Debug)]
pub struct TokenDispatcher<B: Backend> {
    /// Gate: standardised `[patch mean ; carried mean]` to one logit per slot and source.
    pub gate: Linear<B>,
    prompt_len: usize,
    num_experts: usize,
    num_sources: usize,
    carry: bool,
    temperature: f64,
}

/// What a dispatcher decided for a batch.
#[derive(Debug, Clone)]
pub struct DispatchOutput<B: Backend> {
    /// Prompt tokens for the target expert. Shape `[batch, prompt_len, width]`.
    pub prompts: Tensor<B, 3>,
    /// Weight of each source for each slot; every row sums to 1. Sources: the experts' EPTs in
    /// expert order, then the carried prompt when there is one.
    ///
    /// Shape `[batch, prompt_len, num_sources]`.
    pub weights: Tensor<B, 3>,
}

impl TokenDispatcherConfig {
    /// Number of sources: one per expert, plus the carried prompt.
    pub fn num_sources(&self) -> usize {
        self.widths.len() + usize::from(self.carry)
    }

    /// Initialises the dispatcher on `device`.
    ///
    /// # Panics
    /// If there is no expert, `target` is out of range, `prompt_len` is 0 or the temperature is
    /// not positive.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenDispatcher<B> {
        assert!(!self.widths.is_empty(), "a dispatcher needs at least one expert");
        assert!(self.target < self.widths.len(), "target expert {} out of range 0..{}", self.target, self.widths.len());
        assert!(self.prompt_len > 0, "prompt_len must be at least 1");
        assert!(self.temperature > 0.0, "temperature must be positive, got {}", self.temperature);
        let width = self.widths[self.target];
        let num_sources = self.num_sources();
        TokenDispatcher {
            gate: LinearConfig::new(2 * width, self.prompt_len * num_sources).with_initializer(Initializer::Zeros).init(device),
            prompt_len: self.prompt_len,
            num_experts: self.widths.len(),
            num_sources,
            carry: self.carry,
            temperature: self.temperature,
        }
    }
}

/// Zero mean and unit variance over the last dimension (no learned affine): the gate reads
/// hidden states whose scale differs by layer and by expert.
///
/// # Shapes
/// - `x`: `[batch, d]`; output `[batch, d]`
fn standardise<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let centred = x.clone() - x.mean_dim(1);
    let std = centred.clone().powi_scalar(2).mean_dim(1).add_scalar(1e-5).sqrt();
    centred / std
}

impl<B: Backend> TokenDispatcher<B> {
    /// Number of sources the weights are over.
    pub fn num_sources(&self) -> usize {
        self.num_sources
    }
}

impl<B: RoutingMixture> TokenDispatcher<B> {
    /// Builds the target expert's prompt tokens.
    ///
    /// # Shapes
    /// - `epts[j]`: `[prompt_len, width]`, one per expert, in the target's width
    /// - `carried`: `[batch, prompt_len, width]`, given exactly when the dispatcher carries
    /// - `patches`: `[batch, n, width]` (the target's current non-prompt, non-prefix tokens),
    ///   `mask_pad`: `[batch, n]`
    /// - output prompts `[batch, prompt_len, width]`, weights `[batch, prompt_len, num_sources]`
    ///
    /// # Panics
    /// If the number of EPTs, a shape, or whether a carried prompt is given does not match the
    /// configuration.
    pub fn forward(
        &self,
        epts: &[Tensor<B, 2>],
        carried: Option<Tensor<B, 3>>,
        patches: Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
    ) -> DispatchOutput<B> {
        assert_eq!(epts.len(), self.num_experts, "{} EPT sets for a dispatcher over {} experts", epts.len(), self.num_experts);
        match (self.carry, carried.is_some()) {
            (true, false) => panic!("this dispatcher mixes in the carried prompt, and none was given"),
            (false, true) => panic!("this dispatcher has no carried source, and a carried prompt was given"),
            _ => {}
        }
        let [batch, _, width] = patches.dims();
        let (len, sources) = (self.prompt_len, self.num_sources);
        let patch_mean = masked_mean(patches.clone(), mask_pad);
        let carried_mean = match &carried {
            Some(c) => c.clone().mean_dim(1).squeeze_dim(1),
            None => Tensor::zeros([batch, width], &patches.device()),
        };
        let logits = self.gate.forward(standardise(Tensor::cat(vec![patch_mean, carried_mean], 1))).reshape([batch, len, sources]);
        let softmax = RoutingSoftmax::new(self.temperature, None);
        let weights = routing_weights(logits.clone(), softmax);

        let shared: Vec<Tensor<B, 3>> = epts
            .iter()
            .map(|ept| {
                let [p_len, ept_width] = ept.dims();
                assert_eq!((p_len, ept_width), (len, width), "EPTs are {p_len}×{ept_width}, the dispatcher takes {len}×{width}");
                ept.clone().unsqueeze_dim::<3>(0) // [1, len, width]
            })
            .collect();
        // One routing group per prompt slot; the carried prompt is the own (per-instance) source.
        let prompts = softmax_mix(logits, Tensor::cat(shared, 0), carried, softmax);
        DispatchOutput { prompts, weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tolerance};
    use burn::backend::Flex;

    type B = Flex;

    fn random(shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn randomised(mut d: TokenDispatcher<B>) -> TokenDispatcher<B> {
        let [i, o] = d.gate.weight.dims();
        d.gate.weight = Param::from_tensor(random([i, o]));
        d
    }

    #[test]
    fn weights_are_a_distribution_over_sources_and_the_mixture_follows_them() {
        let device = Default::default();
        let d = randomised(TokenDispatcherConfig::new(vec![4, 6], 0, 3, true).with_temperature(0.5).init::<B>(&device));
        let epts = [random([3, 4]), random([3, 4])];
        let carried = Tensor::<B, 3>::random([2, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let patches = Tensor::<B, 3>::random([2, 5, 4], Distribution::Normal(0.0, 3.0), &device);
        let out = d.forward(&epts, Some(carried.clone()), patches, None);
        assert_eq!(out.prompts.dims(), [2, 3, 4]);
        assert_eq!(out.weights.dims(), [2, 3, 3]);
        let w = out.weights.to_data().to_vec::<f32>().unwrap();
        assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
        for row in w.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "row {row:?}");
        }
        // Slot by slot, by hand: w0·EPT_0 + w1·EPT_1 (already in expert 0's width) + w2·carried.
        let projected = epts[1].to_data().to_vec::<f32>().unwrap();
        let (e0, c) = (epts[0].to_data().to_vec::<f32>().unwrap(), carried.to_data().to_vec::<f32>().unwrap());
        let got = out.prompts.to_data().to_vec::<f32>().unwrap();
        for b in 0..2 {
            for i in 0..3 {
                let row = &w[(b * 3 + i) * 3..][..3];
                for f in 0..4 {
                    let expected = row[0] * e0[i * 4 + f] + row[1] * projected[i * 4 + f] + row[2] * c[(b * 3 + i) * 4 + f];
                    assert!((got[(b * 3 + i) * 4 + f] - expected).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "mixes in the carried prompt, and none was given")]
    fn a_carrying_dispatcher_needs_the_carried_prompt() {
        let d = TokenDispatcherConfig::new(vec![4], 0, 2, true).init::<B>(&Default::default());
        d.forward(&[random([2, 4])], None, Tensor::random([1, 3, 4], Distribution::Default, &Default::default()), None);
    }

    #[test]
    #[should_panic(expected = "EPTs are 2×8, the dispatcher takes 2×4")]
    fn epts_must_arrive_in_the_targets_width() {
        let d = TokenDispatcherConfig::new(vec![4, 8], 0, 2, false).init::<B>(&Default::default());
        assert_eq!(d.num_sources(), 2);
        d.forward(&[random([2, 4]), random([2, 8])], None, Tensor::random([1, 3, 4], Distribution::Default, &Default::default()), None);
    }

    #[test]
    fn zero_gate_starts_at_the_mean_of_the_sources() {
        let device = Default::default();
        let d = TokenDispatcherConfig::new(vec![4, 4], 0, 2, true).init::<B>(&device);
        let epts = [random([2, 4]), random([2, 4])];
        let carried = Tensor::<B, 3>::random([1, 2, 4], Distribution::Default, &device);
        let out = d.forward(&epts, Some(carried.clone()), Tensor::random([1, 3, 4], Distribution::Default, &device), None);
        let mean = (epts[0].clone().unsqueeze_dim::<3>(0) + epts[1].clone().unsqueeze_dim(0) + carried) / 3.0;
        out.prompts.to_data().assert_approx_eq::<f32>(&mean.to_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn a_single_source_passes_the_experts_own_prompts_through() {
        let device = Default::default();
        let d = randomised(TokenDispatcherConfig::new(vec![4], 0, 3, false).init::<B>(&device));
        let ept = random([3, 4]);
        let out = d.forward(std::slice::from_ref(&ept), None, Tensor::random([2, 5, 4], Distribution::Default, &device), None);
        out.weights.to_data().assert_eq(&Tensor::<B, 3>::ones([2, 3, 1], &device).to_data(), true);
        out.prompts.to_data().assert_eq(&ept.unsqueeze_dim::<3>(0).repeat_dim(0, 2).to_data(), true);
    }
}
