//! The multimodal router of MoPE: per-instance expert weights from the main encoder's hidden
//! state and the complementary modality's representation (the *multimodal pairing prior*).
//!
//! ```text
//! q      = [ W_self · mean_tokens(x) ; W_cross · y ]       [batch, d_inter + d_cross]
//! logits = q · K / temperature (+ noise)                    [batch, num_experts]
//! r      = softmax(logits)  (over the top-k experts only, if top_k is set)
//! ```
//! `K` (`[d_inter + d_cross, num_experts]`) are the routing keys: orthogonal and frozen, as in the
//! official code, drawn from `key_seed` so that they need not be saved with an adapter.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use ops::{RoutingSoftmax, routing_weights};

use crate::orthogonal::orthogonal;

/// The options of a router that do not depend on the encoders it connects (shared by all
/// layers in [`MopePromptsConfig`](crate::MopePromptsConfig)).
#[derive(Config, Debug)]
pub struct RouterSettings {
    /// Width of the projection of the main hidden state (official `d_inter`); 0 routes on `y` alone,
    /// as the older text-only router of the official code.
    #[config(default = 2)]
    pub d_inter: usize,
    /// Width of the projection of the complementary representation (official `d_cross`).
    #[config(default = 8)]
    pub d_cross: usize,
    /// Softmax temperature; logits are divided by it.
    #[config(default = 0.1)]
    pub temperature: f64,
    /// Standard deviation of the Gaussian noise added to the logits while training (0 disables).
    #[config(default = 0.00390625)]
    pub noise_std: f64,
    /// Also add the noise at evaluation time, as the official code does (off by default:
    /// predictions are then deterministic).
    #[config(default = false)]
    pub noise_at_eval: bool,
    /// Keep only the `k` largest logits per instance (sparse routing); `None` is dense routing.
    #[config(default = "None")]
    pub top_k: Option<usize>,
    /// Train the routing keys instead of freezing them.
    #[config(default = false)]
    pub train_keys: bool,
    /// Seed of the orthogonal routing keys.
    #[config(default = 0)]
    pub key_seed: u64,
}

/// Configuration of a [`Router`].
#[derive(Config, Debug)]
pub struct RouterConfig {
    /// Number of experts `E`.
    pub num_experts: usize,
    /// Width of the main encoder's hidden states.
    pub d_model: usize,
    /// Width of the complementary representation `y`.
    pub d_complementary: usize,
    /// Everything else.
    #[config(default = "RouterSettings::new()")]
    pub settings: RouterSettings,
}

/// Routes instances to prompt experts.
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// Projection of the mean hidden state, `d_model → d_inter` (absent when `d_inter = 0`).
    pub self_proj: Option<Linear<B>>,
    /// Projection of the complementary representation, `d_complementary → d_cross`.
    pub cross_proj: Option<Linear<B>>,
    /// Routing keys. Shape `[d_inter + d_cross, num_experts]`.
    pub keys: Param<Tensor<B, 2>>,
    temperature: f64,
    noise_std: f64,
    noise_at_eval: bool,
    top_k: usize,
}

/// What a router decided for one batch.
#[derive(Debug, Clone)]
pub struct RoutingOutput<B: Backend> {
    /// Logits after temperature and noise, before softmax. Shape `[batch, num_experts]`.
    pub logits: Tensor<B, 2>,
    /// Expert weights, `softmax(top_k(logits))`; each row sums to 1. Shape `[batch, num_experts]`.
    pub weights: Tensor<B, 2>,
    /// How `logits` become `weights`, for the fused mixture ([`crate::PromptExperts::mix_routed`]).
    pub softmax: RoutingSoftmax,
}

impl RouterConfig {
    /// Initialises the router on `device`.
    ///
    /// # Panics
    /// If `num_experts` is 0, `d_inter + d_cross` is 0, `top_k` is not in `1..=num_experts`, or the
    /// temperature is not positive.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Router<B> {
        let s = &self.settings;
        assert!(self.num_experts > 0, "a router needs at least one expert");
        let d_key = s.d_inter + s.d_cross;
        assert!(d_key > 0, "d_inter + d_cross must be positive");
        assert!(s.temperature > 0.0, "temperature must be positive, got {}", s.temperature);
        if let Some(k) = s.top_k {
            assert!(
                (1..=self.num_experts).contains(&k),
                "top_k = {k} must be in 1..={}",
                self.num_experts
            );
        }
        let keys = Tensor::<B, 2>::from_data(
            TensorData::new(orthogonal(d_key, self.num_experts, s.key_seed), [d_key, self.num_experts]),
            device,
        );
        let keys = if s.train_keys {
            Param::from_tensor(keys)
        } else {
            Param::initialized(ParamId::new(), keys)
        };
        Router {
            self_proj: (s.d_inter > 0).then(|| LinearConfig::new(self.d_model, s.d_inter).init(device)),
            cross_proj: (s.d_cross > 0).then(|| LinearConfig::new(self.d_complementary, s.d_cross).init(device)),
            keys,
            temperature: s.temperature,
            noise_std: s.noise_std,
            noise_at_eval: s.noise_at_eval,
            top_k: s.top_k.unwrap_or(0),
        }
    }
}

impl<B: Backend> Router<B> {
    /// Number of experts routed to.
    pub fn num_experts(&self) -> usize {
        self.keys.dims()[1]
    }

    /// Routes a batch.
    ///
    /// # Shapes
    /// - `main_pooled`: `[batch, d_model]`, the mean of the layer's input tokens
    /// - `complementary`: `[batch, d_complementary]`
    /// - output weights and logits: `[batch, num_experts]`
    pub fn forward(&self, main_pooled: Tensor<B, 2>, complementary: Tensor<B, 2>) -> RoutingOutput<B> {
        let mut parts = Vec::with_capacity(2);
        if let Some(proj) = &self.self_proj {
            parts.push(proj.forward(main_pooled));
        }
        if let Some(proj) = &self.cross_proj {
            parts.push(proj.forward(complementary));
        }
        let query = Tensor::cat(parts, 1); // [batch, d_inter + d_cross]
        let mut logits = query.matmul(self.keys.val()) / self.temperature;
        let device = logits.device();
        let training = B::ad_enabled(&device);
        if self.noise_std > 0.0 && (training || self.noise_at_eval) {
            logits = logits.clone() + logits.random_like(Distribution::Normal(0.0, self.noise_std));
        }
        // The temperature is applied before the noise, as in the official code; the mixture's
        // softmax then runs at temperature 1 over these logits.
        let softmax = RoutingSoftmax { temperature: 1.0, top_k: self.top_k };
        let weights = routing_weights(logits.clone().unsqueeze_dim(1), softmax).squeeze_dim(1);
        RoutingOutput { logits, weights, softmax }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Tolerance;

    type B = Flex;

    fn inputs() -> (Tensor<B, 2>, Tensor<B, 2>) {
        let device = &Default::default();
        (
            Tensor::random([5, 16], Distribution::Normal(0.0, 1.0), device),
            Tensor::random([5, 12], Distribution::Normal(0.0, 1.0), device),
        )
    }

    #[test]
    fn weights_are_distributions_over_experts() {
        let device = Default::default();
        let router = RouterConfig::new(4, 16, 12).init::<B>(&device);
        let (x, y) = inputs();
        let out = router.forward(x, y);
        assert_eq!(out.weights.dims(), [5, 4]);
        assert_eq!(out.logits.dims(), [5, 4]);
        out.weights
            .clone()
            .sum_dim(1)
            .to_data()
            .assert_approx_eq::<f32>(&Tensor::<B, 2>::ones([5, 1], &device).to_data(), Tolerance::default());
        let w: Vec<f32> = out.weights.to_data().to_vec().unwrap();
        assert!(w.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn logits_are_query_times_keys_over_temperature() {
        let device = Default::default();
        let router = RouterConfig::new(3, 16, 12).with_settings(RouterSettings::new().with_temperature(0.5)).init::<B>(&device);
        let (x, y) = inputs();
        let out = router.forward(x.clone(), y.clone());
        let q = Tensor::cat(
            vec![
                router.self_proj.as_ref().unwrap().forward(x),
                router.cross_proj.as_ref().unwrap().forward(y),
            ],
            1,
        );
        let expected = q.matmul(router.keys.val()) * 2.0;
        out.logits.to_data().assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
    }

    #[test]
    fn top_k_keeps_exactly_k_experts() {
        let device = Default::default();
        let router = RouterConfig::new(6, 16, 12)
            .with_settings(RouterSettings::new().with_d_inter(4).with_top_k(Some(2)))
            .init::<B>(&device);
        let (x, y) = inputs();
        let out = router.forward(x, y);
        let w: Vec<f32> = out.weights.to_data().to_vec().unwrap();
        let logits: Vec<f32> = out.logits.to_data().to_vec().unwrap();
        for b in 0..5 {
            let row = &w[b * 6..(b + 1) * 6];
            assert_eq!(row.iter().filter(|v| **v > 0.0).count(), 2, "row {b}: {row:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            // The kept experts are the two largest logits.
            let mut order: Vec<usize> = (0..6).collect();
            order.sort_by(|i, j| logits[b * 6 + j].total_cmp(&logits[b * 6 + i]));
            assert!(row[order[0]] > 0.0 && row[order[1]] > 0.0);
        }
    }

    #[test]
    fn noise_only_while_training_unless_asked() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let settings = RouterSettings::new().with_noise_std(0.5);
        let cfg = RouterConfig::new(4, 16, 12).with_settings(settings.clone());
        let eval_router = cfg.init::<B>(&device);
        let (x, y) = inputs();
        let a = eval_router.forward(x.clone(), y.clone()).logits;
        let b = eval_router.forward(x.clone(), y.clone()).logits;
        a.to_data().assert_eq(&b.to_data(), true);

        let noisy_eval = cfg.clone().with_settings(settings.with_noise_at_eval(true)).init::<B>(&device);
        let a = noisy_eval.forward(x.clone(), y.clone()).logits;
        let b = noisy_eval.forward(x.clone(), y.clone()).logits;
        assert_ne!(a.to_data().to_vec::<f32>().unwrap(), b.to_data().to_vec::<f32>().unwrap());

        let train_router = cfg.init::<AB>(&device);
        let xa = Tensor::<AB, 2>::from_data(x.to_data(), &device);
        let ya = Tensor::<AB, 2>::from_data(y.to_data(), &device);
        let a = train_router.forward(xa.clone(), ya.clone()).logits;
        let b = train_router.forward(xa, ya).logits;
        assert_ne!(a.to_data().to_vec::<f32>().unwrap(), b.to_data().to_vec::<f32>().unwrap());
    }

    #[test]
    fn keys_are_frozen_by_default_and_reproducible() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let r1 = RouterConfig::new(4, 16, 12).init::<AB>(&device);
        let r2 = RouterConfig::new(4, 16, 12).init::<AB>(&device);
        assert!(!r1.keys.val().is_require_grad());
        assert!(r1.cross_proj.as_ref().unwrap().weight.val().is_require_grad());
        r1.keys.val().to_data().assert_eq(&r2.keys.val().to_data(), true);
        let trained = RouterConfig::new(4, 16, 12).with_settings(RouterSettings::new().with_train_keys(true)).init::<AB>(&device);
        assert!(trained.keys.val().is_require_grad());
    }
}
