//! The class probabilities a run gives each sample (classification tasks): on validation at its
//! best epoch (`val_predictions.json` in the run directory) and on test with the best adapter
//! (`test_predictions.json`; a dataset without a test split tests on validation, and that file
//! is `val_predictions.json` again), and the mean of several runs' probabilities:
//! the mean-of-experts baseline computed from the single experts' own runs, which trains nothing
//! of its own.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::RunResult;
use crate::evaluation::argmax;

/// File name of a run's predictions on `split` (`val`: the best epoch's; `test`: the best
/// adapter's).
pub fn predictions_file(split: &str) -> String {
    format!("{split}_predictions.json")
}

/// Each sample's class probabilities on one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// Sample ids, in evaluation order.
    pub ids: Vec<String>,
    /// Each sample's true class.
    pub classes: Vec<usize>,
    /// Each sample's softmax probabilities, `[samples][classes]`.
    pub probabilities: Vec<Vec<f32>>,
}

impl Predictions {
    /// Adds one sample's class scores (logits; stored as probabilities).
    pub fn push(&mut self, id: &str, class: usize, scores: &[f32]) {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        self.ids.push(id.to_string());
        self.classes.push(class);
        self.probabilities.push(exp.into_iter().map(|e| e / sum).collect());
    }

    /// Mean cross-entropy of the true classes.
    pub fn loss(&self) -> f64 {
        let sum: f64 = self.probabilities.iter().zip(&self.classes).map(|(p, &c)| -(p[c].max(f32::MIN_POSITIVE) as f64).ln()).sum();
        sum / self.classes.len().max(1) as f64
    }

    /// Accuracy of the most probable class, in percent.
    pub fn accuracy(&self) -> f64 {
        let right = self.probabilities.iter().zip(&self.classes).filter(|(p, c)| argmax(p) == **c).count();
        100.0 * right as f64 / self.classes.len().max(1) as f64
    }

    /// The mean of several runs' probabilities, sample by sample.
    ///
    /// # Errors
    /// If the runs did not predict the same samples, in the same order, with the same classes.
    pub fn mean(parts: &[Predictions]) -> Result<Predictions> {
        let Some(first) = parts.first() else { bail!("no predictions to average") };
        for (i, part) in parts.iter().enumerate() {
            if part.ids != first.ids || part.classes != first.classes || part.probabilities.len() != first.ids.len() {
                bail!("predictions {i} cover other samples than predictions 0 ({} against {} samples)", part.ids.len(), first.ids.len());
            }
            let classes = first.probabilities.first().map_or(0, Vec::len);
            if let Some(row) = part.probabilities.iter().position(|p| p.len() != classes) {
                bail!("predictions {i}, sample {row}: {} class probabilities, predictions 0 have {classes}", part.probabilities[row].len());
            }
        }
        let n = parts.len() as f32;
        let probabilities = (0..first.ids.len())
            .map(|s| {
                let mut mean = vec![0.0; first.probabilities[s].len()];
                for part in parts {
                    for (m, p) in mean.iter_mut().zip(&part.probabilities[s]) {
                        *m += p / n;
                    }
                }
                mean
            })
            .collect();
        Ok(Predictions { ids: first.ids.clone(), classes: first.classes.clone(), probabilities })
    }

    /// Writes them as JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::durable::write_file(path, serde_json::to_string(self)?.as_bytes())
    }

    /// Reads them.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a predictions file", path.display()))
    }
}

/// The mean-of-experts baseline of one seed, from the single experts' runs of that seed (their
/// `result.json` and the directories holding their predictions): the mean of their
/// probabilities on validation and test. It trains nothing: its parameters, adapter, steps and
/// time are the sums of the runs it averages.
///
/// # Errors
/// If a run has no predictions file (it ran before they were written, or is not a
/// classification), or the runs predicted different samples.
pub fn mean_of_experts(name: &str, runs: &[(&RunResult, &Path)]) -> Result<RunResult> {
    let Some(&(first, _)) = runs.first() else { bail!("{name}: no single-expert runs to average") };
    let read = |split: &str| -> Result<Predictions> {
        let parts = runs.iter().map(|(_, dir)| Predictions::read(&dir.join(predictions_file(split)))).collect::<Result<Vec<_>>>()?;
        Predictions::mean(&parts)
    };
    let (val, test) = (read("val")?, read(&first.split)?);
    let sum = |f: fn(&RunResult) -> f64| runs.iter().map(|(r, _)| f(r)).sum::<f64>();
    let mut result = first.clone();
    result.name = name.to_string();
    result.method = "mean-of-experts".to_string();
    // The runs it averages, in place of encoders.
    result.encoders = [runs.iter().map(|(r, _)| r.name.as_str()).collect::<Vec<_>>().join(" + "), String::new()];
    result.paper = None;
    result.value = test.accuracy();
    result.best_val = val.accuracy();
    result.best_epoch = 0;
    result.trainable_params = runs.iter().map(|(r, _)| r.trainable_params).sum();
    result.total_params = runs.iter().map(|(r, _)| r.total_params).sum();
    result.adapter_bytes = runs.iter().map(|(r, _)| r.adapter_bytes).sum();
    result.epochs = runs.iter().map(|(r, _)| r.epochs).max().unwrap_or(0);
    result.steps = runs.iter().map(|(r, _)| r.steps).sum();
    result.train_seconds = sum(|r| r.train_seconds);
    result.wall_seconds = sum(|r| r.wall_seconds);
    result.report.loss = test.loss();
    result.report.importance_loss = 0.0;
    result.report.metrics = [(first.metric.clone(), result.value)].into();
    result.report.samples = test.ids.len();
    result.report.routing = Vec::new();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_of_two_runs_averages_probabilities_sample_by_sample() {
        let mut a = Predictions::default();
        let mut b = Predictions::default();
        // Sample x (class 0): a is sure of class 1 (softmax of [0, ln 3] = [0.25, 0.75]), b of
        // class 0 ([0.9, 0.1]): the mean [0.575, 0.425] picks class 0. Sample y (class 1): both right.
        a.push("x", 0, &[0.0, 3f32.ln()]);
        b.push("x", 0, &[9f32.ln(), 0.0]);
        a.push("y", 1, &[0.0, 1.0]);
        b.push("y", 1, &[0.0, 2.0]);
        assert!((a.probabilities[0][1] - 0.75).abs() < 1e-6 && (b.probabilities[0][0] - 0.9).abs() < 1e-6);
        assert_eq!((a.accuracy(), b.accuracy()), (50.0, 100.0));
        let mean = Predictions::mean(&[a.clone(), b]).unwrap();
        assert!((mean.probabilities[0][0] - 0.575).abs() < 1e-6, "{:?}", mean.probabilities);
        assert_eq!(mean.accuracy(), 100.0);
        let mut other = a.clone();
        other.ids[1] = "z".into();
        assert!(Predictions::mean(&[a, other]).unwrap_err().to_string().contains("other samples"));
    }
}
