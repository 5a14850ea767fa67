//! Routing regularizers and statistics.
//!
//! - [`importance_loss`]: squared coefficient of variation of per-expert importance (Shazeer et al.
//!   2017), with the dead zone of the official MoPE code: values at or below a threshold count as 0.
//! - [`RoutingStats`]: per-expert share, top-1 share and entropy, for logging.

use burn::tensor::{Tensor, backend::Backend};

/// Importance loss of one routed layer: `CV²(Σ_batch weights)`, zeroed when `≤ threshold`.
///
/// `CV² = (std(imp) / mean(imp))²` with the unbiased standard deviation over experts, as the
/// official code. It is 0 for perfectly balanced usage and grows as usage concentrates. With a
/// single expert it is 0.
///
/// # Shapes
/// - `weights`: `[batch, num_experts]`; output `[1]`
pub fn importance_loss<B: Backend>(weights: Tensor<B, 2>, threshold: f64) -> Tensor<B, 1> {
    let [_, num_experts] = weights.dims();
    let device = weights.device();
    if num_experts < 2 {
        return Tensor::zeros([1], &device);
    }
    let importance = weights.sum_dim(0); // [1, num_experts]
    let mean = importance.clone().mean_dim(1); // [1, 1]
    let var = importance.var(1); // [1, 1], unbiased
    let cv2 = (var / mean.powi_scalar(2)).reshape([1]);
    let active = cv2.clone().greater_elem(threshold).float();
    cv2 * active
}

/// Routing statistics of one layer over a batch or an epoch, on the host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoutingStats {
    /// Mean routing weight of each expert (sums to 1).
    pub share: Vec<f32>,
    /// Fraction of instances whose largest weight is each expert (sums to 1).
    pub top1_share: Vec<f32>,
    /// Mean per-instance entropy of the weights, in nats (0: one expert; `ln E`: uniform).
    pub entropy: f32,
    /// Squared coefficient of variation of the summed weights (no threshold).
    pub cv2: f32,
    /// Number of instances these statistics cover.
    pub count: usize,
}

impl RoutingStats {
    /// Statistics of `weights`.
    ///
    /// # Shapes
    /// - `weights`: `[batch, num_experts]`
    pub fn of<B: Backend>(weights: &Tensor<B, 2>) -> Self {
        let [batch, num_experts] = weights.dims();
        let w: Vec<f32> = weights
            .to_data()
            .convert::<f32>()
            .to_vec()
            .expect("routing weights are floats");
        Self::from_rows(&w, batch, num_experts)
    }

    /// Statistics of `batch` rows of `num_experts` weights, row-major.
    pub fn from_rows(w: &[f32], batch: usize, num_experts: usize) -> Self {
        assert_eq!(w.len(), batch * num_experts, "expected {batch}x{num_experts} weights, got {}", w.len());
        let mut sum = vec![0f64; num_experts];
        let mut top1 = vec![0f64; num_experts];
        let mut entropy = 0f64;
        for row in w.chunks(num_experts) {
            let mut best = 0;
            for (e, &p) in row.iter().enumerate() {
                sum[e] += p as f64;
                if p > row[best] {
                    best = e;
                }
                if p > 0.0 {
                    entropy -= p as f64 * (p as f64).ln();
                }
            }
            top1[best] += 1.0;
        }
        let n = batch.max(1) as f64;
        let mean = sum.iter().sum::<f64>() / num_experts as f64;
        let cv2 = if num_experts > 1 && mean > 0.0 {
            let var = sum.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (num_experts - 1) as f64;
            var / (mean * mean)
        } else {
            0.0
        };
        Self {
            share: sum.iter().map(|s| (s / n) as f32).collect(),
            top1_share: top1.iter().map(|c| (c / n) as f32).collect(),
            entropy: (entropy / n) as f32,
            cv2: cv2 as f32,
            count: batch,
        }
    }

    /// Merges statistics of two disjoint sets of instances.
    pub fn merge(&self, other: &Self) -> Self {
        assert_eq!(self.share.len(), other.share.len(), "merging statistics of different expert counts");
        let n = (self.count + other.count).max(1) as f32;
        let (a, b) = (self.count as f32 / n, other.count as f32 / n);
        let mix = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(x, y)| a * x + b * y).collect::<Vec<_>>();
        let share = mix(&self.share, &other.share);
        let e = share.len();
        let mean = 1.0 / e as f32;
        let cv2 = if e > 1 {
            share.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / (e - 1) as f32 / (mean * mean)
        } else {
            0.0
        };
        Self {
            top1_share: mix(&self.top1_share, &other.top1_share),
            share,
            entropy: a * self.entropy + b * other.entropy,
            cv2,
            count: self.count + other.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Flex;

    fn weights(rows: &[[f32; 3]]) -> Tensor<B, 2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(burn::tensor::TensorData::new(flat, [rows.len(), 3]), &Default::default())
    }

    fn scalar(t: Tensor<B, 1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn importance_is_zero_for_uniform_usage() {
        let w = weights(&[[1.0 / 3.0; 3], [1.0 / 3.0; 3]]);
        assert!(scalar(importance_loss(w.clone(), 0.0)).abs() < 1e-7);
        // Balanced by column even though each row is one-hot.
        let w = weights(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert!(scalar(importance_loss(w, 0.0)).abs() < 1e-7);
    }

    #[test]
    fn importance_matches_hand_computed_cv2() {
        // Importance = [1.5, 0.5, 0.0]; mean 2/3; unbiased var = ((5/6)² + (1/6)² + (2/3)²) / 2 = 7/12.
        // CV² = (7/12) / (4/9) = 21/16 = 1.3125.
        let w = weights(&[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]);
        assert!((scalar(importance_loss(w.clone(), 0.0)) - 1.3125).abs() < 1e-5);
        assert!((scalar(importance_loss(w.clone(), 1.3)) - 1.3125).abs() < 1e-5, "above the threshold: kept");
        assert_eq!(scalar(importance_loss(w, 1.4)), 0.0, "at or below the threshold: zeroed");
        let stats = RoutingStats::of(&weights(&[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]));
        assert!((stats.cv2 - 1.3125).abs() < 1e-5);
    }

    #[test]
    fn importance_loss_has_gradients_toward_balance() {
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let logits = Tensor::<AB, 2>::from_floats([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]], &device).require_grad();
        let w = burn::tensor::activation::softmax(logits.clone(), 1);
        let grads = importance_loss(w, 0.0).backward();
        let g: Vec<f32> = logits.grad(&grads).unwrap().to_data().to_vec().unwrap();
        assert!(g[0] > 0.0 && g[1] < 0.0, "descent lowers the over-used expert's logit: {g:?}");
    }

    #[test]
    fn stats_report_share_top1_and_entropy() {
        let stats = RoutingStats::of(&weights(&[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]));
        assert_eq!(stats.count, 2);
        assert_eq!(stats.share, vec![0.25, 0.25, 0.5]);
        assert_eq!(stats.top1_share, vec![0.5, 0.0, 0.5]);
        assert!((stats.entropy - (2f32.ln() / 2.0)).abs() < 1e-6);
        let merged = stats.merge(&RoutingStats::of(&weights(&[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])));
        assert_eq!(merged.count, 4);
        assert_eq!(merged.share, vec![0.625, 0.125, 0.25]);
        assert_eq!(merged.top1_share, vec![0.75, 0.0, 0.25]);
    }
}
