//! Evaluating a model on a split: its loss, the task's metrics, and routing statistics per
//! layer and per class.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use burn::tensor::{ElementConversion, Tensor, backend::Backend};
use data::{Sample, Task, batches};
use mope_core::RoutingStats;
use ops::Kernels;
use serde::{Deserialize, Serialize};

use crate::dataset::loader_config;
use crate::feature_cache::FeatureCache;
use crate::metrics::{Accuracy, MultiLabelF1, Segmentation};
use crate::model::{Model, Routing, Site};
use crate::objective::{Logits, Objective};
use crate::pair::{PairPrepare, PreparedPair, class_of, multi_hot};
use crate::predictions::Predictions;
use crate::progress::{Progress, ProgressMode};

/// Accumulates predictions, losses and routing over an evaluation.
#[derive(Debug)]
pub struct Evaluation {
    objective: Task,
    accuracy: Accuracy,
    f1: MultiLabelF1,
    segmentation: Segmentation,
    loss_sum: f64,
    importance_sum: f64,
    batches: usize,
    samples: usize,
    routing: BTreeMap<Site, RoutingStats>,
    /// Per site, per class: sum of routing weights and count.
    class_routing: BTreeMap<Site, Vec<(Vec<f64>, usize)>>,
    /// Each sample's class probabilities (classification).
    predictions: Predictions,
}

/// Evaluation results, as written to `metrics.jsonl` and `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean task loss.
    pub loss: f64,
    /// Mean importance loss.
    pub importance_loss: f64,
    /// Metrics by name, in percent: `accuracy`; `f1_macro`, `f1_micro`, `f1_weighted`,
    /// `f1_samples`; or `pixel_accuracy`, `mean_accuracy`, `mean_iou`.
    pub metrics: BTreeMap<String, f64>,
    /// Samples evaluated.
    pub samples: usize,
    /// Routing statistics of each routing site (MoPE: routed layers; pMoE: dispatchers).
    pub routing: Vec<LayerRouting>,
}

/// Routing statistics of one routing site, overall and per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    /// pMoE: the expert whose dispatcher this is (its columns are the experts' EPTs, then the
    /// carried prompt); absent for MoPE's routers (columns: prompt experts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<usize>,
    /// Layer index.
    pub layer: usize,
    /// Statistics over all samples.
    pub stats: RoutingStats,
    /// Mean routing weight of each expert for each class (`[num_classes][num_experts]`; for
    /// multi-label tasks a sample counts towards each of its labels). Empty rows: class absent.
    pub per_class: Vec<Vec<f32>>,
}

impl LayerRouting {
    /// Class `class`'s mean weights over several sites (one pMoE expert's dispatchers at its
    /// prompted layers), `width` columns, a site with fewer sources counting 0 for the missing
    /// ones (the first dispatcher has no carried prompt); `None` where the class is absent.
    pub fn class_mean(sites: &[&LayerRouting], class: usize, width: usize) -> Option<Vec<f32>> {
        let rows: Vec<&Vec<f32>> = sites.iter().filter_map(|r| r.per_class.get(class).filter(|row| !row.is_empty())).collect();
        if rows.is_empty() {
            return None;
        }
        let mut mean = vec![0.0f32; width];
        for row in &rows {
            for (m, v) in mean.iter_mut().zip(row.iter()) {
                *m += v / rows.len() as f32;
            }
        }
        Some(mean)
    }
}

impl Evaluation {
    /// An empty evaluation.
    pub fn new(objective: Task) -> Self {
        Self {
            objective,
            accuracy: Accuracy::default(),
            f1: MultiLabelF1::new(match objective {
                Task::MultiLabel { num_labels } => num_labels,
                _ => 1,
            }),
            segmentation: match objective {
                Task::Segmentation { num_classes, ignore_index } => Segmentation::new(num_classes, ignore_index),
                _ => Segmentation::new(1, 255),
            },
            loss_sum: 0.0,
            importance_sum: 0.0,
            batches: 0,
            samples: 0,
            routing: BTreeMap::new(),
            class_routing: BTreeMap::new(),
            predictions: Predictions::default(),
        }
    }

    /// Adds one batch: its logits, items, routing, loss and importance loss.
    pub fn update<B: Backend>(&mut self, logits: &Logits<B>, items: &[PreparedPair], routing: &Routing<B>, loss: f64, importance: f64) {
        self.loss_sum += loss;
        self.importance_sum += importance;
        self.batches += 1;
        let batch = items.len();
        self.samples += batch;
        let classes: Vec<Vec<usize>> = match (self.objective, logits) {
            (Task::Segmentation { .. }, Logits::Pixels(logits)) => {
                let predicted: Vec<u8> = logits.clone().argmax(1).into_data().convert::<i64>().to_vec::<i64>().expect("class ids").iter().map(|&c| c as u8).collect();
                let truth: Vec<u8> = items.iter().flat_map(|i| i.mask.as_ref().expect("segmentation items carry their label map").iter().copied()).collect();
                self.segmentation.update(&predicted, &truth);
                vec![Vec::new(); batch] // routing per class is per sample; a label map has many
            }
            (_, Logits::Pixels(_)) => panic!("{:?} got per-pixel logits", self.objective),
            (objective, Logits::Scores(logits)) => self.update_scores(objective, logits, items),
        };
        self.update_routing(routing, &classes, batch);
    }

    fn update_scores<B: Backend>(&mut self, objective: Task, logits: &Tensor<B, 2>, items: &[PreparedPair]) -> Vec<Vec<usize>> {
        let [_, outputs] = logits.dims();
        let scores: Vec<f32> = logits.to_data().convert::<f32>().to_vec().expect("logits are floats");
        match objective {
            Task::Classification { .. } => {
                let predicted: Vec<usize> = scores.chunks(outputs).map(argmax).collect();
                let truth: Vec<usize> = items.iter().map(|i| class_of(&i.target)).collect();
                self.accuracy.update(&predicted, &truth);
                for ((item, class), row) in items.iter().zip(&truth).zip(scores.chunks(outputs)) {
                    self.predictions.push(&item.id, *class, row);
                }
                truth.into_iter().map(|c| vec![c]).collect()
            }
            Task::MultiLabel { num_labels } => {
                for (row, item) in scores.chunks(outputs).zip(items) {
                    let truth: Vec<bool> = multi_hot(&item.target, num_labels).iter().map(|&v| v > 0.5).collect();
                    // sigmoid(x) > 0.5 ⇔ x > 0
                    self.f1.update_scores(row, 0.0, &truth);
                }
                items
                    .iter()
                    .map(|i| match &i.target {
                        data::Target::MultiLabel(l) => l.clone(),
                        _ => unreachable!("checked by multi_hot"),
                    })
                    .collect()
            }
            Task::Segmentation { .. } => unreachable!("segmentation has per-pixel logits"),
        }
    }

    fn update_routing<B: Backend>(&mut self, routing: &Routing<B>, classes: &[Vec<usize>], batch: usize) {
        for (site, weights) in routing {
            let [_, experts] = weights.dims();
            let w: Vec<f32> = weights.to_data().convert::<f32>().to_vec().expect("routing weights are floats");
            let stats = RoutingStats::from_rows(&w, batch, experts);
            self.routing.entry(*site).and_modify(|s| *s = s.merge(&stats)).or_insert(stats);
            let per_class = self.class_routing.entry(*site).or_insert_with(|| vec![(vec![0.0; experts], 0); self.objective.num_outputs()]);
            for (row, sample_classes) in w.chunks(experts).zip(classes) {
                for &c in sample_classes {
                    let (sum, count) = &mut per_class[c];
                    sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
                    *count += 1;
                }
            }
        }
    }

    /// Each sample's class probabilities, for a classification task (`None` otherwise).
    pub fn predictions(&self) -> Option<&Predictions> {
        matches!(self.objective, Task::Classification { .. }).then_some(&self.predictions)
    }

    /// The report.
    pub fn report(&self) -> EvalReport {
        let n = self.batches.max(1) as f64;
        let mut metrics = BTreeMap::new();
        let samples = match self.objective {
            Task::Classification { .. } => {
                metrics.insert("accuracy".to_string(), 100.0 * self.accuracy.value());
                self.accuracy.count()
            }
            Task::Segmentation { .. } => {
                let scores = self.segmentation.scores();
                metrics.insert("pixel_accuracy".to_string(), 100.0 * scores.pixel_accuracy);
                metrics.insert("mean_accuracy".to_string(), 100.0 * scores.mean_accuracy);
                metrics.insert("mean_iou".to_string(), 100.0 * scores.mean_iou);
                self.samples
            }
            Task::MultiLabel { .. } => {
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
            .map(|(site, stats)| LayerRouting {
                expert: site.expert,
                layer: site.layer,
                stats: stats.clone(),
                per_class: self.class_routing[site]
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

/// Evaluates `model` on `samples`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Kernels>(
    model: &Model<B>,
    prepare: &Arc<PairPrepare>,
    objective: Task,
    cache: &mut FeatureCache,
    split_name: &str,
    samples: &Arc<Vec<Sample>>,
    batch_size: usize,
    workers: usize,
    progress: ProgressMode,
) -> Result<Evaluation> {
    let device: B::Device = Default::default();
    let config = loader_config(batch_size, workers, None, false);
    let prepare = cache.prepare_for(prepare, split_name, samples);
    let batches = batches(samples.clone(), prepare.clone(), &config, 0);
    let mut bar = Progress::new(progress, format!("eval {split_name}"), batches.len());
    let mut evaluation = Evaluation::new(objective);
    for batch in batches {
        let items = batch?;
        let inputs = cache.inputs(model, &prepare, split_name, &items, &device)?;
        let out = objective.forward(model, inputs);
        let loss = objective.loss(&out.logits, &items).into_scalar().elem::<f64>();
        let importance = out.importance_loss.clone().into_scalar().elem::<f64>();
        evaluation.update(&out.logits, &items, &out.routing, loss, importance);
        bar.step(items.len(), String::new);
    }
    bar.finish();
    cache.flush()?;
    Ok(evaluation)
}

/// The index of the largest value (the first of equals; 0 for an empty row).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn segmentation_evaluation_reports_the_three_scores() {
        let device = Default::default();
        // Predictions (argmax): [1, 0, 0]; truth [1, 1, 255]: one pixel of two right.
        let logits = Tensor::<Flex, 4>::from_data(TensorData::new(vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1, 2, 1, 3]), &device);
        let mut evaluation = Evaluation::new(Task::Segmentation { num_classes: 2, ignore_index: 255 });
        evaluation.update::<Flex>(&Logits::Pixels(logits), &[PreparedPair::of_mask(vec![1, 1, 255])], &Vec::new(), 0.5, 0.0);
        let report = evaluation.report();
        assert_eq!(report.metric("pixel_accuracy"), Some(50.0));
        // Class 0: never true, predicted once → IoU 0/1; class 1: intersection 1, union 2 → 0.5.
        assert_eq!(report.metric("mean_iou"), Some(25.0));
        assert_eq!((report.samples, report.loss), (1, 0.5));
    }
}
