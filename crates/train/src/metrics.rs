//! The metrics of the MoPE paper's tasks, accumulated over an epoch on the host:
//!
//! - [`Accuracy`]: top-1 accuracy (Food-101, SNLI-VE, MUStARD);
//! - [`MultiLabelF1`]: micro, macro, weighted and samples F1 of thresholded multi-label
//!   predictions (MM-IMDB), with scikit-learn's conventions (a label or sample with no true and no
//!   predicted positive scores F1 = 0 in macro and samples averaging, as `zero_division=0`);
//! - [`Segmentation`]: pixel accuracy, mean class accuracy and mean IoU over a confusion matrix,
//!   ignoring unlabelled pixels (NYUDv2, SUN RGB-D); classes absent from both prediction and
//!   ground truth are left out of the means.

/// Top-1 accuracy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accuracy {
    correct: usize,
    total: usize,
}

impl Accuracy {
    /// Adds a batch of predicted and true classes.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn update(&mut self, predicted: &[usize], truth: &[usize]) {
        assert_eq!(predicted.len(), truth.len(), "{} predictions for {} labels", predicted.len(), truth.len());
        self.correct += predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
        self.total += truth.len();
    }

    /// Accuracy in `[0, 1]` (0 before any update).
    pub fn value(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.correct as f64 / self.total as f64 }
    }

    /// Samples seen.
    pub fn count(&self) -> usize {
        self.total
    }
}

/// F1 scores of multi-label predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiLabelF1 {
    num_labels: usize,
    true_positive: Vec<usize>,
    false_positive: Vec<usize>,
    false_negative: Vec<usize>,
    samples_f1_sum: f64,
    samples: usize,
}

/// The four averages of [`MultiLabelF1`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F1Scores {
    /// F1 of the pooled counts.
    pub micro: f64,
    /// Mean of the per-label F1.
    pub macro_: f64,
    /// Per-label F1 weighted by the label's true count.
    pub weighted: f64,
    /// Mean of the per-sample F1.
    pub samples: f64,
}

fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    let denominator = 2 * tp + fp + fn_;
    if denominator == 0 { 0.0 } else { 2.0 * tp as f64 / denominator as f64 }
}

impl MultiLabelF1 {
    /// An empty accumulator for `num_labels` labels.
    pub fn new(num_labels: usize) -> Self {
        Self {
            num_labels,
            true_positive: vec![0; num_labels],
            false_positive: vec![0; num_labels],
            false_negative: vec![0; num_labels],
            samples_f1_sum: 0.0,
            samples: 0,
        }
    }

    /// Samples seen.
    pub fn count(&self) -> usize {
        self.samples
    }

    /// Adds one sample: `predicted[l]` and `truth[l]` say whether label `l` applies.
    ///
    /// # Panics
    /// If either slice does not have `num_labels` entries.
    pub fn update(&mut self, predicted: &[bool], truth: &[bool]) {
        assert!(
            predicted.len() == self.num_labels && truth.len() == self.num_labels,
            "expected {} labels, got {} predicted and {} true",
            self.num_labels,
            predicted.len(),
            truth.len()
        );
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for l in 0..self.num_labels {
            match (predicted[l], truth[l]) {
                (true, true) => {
                    self.true_positive[l] += 1;
                    tp += 1;
                }
                (true, false) => {
                    self.false_positive[l] += 1;
                    fp += 1;
                }
                (false, true) => {
                    self.false_negative[l] += 1;
                    fn_ += 1;
                }
                (false, false) => {}
            }
        }
        self.samples_f1_sum += f1(tp, fp, fn_);
        self.samples += 1;
    }

    /// Adds a sample from scores: label `l` is predicted when `scores[l] > threshold` (the
    /// official code uses sigmoid probabilities and 0.5).
    pub fn update_scores(&mut self, scores: &[f32], threshold: f32, truth: &[bool]) {
        let predicted: Vec<bool> = scores.iter().map(|&s| s > threshold).collect();
        self.update(&predicted, truth);
    }

    /// The four F1 averages.
    pub fn scores(&self) -> F1Scores {
        let per_label: Vec<f64> = (0..self.num_labels).map(|l| f1(self.true_positive[l], self.false_positive[l], self.false_negative[l])).collect();
        let support: Vec<usize> = (0..self.num_labels).map(|l| self.true_positive[l] + self.false_negative[l]).collect();
        let total_support: usize = support.iter().sum();
        let sum = |v: &[usize]| v.iter().sum::<usize>();
        F1Scores {
            micro: f1(sum(&self.true_positive), sum(&self.false_positive), sum(&self.false_negative)),
            macro_: if self.num_labels == 0 { 0.0 } else { per_label.iter().sum::<f64>() / self.num_labels as f64 },
            weighted: if total_support == 0 {
                0.0
            } else {
                per_label.iter().zip(&support).map(|(f, &s)| f * s as f64).sum::<f64>() / total_support as f64
            },
            samples: if self.samples == 0 { 0.0 } else { self.samples_f1_sum / self.samples as f64 },
        }
    }
}

/// Segmentation metrics over a confusion matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    num_classes: usize,
    ignore_index: u8,
    /// `confusion[truth * num_classes + predicted]`.
    confusion: Vec<u64>,
}

/// The three segmentation metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentationScores {
    /// Correct labelled pixels over labelled pixels.
    pub pixel_accuracy: f64,
    /// Mean over classes present in the ground truth of the per-class recall.
    pub mean_accuracy: f64,
    /// Mean over classes present in prediction or ground truth of the intersection over union.
    pub mean_iou: f64,
}

impl Segmentation {
    /// An empty accumulator.
    pub fn new(num_classes: usize, ignore_index: u8) -> Self {
        Self { num_classes, ignore_index, confusion: vec![0; num_classes * num_classes] }
    }

    /// Adds predicted and true class maps of the same size; pixels whose truth is `ignore_index`
    /// are skipped.
    ///
    /// # Panics
    /// If the maps differ in size, or a class id is out of range.
    pub fn update(&mut self, predicted: &[u8], truth: &[u8]) {
        assert_eq!(predicted.len(), truth.len(), "{} predicted pixels for {} labelled", predicted.len(), truth.len());
        for (&p, &t) in predicted.iter().zip(truth) {
            if t == self.ignore_index {
                continue;
            }
            let (p, t) = (p as usize, t as usize);
            assert!(p < self.num_classes && t < self.num_classes, "class id out of range 0..{}: predicted {p}, true {t}", self.num_classes);
            self.confusion[t * self.num_classes + p] += 1;
        }
    }

    /// The three metrics.
    pub fn scores(&self) -> SegmentationScores {
        let n = self.num_classes;
        let row = |c: usize| (0..n).map(|p| self.confusion[c * n + p]).sum::<u64>();
        let col = |c: usize| (0..n).map(|t| self.confusion[t * n + c]).sum::<u64>();
        let diagonal: Vec<u64> = (0..n).map(|c| self.confusion[c * n + c]).collect();
        let total: u64 = self.confusion.iter().sum();
        let (mut acc_sum, mut acc_n, mut iou_sum, mut iou_n) = (0.0, 0, 0.0, 0);
        for c in 0..n {
            let (truth, predicted) = (row(c), col(c));
            if truth > 0 {
                acc_sum += diagonal[c] as f64 / truth as f64;
                acc_n += 1;
            }
            let union = truth + predicted - diagonal[c];
            if union > 0 {
                iou_sum += diagonal[c] as f64 / union as f64;
                iou_n += 1;
            }
        }
        let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
        SegmentationScores {
            pixel_accuracy: if total == 0 { 0.0 } else { diagonal.iter().sum::<u64>() as f64 / total as f64 },
            mean_accuracy: mean(acc_sum, acc_n),
            mean_iou: mean(iou_sum, iou_n),
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
    fn accuracy_counts_matches() {
        let mut acc = Accuracy::default();
        acc.update(&[0, 1, 2, 2], &[0, 1, 1, 2]);
        acc.update(&[5], &[4]);
        assert_eq!(acc.count(), 5);
        assert!(close(acc.value(), 0.6));
    }

    #[test]
    fn f1_averages_match_hand_computation() {
        // 3 labels, 3 samples; every expected value equals sklearn.metrics.f1_score(…, average=…,
        // zero_division=0) on the same arrays (checked with scikit-learn 1.9):
        // truth     [1,0,1] [0,1,0] [1,1,0]
        // predicted [1,0,0] [0,1,1] [1,0,0]
        let mut f = MultiLabelF1::new(3);
        f.update(&[true, false, false], &[true, false, true]);
        f.update(&[false, true, true], &[false, true, false]);
        f.update(&[true, false, false], &[true, true, false]);
        let s = f.scores();
        // Label 0: tp 2 → F1 1. Label 1: tp 1, fn 1 → 2/3. Label 2: fp 1, fn 1 → 0.
        assert!(close(s.macro_, (1.0 + 2.0 / 3.0 + 0.0) / 3.0));
        // Weighted by support 2, 2, 1.
        assert!(close(s.weighted, (2.0 * 1.0 + 2.0 * (2.0 / 3.0) + 1.0 * 0.0) / 5.0));
        // Pooled: tp 3, fp 1, fn 2 → 6 / 9.
        assert!(close(s.micro, 6.0 / 9.0));
        // Per sample: 2/3, 2/3, 2/3.
        assert!(close(s.samples, 2.0 / 3.0));
    }

    #[test]
    fn f1_thresholds_scores_strictly() {
        let mut f = MultiLabelF1::new(2);
        f.update_scores(&[0.5, 0.9], 0.5, &[false, true]);
        assert!(close(f.scores().micro, 1.0), "0.5 is not above the threshold");
    }

    #[test]
    fn segmentation_scores_ignore_unlabelled_pixels() {
        // 3 classes; truth 255 pixels are ignored whatever is predicted.
        let mut seg = Segmentation::new(3, 255);
        seg.update(&[0, 0, 1, 1, 2, 0], &[0, 0, 1, 2, 255, 255]);
        // Confusion (truth→pred): 0→0 ×2, 1→1 ×1, 2→1 ×1.
        let s = seg.scores();
        assert!(close(s.pixel_accuracy, 3.0 / 4.0));
        // Recall: class 0: 1, class 1: 1, class 2: 0 → mean 2/3.
        assert!(close(s.mean_accuracy, 2.0 / 3.0));
        // IoU: class 0: 2/2, class 1: 1/(1+2-1) = 1/2, class 2: 0/1 → mean 1/2.
        assert!(close(s.mean_iou, 0.5));
    }
}
