//! The result table of a reproduction and its claims: each experiment's metric over its seeds
//! (mean ± sample standard deviation, n), and for each dataset the comparisons the papers make,
//! each with a verdict from the per-seed paired differences by one stated rule ([`Verdict`]).
//! What the routers and dispatchers did is in [`crate::routing_report`].

use std::collections::BTreeSet;
use std::fmt;

use mope_core::{HeadInput, human_bytes, thousands};

use crate::RunResult;
use crate::spec::{ExperimentSpec, Method};

/// What an experiment is in its dataset's comparisons: its method and what its head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// MoPE, head on the main encoder (the paper's).
    Mope,
    /// MoPE without the importance loss (`train.importance_weight = 0`).
    MopeWithoutImportance,
    /// MoPE under the concatenated head.
    MopeBothHeads,
    /// Sequential fusion (static and mapped prompts).
    Sequential,
    /// Deep prompt tuning of the main encoder, head on it only: the main modality alone, prompted.
    PromptTuning,
    /// Deep prompt tuning under the concatenated head.
    PromptTuningBothHeads,
    /// Linear head on both frozen features.
    LateFusion,
    /// Linear probe of the main encoder's frozen feature alone.
    MainAlone,
    /// Linear probe of the complementary encoder's frozen feature alone.
    ComplementaryAlone,
    /// The main encoder trained entirely.
    FineTuning,
    /// pMoE over several experts.
    Pmoe,
    /// Each expert prompt-tuned alone, scores averaged.
    MeanOfExperts,
    /// One expert prompt-tuned alone.
    SingleExpert,
    /// Linear head on the frozen experts' pooled outputs.
    LateFusionOfExperts,
}

impl Role {
    /// The role of an experiment.
    pub fn of(spec: &ExperimentSpec) -> Self {
        let method = spec.model.method;
        if spec.model.is_pmoe() {
            return match method {
                Method::Pmoe => Self::Pmoe,
                Method::MeanOfExperts => Self::MeanOfExperts,
                Method::LateFusion => Self::LateFusionOfExperts,
                _ => Self::SingleExpert,
            };
        }
        match (method, spec.model.head_input()) {
            (Method::Mope, HeadInput::Both) => Self::MopeBothHeads,
            (Method::Mope, _) if spec.train.importance_weight == 0.0 => Self::MopeWithoutImportance,
            (Method::Mope, _) => Self::Mope,
            (Method::Sequential, _) => Self::Sequential,
            (Method::PromptTuning, HeadInput::Both) => Self::PromptTuningBothHeads,
            (Method::PromptTuning, _) => Self::PromptTuning,
            (Method::LateFusion, HeadInput::Main) => Self::MainAlone,
            (Method::LateFusion, HeadInput::Complementary) => Self::ComplementaryAlone,
            (Method::LateFusion, HeadInput::Both) => Self::LateFusion,
            (Method::FineTuning, _) => Self::FineTuning,
            (Method::Pmoe | Method::MeanOfExperts, _) => unreachable!("pMoE-family methods name experts"),
        }
    }
}

/// The comparisons of a dataset: `(a, b, the claim that a beats b)`.
const COMPARISONS: &[(Role, Role, &str)] = &[
    (Role::Mope, Role::PromptTuning, "MoPE beats deep prompt tuning (both heads on the main encoder)"),
    (Role::Mope, Role::Sequential, "MoPE beats sequential fusion"),
    (Role::Mope, Role::LateFusion, "MoPE beats late fusion"),
    (Role::Mope, Role::MopeWithoutImportance, "the importance loss helps MoPE"),
    (Role::MopeBothHeads, Role::PromptTuningBothHeads, "MoPE beats prompt tuning, both under the concatenated head"),
    (Role::LateFusion, Role::MainAlone, "late fusion beats the main modality alone"),
    (Role::LateFusion, Role::ComplementaryAlone, "late fusion beats the complementary modality alone"),
    (Role::Pmoe, Role::MeanOfExperts, "pMoE beats the mean of its experts"),
    (Role::Pmoe, Role::LateFusionOfExperts, "pMoE beats late fusion of its experts"),
];

/// An experiment's runs, one per seed.
#[derive(Debug)]
pub struct Runs {
    /// `dataset/method`.
    pub name: String,
    /// Its role in the dataset's comparisons.
    pub role: Role,
    /// Its experts (pMoE-family experiments; empty otherwise).
    pub experts: Vec<String>,
    /// The paper's value, where it gives one.
    pub paper: Option<f64>,
    /// One result per seed, in seed order.
    pub results: Vec<RunResult>,
}

impl Runs {
    /// The runs of the experiment `spec`, starting with `first`.
    pub fn new(spec: &ExperimentSpec, paper: Option<f64>, first: RunResult) -> Self {
        Self { name: spec.name.clone(), role: Role::of(spec), experts: spec.model.experts.clone(), paper, results: vec![first] }
    }

    /// Mean and sample standard deviation of the value over the seeds.
    pub(crate) fn mean_sd(&self) -> (f64, f64) {
        mean_sd(&self.results.iter().map(|r| r.value).collect::<Vec<_>>())
    }

    /// Mean training seconds per seed.
    fn mean_train_seconds(&self) -> f64 {
        self.results.iter().map(|r| r.train_seconds).sum::<f64>() / self.results.len().max(1) as f64
    }

    fn dataset(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }

    /// The value of each seed both runs have, as `(self, other)` pairs.
    fn paired(&self, other: &Runs) -> Vec<(f64, f64)> {
        self.results.iter().filter_map(|a| other.results.iter().find(|b| b.seed == a.seed).map(|b| (a.value, b.value))).collect()
    }
}

/// Mean and sample standard deviation (`n − 1`; 0 for one value).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Student's t at 97.5% for 1 to 9 degrees of freedom (a two-sided 95% interval); 2.0 beyond.
const T_975: [f64; 9] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262];

/// Whether a claim "a beats b" holds, from the per-seed paired differences `a − b` (a paired t
/// test at 95%, two-sided): it **holds** when their mean is positive and more than `t` standard
/// errors (`sd / √n`; `t` = 4.30 for 3 seeds) from zero, **does not hold** when it is negative by
/// as much, and is **within noise** otherwise. One seed gives no spread: its verdict says so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Ahead by more than `t` standard errors.
    Holds,
    /// Behind by more than `t` standard errors.
    DoesNotHold,
    /// Within `t` standard errors of zero.
    WithinNoise,
    /// One seed: the sign of the difference only.
    OneSeed {
        /// Whether `a` is ahead.
        ahead: bool,
    },
}

impl Verdict {
    /// The verdict on paired values `(a, b)`, one pair per seed (at least one), with the mean
    /// paired difference and its standard error.
    pub fn of(pairs: &[(f64, f64)]) -> (Self, f64, f64) {
        let differences: Vec<f64> = pairs.iter().map(|(a, b)| a - b).collect();
        let (mean, sd) = mean_sd(&differences);
        let n = differences.len();
        let se = sd / (n as f64).sqrt();
        let t = T_975.get(n.saturating_sub(2)).copied().unwrap_or(2.0);
        let verdict = match n {
            0 | 1 => Self::OneSeed { ahead: mean > 0.0 },
            _ if mean > t * se => Self::Holds,
            _ if mean < -t * se => Self::DoesNotHold,
            _ => Self::WithinNoise,
        };
        (verdict, mean, se)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Holds => "holds",
            Self::DoesNotHold => "does NOT hold",
            Self::WithinNoise => "within noise",
            Self::OneSeed { ahead: true } => "ahead on one seed (no spread to judge noise)",
            Self::OneSeed { ahead: false } => "behind on one seed (no spread to judge noise)",
        })
    }
}

/// The rule of [`Verdict`], as printed under the claims.
pub const VERDICT_RULE: &str = "Verdicts compare seeds pairwise (the same seed on both sides), a paired t test at 95%: a \
     claim holds when the mean paired difference is positive and more than t standard errors (sd / sqrt(n); t = 4.30 for 3 \
     seeds) from zero, does not hold when it is negative by as much, and is within noise otherwise.";

/// The result table, in Markdown: each experiment's metric over its seeds, then each seed's.
pub fn table(rows: &[Runs]) -> String {
    let mut out = String::from(
        "| experiment | metric | ours (mean ± sd) | n | paper | trainable params | trainable % | adapter | epochs | train time | wall time |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for runs in rows {
        let Some(first) = runs.results.first() else { continue };
        let (mean, sd) = runs.mean_sd();
        let n = runs.results.len() as f64;
        let epochs: BTreeSet<usize> = runs.results.iter().map(|r| r.epochs).collect();
        let epochs = match (epochs.first(), epochs.last()) {
            (Some(lo), Some(hi)) if lo != hi => format!("{lo}-{hi}"),
            (Some(e), _) => e.to_string(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} ({}) | {mean:.2} ± {sd:.2} | {} | {} | {} | {:.3} | {} | {epochs} | {:.0} s | {:.0} s |\n",
            runs.name,
            first.metric,
            first.split,
            runs.results.len(),
            runs.paper.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}")),
            thousands(first.trainable_params),
            100.0 * first.trainable_params as f64 / first.total_params.max(1) as f64,
            human_bytes(first.adapter_bytes),
            runs.mean_train_seconds(),
            runs.results.iter().map(|r| r.wall_seconds).sum::<f64>() / n,
        ));
    }
    out
}

/// Each seed's value of each experiment, in Markdown.
pub fn seed_table(rows: &[Runs]) -> String {
    let seeds: BTreeSet<u64> = rows.iter().flat_map(|r| r.results.iter().map(|r| r.seed)).collect();
    let mut out = format!("| experiment |{}\n|---|{}\n", seeds.iter().map(|s| format!(" seed {s} |")).collect::<String>(), "---:|".repeat(seeds.len()));
    for runs in rows {
        out.push_str(&format!("| {} |", runs.name));
        for seed in &seeds {
            match runs.results.iter().find(|r| r.seed == *seed) {
                Some(r) => out.push_str(&format!(" {:.2} |", r.value)),
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The claims of each dataset, one line each, with [`VERDICT_RULE`] at the end.
pub fn claims(rows: &[Runs]) -> String {
    let mut out = String::new();
    let datasets: BTreeSet<&str> = rows.iter().map(Runs::dataset).collect();
    for dataset in datasets {
        let in_dataset: Vec<&Runs> = rows.iter().filter(|r| r.dataset() == dataset).collect();
        let find = |role: Role| in_dataset.iter().copied().find(|r| r.role == role);
        let mut comparisons: Vec<(&Runs, &Runs, String)> = COMPARISONS
            .iter()
            .filter_map(|&(a, b, claim)| Some((find(a)?, find(b)?, claim.to_string())))
            .collect();
        // pMoE against its best single expert: of the single-expert runs of its own experts, the
        // one with the highest mean.
        if let Some(pmoe) = find(Role::Pmoe) {
            let singles = in_dataset.iter().copied().filter(|r| r.role == Role::SingleExpert && r.experts.iter().all(|e| pmoe.experts.contains(e)));
            if let Some(best) = singles.max_by(|a, b| a.mean_sd().0.total_cmp(&b.mean_sd().0)) {
                comparisons.push((pmoe, best, format!("pMoE beats the best single expert ({})", best.name)));
            }
        }
        for (a, b, claim) in comparisons {
            let pairs = a.paired(b);
            if pairs.is_empty() {
                continue; // no seed on both sides
            }
            let (verdict, difference, se) = Verdict::of(&pairs);
            let ((ma, sa), (mb, sb)) = (a.mean_sd(), b.mean_sd());
            let (ta, tb) = (a.results[0].trainable_params, b.results[0].trainable_params);
            out.push_str(&format!(
                "{dataset}: {claim}: {verdict} ({ma:.2} ± {sa:.2} vs {mb:.2} ± {sb:.2}; paired difference {difference:+.2} ± {se:.2} SE, n = {}; {} vs {} trainable params, {:.0} s vs {:.0} s of training).\n",
                pairs.len(),
                thousands(ta),
                thousands(tb),
                a.mean_train_seconds(),
                b.mean_train_seconds()
            ));
        }
        if let (Some(mope), Some(full)) = (find(Role::Mope), find(Role::FineTuning)) {
            out.push_str(&format!(
                "{dataset}: MoPE reaches {:.2} against fine-tuning's {:.2}, training {:.2}% of its parameters.\n",
                mope.mean_sd().0,
                full.mean_sd().0,
                100.0 * mope.results[0].trainable_params as f64 / full.results[0].trainable_params.max(1) as f64
            ));
        }
    }
    if !out.is_empty() {
        out.push_str(VERDICT_RULE);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[2.0, 4.0, 9.0]), (5.0, 13f64.sqrt()));
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }

    /// Differences 1.0, 1.4, 0.7: mean 1.0333, sd 0.3512, SE 0.2028, 5.1 SE from 0 (t = 4.30 for
    /// 2 degrees of freedom): holds; negated, does not hold. Differences 2, −1, 1: mean 0.667, SE
    /// 0.882: within noise. Differences 1.0, 1.5, 0.5: mean 1.0, SE 0.289, 3.5 SE: within noise
    /// at 3 seeds (twice the SE would have called it).
    #[test]
    fn verdicts_follow_the_stated_rule() {
        let consistent = [(61.0, 60.0), (61.4, 60.0), (60.7, 60.0)];
        let (verdict, mean, se) = Verdict::of(&consistent);
        assert_eq!(verdict, Verdict::Holds);
        assert!((mean - 1.0333).abs() < 1e-3 && (se - 0.2028).abs() < 1e-3, "{mean} {se}");
        let swapped: Vec<(f64, f64)> = consistent.iter().map(|&(a, b)| (b, a)).collect();
        assert_eq!(Verdict::of(&swapped).0, Verdict::DoesNotHold);
        let noisy = [(62.0, 60.0), (59.0, 60.0), (61.0, 60.0)];
        let (verdict, mean, se) = Verdict::of(&noisy);
        assert_eq!(verdict, Verdict::WithinNoise);
        assert!((mean - 0.6667).abs() < 1e-3 && (se - 0.8819).abs() < 1e-3, "{mean} {se}");
        assert_eq!(Verdict::of(&[(61.0, 60.0), (61.5, 60.0), (60.5, 60.0)]).0, Verdict::WithinNoise);
        assert_eq!(Verdict::of(&[(1.0, 2.0)]).0, Verdict::OneSeed { ahead: false });
    }

    /// A result of `value` for `seed`, every other field empty.
    fn result(seed: u64, value: f64) -> RunResult {
        serde_json::from_value(serde_json::json!({
            "name": "", "method": "", "encoders": ["", ""], "metric": "accuracy", "value": value, "split": "test",
            "best_val": value, "best_epoch": 1, "paper": null, "trainable_params": 10, "total_params": 100,
            "adapter_bytes": 40, "epochs": 1, "seed": seed, "steps": 1, "train_seconds": 1.0, "wall_seconds": 1.0,
            "report": { "loss": 0.0, "importance_loss": 0.0, "metrics": {}, "samples": 1, "routing": [] },
            "environment": { "backend": "", "cpus": 2, "os": "", "git_commit": null, "version": "", "unix_time": 0, "allocator": [] }
        }))
        .unwrap()
    }

    fn runs(name: &str, role: Role, experts: &[&str], values: [f64; 3]) -> Runs {
        let results = [42, 1, 2].into_iter().zip(values).map(|(seed, v)| result(seed, v)).collect();
        Runs { name: name.into(), role, experts: experts.iter().map(|e| e.to_string()).collect(), paper: None, results }
    }

    /// pMoE's claims: against the best single expert *of its own experts* (a third expert run
    /// alone, better, is not its expert), the mean of its experts and late fusion of its experts;
    /// a two-encoder late fusion in the same dataset is not one of them.
    #[test]
    fn pmoe_is_compared_with_its_own_experts_baselines() {
        let rows = [
            runs("d/pmoe", Role::Pmoe, &["a", "b"], [70.0, 71.0, 72.0]),
            runs("d/a", Role::SingleExpert, &["a"], [60.0, 61.0, 62.0]),
            runs("d/b", Role::SingleExpert, &["b"], [65.0, 66.0, 65.5]),
            runs("d/c", Role::SingleExpert, &["c"], [90.0, 90.0, 90.0]),
            runs("d/mean-of-experts", Role::MeanOfExperts, &["a", "b"], [69.0, 71.0, 73.0]),
            runs("d/late-fusion-of-experts", Role::LateFusionOfExperts, &["a", "b"], [75.0, 76.0, 77.0]),
            runs("d/late-fusion", Role::LateFusion, &[], [10.0, 10.0, 10.0]),
        ];
        let text = claims(&rows);
        let line = |claim: &str| text.lines().find(|l| l.starts_with(&format!("d: {claim}"))).unwrap_or_else(|| panic!("no `{claim}` in {text}")).to_string();
        assert!(line("pMoE beats the best single expert (d/b)").contains(": holds (71.00"), "{text}");
        assert!(line("pMoE beats the mean of its experts").contains(": within noise"), "{text}");
        assert!(line("pMoE beats late fusion of its experts").contains(": does NOT hold (71.00 ± 1.00 vs 76.00 ± 1.00"), "{text}");
        assert_eq!(text.matches("late fusion").count(), 1, "{text}");
    }
}
