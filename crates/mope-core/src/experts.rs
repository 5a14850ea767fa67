//! Prompt experts: `num_experts` candidate prompts of one layer, mixed per instance by routing weights.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, backend::Backend};
use ops::{RoutingMixture, RoutingSoftmax, softmax_mix};

/// Configuration of [`PromptExperts`].
#[derive(Config, Debug)]
pub struct PromptExpertsConfig {
    /// Number of experts `E`.
    pub num_experts: usize,
    /// Tokens per expert prompt `L`.
    pub prompt_len: usize,
    /// Token width `D`.
    pub d_model: usize,
    /// Half-width of the uniform initialisation; `None` uses VPT's `sqrt(6 / (3·4² + D))`,
    /// the value of the official MoPE code for Swin's 4×4 patches.
    #[config(default = "None")]
    pub init_range: Option<f64>,
}

/// `E` prompt experts of `L` tokens each.
#[derive(Module, Debug)]
pub struct PromptExperts<B: Backend> {
    /// Expert prompts. Shape `[num_experts, prompt_len, d_model]`.
    pub experts: Param<Tensor<B, 3>>,
}

/// VPT's uniform prompt initialisation range for a patch size and token width.
pub fn vpt_init_range(patch_size: usize, d_model: usize) -> f64 {
    (6.0 / (3.0 * (patch_size * patch_size) as f64 + d_model as f64)).sqrt()
}

impl PromptExpertsConfig {
    /// Initialises the experts on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptExperts<B> {
        assert!(self.num_experts > 0, "num_experts must be at least 1");
        assert!(self.prompt_len > 0, "prompt_len must be at least 1");
        let range = self
            .init_range
            .unwrap_or_else(|| vpt_init_range(4, self.d_model));
        let init = Initializer::Uniform {
            min: -range,
            max: range,
        };
        PromptExperts {
            experts: init.init([self.num_experts, self.prompt_len, self.d_model], device),
        }
    }
}

impl<B: Backend> PromptExperts<B> {
    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.experts.dims()[0]
    }

    /// Tokens per expert `L`.
    pub fn prompt_len(&self) -> usize {
        self.experts.dims()[1]
    }

    /// Mixes the experts per instance: `out[b] = Σ_e softmax(logits[b])[e] · experts[e]` (softmax
    /// as `softmax` says), one fused operation on backends with a kernel for it
    /// ([`ops::routing_mixture`]).
    ///
    /// # Shapes
    /// - `logits`: `[batch, num_experts]`
    /// - output: `[batch, prompt_len, d_model]`
    ///
    /// # Panics
    /// If `logits` does not have `num_experts` columns.
    pub fn mix_routed(&self, logits: Tensor<B, 2>, softmax: RoutingSoftmax) -> Tensor<B, 3>
    where
        B: RoutingMixture,
    {
        let num_experts = self.num_experts();
        let n = logits.dims()[1];
        assert_eq!(n, num_experts, "routing logits have {n} experts per row, the prompt experts have {num_experts}");
        softmax_mix(logits.unsqueeze_dim(1), self.experts.val(), None, softmax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Tolerance, TensorData};

    type B = Flex;

    #[test]
    fn mixture_equals_manual_weighted_sum() {
        let device = Default::default();
        let experts = PromptExpertsConfig::new(3, 2, 4).init::<B>(&device);
        let weights = Tensor::<B, 2>::from_floats([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], &device);
        // Logits whose softmax is `weights` (ln 0 = −∞ drops an expert).
        let mixed = experts.mix_routed(weights.clone().log(), RoutingSoftmax::DENSE);
        assert_eq!(mixed.dims(), [2, 2, 4]);

        let e: Vec<f32> = experts.experts.val().to_data().to_vec().unwrap();
        let w: Vec<f32> = weights.to_data().to_vec().unwrap();
        let mut expected = vec![0f32; 2 * 2 * 4];
        for b in 0..2 {
            for j in 0..8 {
                expected[b * 8 + j] = (0..3).map(|k| w[b * 3 + k] * e[k * 8 + j]).sum();
            }
        }
        mixed
            .to_data()
            .assert_approx_eq::<f32>(&TensorData::new(expected, [2, 2, 4]), Tolerance::default());
    }

    #[test]
    fn init_respects_range() {
        let device = Default::default();
        let experts = PromptExpertsConfig::new(4, 6, 128).init::<B>(&device);
        let range = vpt_init_range(4, 128) as f32;
        assert!((range - 0.185).abs() < 1e-3, "VPT range for Swin-B is about 0.185, got {range}");
        let values: Vec<f32> = experts.experts.val().to_data().to_vec().unwrap();
        assert!(values.iter().all(|v| v.abs() <= range));
        assert!(values.iter().any(|v| v.abs() > range / 2.0), "values must spread over the range");
    }

    #[test]
    #[should_panic(expected = "routing logits have 2 experts per row, the prompt experts have 3")]
    fn wrong_expert_count_names_both_dims() {
        let device = Default::default();
        let experts = PromptExpertsConfig::new(3, 2, 4).init::<B>(&device);
        experts.mix_routed(Tensor::<B, 2>::ones([1, 2], &device), RoutingSoftmax::DENSE);
    }
}
