//! The training objective of a task and the evaluation report: loss, the task's metrics, and
//! routing statistics per layer and per class.

use std::collections::BTreeMap;

use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig};
use burn::tensor::{Tensor, backend::Backend};
use data::Task;
use mope_core::{RoutingOutput, RoutingStats};
use serde::{Deserialize, Serialize};

use crate::metrics::{Accuracy, MultiLabelF1};
use crate::pair::{PreparedPair, class_of, class_targets, multi_hot, multi_hot_targets};

/// What is optimised: single-label cross-entropy or multi-label binary cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Objective {
    /// Cross-entropy over `num_classes`; metric: accuracy.
    Classification {
        /// Classes.
        num_classes: usize,
    },
    /// Sigmoid binary cross-entropy per label; metrics: F1 (macro, micro, weighted, samples).
    MultiLabel {
        /// Labels.
        num_labels: usize,
    },
}

impl Objective {
    /// The objective of a dataset's task; `None` for segmentation, which needs a dense head.
    pub fn of(task: Task) -> Option<Self> {
        match task {
            Task::Classification { num_classes } => Some(Self::Classification { num_classes }),
            Task::MultiLabel { num_labels } => Some(Self::MultiLabel { num_labels }),
            Task::Segmentation { .. } => None,
        }
    }

    /// Outputs of the head.
    pub fn num_outputs(self) -> usize {
        match self {
            Self::Classification { num_classes } => num_classes,
            Self::MultiLabel { num_labels } => num_labels,
        }
    }

    /// The metric that selects the best checkpoint and is reported against the paper.
    pub fn primary_metric(self) -> &'static str {
        match self {
            Self::Classification { .. } => "accuracy",
            Self::MultiLabel { .. } => "f1_macro",
        }
    }

    /// Mean task loss of a batch.
    ///
    /// # Shapes
    /// - `logits`: `[batch, num_outputs]`; output `[1]`
    pub fn loss<B: Backend>(self, logits: Tensor<B, 2>, items: &[PreparedPair]) -> Tensor<B, 1> {
        let device = logits.device();
        match self {
            Self::Classification { .. } => CrossEntropyLossConfig::new().init(&device).forward(logits, class_targets(items, &device)),
            Self::MultiLabel { num_labels } => {
                let targets = multi_hot_targets::<B>(items, num_labels, &device).int();
                BinaryCrossEntropyLossConfig::new().with_logits(true).init(&device).forward(logits, targets)
            }
        }
    }
}

/// Accumulates predictions, losses and routing over an evaluation.
#[derive(Debug)]
pub struct Evaluation {
    objective: Objective,
    accuracy: Accuracy,
    f1: MultiLabelF1,
    loss_sum: f64,
    importance_sum: f64,
    batches: usize,
    routing: BTreeMap<usize, RoutingStats>,
    /// Per layer, per class: sum of routing weights and count.
    class_routing: BTreeMap<usize, Vec<(Vec<f64>, usize)>>,
}

/// Evaluation results, as written to `metrics.jsonl` and `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean task loss.
    pub loss: f64,
    /// Mean importance loss.
    pub importance_loss: f64,
    /// Metrics by name (`accuracy`; or `f1_macro`, `f1_micro`, `f1_weighted`, `f1_samples`), in percent.
    pub metrics: BTreeMap<String, f64>,
    /// Samples evaluated.
    pub samples: usize,
    /// Routing statistics of each routed layer.
    pub routing: Vec<LayerRouting>,
}

/// Routing statistics of one layer, overall and per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    /// Layer index.
    pub layer: usize,
    /// Statistics over all samples.
    pub stats: RoutingStats,
    /// Mean routing weight of each expert for each class (`[num_classes][num_experts]`; for
    /// multi-label tasks a sample counts towards each of its labels). Empty rows: class absent.
    pub per_class: Vec<Vec<f32>>,
}

impl Evaluation {
    /// An empty evaluation.
    pub fn new(objective: Objective) -> Self {
        Self {
            objective,
            accuracy: Accuracy::default(),
            f1: MultiLabelF1::new(match objective {
                Objective::MultiLabel { num_labels } => num_labels,
                Objective::Classification { .. } => 1,
            }),
            loss_sum: 0.0,
            importance_sum: 0.0,
            batches: 0,
            routing: BTreeMap::new(),
            class_routing: BTreeMap::new(),
        }
    }

    /// Adds one batch: its logits `[batch, num_outputs]`, items, routing, loss and importance loss.
    pub fn update<B: Backend>(&mut self, logits: &Tensor<B, 2>, items: &[PreparedPair], routing: &[(usize, RoutingOutput<B>)], loss: f64, importance: f64) {
        self.loss_sum += loss;
        self.importance_sum += importance;
        self.batches += 1;
        let [batch, outputs] = logits.dims();
        let scores: Vec<f32> = logits.to_data().convert::<f32>().to_vec().expect("logits are floats");
        let classes: Vec<Vec<usize>> = match self.objective {
            Objective::Classification { .. } => {
                let predicted: Vec<usize> = scores.chunks(outputs).map(argmax).collect();
                let truth: Vec<usize> = items.iter().map(|i| class_of(&i.target)).collect();
                self.accuracy.update(&predicted, &truth);
                truth.into_iter().map(|c| vec![c]).collect()
            }
            Objective::MultiLabel { num_labels } => {
                for (row, item) in scores.chunks(outputs).zip(items) {
                    let truth: Vec<bool> = multi_hot(&item.target, num_labels).iter().map(|&v| v > 0.5).collect();
                    // sigmoid(x) > 0.5 ⇔ x > 0
                    self.f1.update_scores(row, 0.0, &truth);
                }
                items.iter().map(|i| match &i.target {
                    data::Target::MultiLabel(l) => l.clone(),
                    _ => unreachable!("checked by multi_hot"),
                }).collect()
            }
        };
        for (layer, r) in routing {
            let [_, experts] = r.weights.dims();
            let w: Vec<f32> = r.weights.to_data().convert::<f32>().to_vec().expect("routing weights are floats");
            let stats = RoutingStats::from_rows(&w, batch, experts);
            self.routing.entry(*layer).and_modify(|s| *s = s.merge(&stats)).or_insert(stats);
            let per_class = self.class_routing.entry(*layer).or_insert_with(|| vec![(vec![0.0; experts], 0); self.objective.num_outputs()]);
            for (row, sample_classes) in w.chunks(experts).zip(&classes) {
                for &c in sample_classes {
                    let (sum, count) = &mut per_class[c];
                    sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
                    *count += 1;
                }
            }
        }
    }

    /// The report.
    pub fn report(&self) -> EvalReport {
        let n = self.batches.max(1) as f64;
        let mut metrics = BTreeMap::new();
        let samples = match self.objective {
            Objective::Classification { .. } => {
                metrics.insert("accuracy".to_string(), 100.0 * self.accuracy.value());
                self.accuracy.count()
            }
            Objective::MultiLabel { .. } => {
                let f = self.f1.scores();
                metrics.insert("f1_macro".to_string(), 100.0 * f.macro_);
                metrics.insert("f1_micro".to_string(), 100.0 * f.micro);
                metrics.insert("f1_weighted".to_string(), 100.0 * f.weighted);
                metrics.insert("f1_samples".to_string(), 100.0 * f.samples);
                self.f1.count()
            }
        };
        let routing = self
            .routing
            .iter()
            .map(|(&layer, stats)| LayerRouting {
                layer,
                stats: stats.clone(),
                per_class: self.class_routing[&layer]
                    .iter()
                    .map(|(sum, count)| if *count == 0 { Vec::new() } else { sum.iter().map(|s| (s / *count as f64) as f32).collect() })
                    .collect(),
            })
            .collect();
        EvalReport { loss: self.loss_sum / n, importance_loss: self.importance_sum / n, metrics, samples, routing }
    }
}

impl EvalReport {
    /// The value of `metric`, if reported.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        self.metrics.get(metric).copied()
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}
