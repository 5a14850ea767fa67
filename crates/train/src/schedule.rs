//! Learning-rate schedules, as functions of the optimisation step:
//!
//! - [`Schedule::WarmupCosine`]: linear warm-up from 0 to the base rate, then cosine decay to
//!   `min_ratio ×` the base rate at the last step;
//! - [`Schedule::MultiStep`]: the official MoPE code's `MultiStepLR` (× `gamma` at each milestone
//!   epoch; milestones 3 and 6, γ = 0.4, over 10 epochs);
//! - [`Schedule::Constant`].

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up over `warmup_steps`, then cosine decay to `min_ratio` of the base rate.
    WarmupCosine {
        /// Steps of linear warm-up.
        warmup_steps: usize,
        /// Final rate over base rate.
        min_ratio: f64,
    },
    /// Multiply by `gamma` at the start of each milestone epoch.
    MultiStep {
        /// Epochs at which the rate drops.
        milestones: Vec<usize>,
        /// Factor of each drop.
        gamma: f64,
    },
}

impl Schedule {
    /// The official code's schedule: × 0.4 at epochs 3 and 6.
    pub fn official() -> Self {
        Self::MultiStep { milestones: vec![3, 6], gamma: 0.4 }
    }

    /// The rate at `step` (0-based) of `total_steps`, with `steps_per_epoch` steps an epoch.
    pub fn rate(&self, base: f64, step: usize, total_steps: usize, steps_per_epoch: usize) -> f64 {
        match self {
            Self::Constant => base,
            Self::WarmupCosine { warmup_steps, min_ratio } => {
                if step < *warmup_steps {
                    return base * (step + 1) as f64 / *warmup_steps as f64;
                }
                let decay_steps = total_steps.saturating_sub(*warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * (min_ratio + (1.0 - min_ratio) * cosine)
            }
            Self::MultiStep { milestones, gamma } => {
                let epoch = step / steps_per_epoch.max(1);
                base * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule::WarmupCosine { warmup_steps: 4, min_ratio: 0.1 };
        assert!(close(s.rate(1.0, 0, 104, 10), 0.25));
        assert!(close(s.rate(1.0, 3, 104, 10), 1.0), "warm-up ends at the base rate");
        assert!(close(s.rate(1.0, 4, 104, 10), 1.0), "cosine starts at the top");
        assert!(close(s.rate(1.0, 54, 104, 10), 0.55), "halfway: min + (1 − min) / 2");
        assert!(close(s.rate(1.0, 104, 104, 10), 0.1));
    }

    #[test]
    fn official_multistep_drops_at_epochs_3_and_6() {
        let s = Schedule::official();
        let rates: Vec<f64> = (0..10).map(|epoch| s.rate(4e-4, epoch * 5, 50, 5)).collect();
        let expected = [4e-4, 4e-4, 4e-4, 1.6e-4, 1.6e-4, 1.6e-4, 6.4e-5, 6.4e-5, 6.4e-5, 6.4e-5];
        assert!(rates.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-15), "{rates:?}");
    }

    #[test]
    fn reads_from_toml_like_json_and_refuses_unknown_keys() {
        let s: Schedule = serde_json::from_str(r#"{"kind": "warmup-cosine", "warmup_steps": 10, "min_ratio": 0.0}"#).unwrap();
        assert_eq!(s, Schedule::WarmupCosine { warmup_steps: 10, min_ratio: 0.0 });
        let err = serde_json::from_str::<Schedule>(r#"{"kind": "multi-step", "milestones": [3], "gama": 0.4}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `gama`"), "{err}");
    }
}
