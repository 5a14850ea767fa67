//! What the routing did in a reproduction, from the test evaluations of its runs, averaged over
//! seeds: MoPE's routers per layer (entropy, the largest expert, how differently the classes are
//! routed; [`routing_table`]) and pMoE's dispatchers (the share of each expert's prompt tokens
//! drawn from each expert's EPTs and from its carried prompt, per layer and per class;
//! [`dispatch_tables`]).

use std::collections::BTreeSet;

use crate::RunResult;
use crate::claims::{Role, Runs, mean_sd};
use crate::evaluation::LayerRouting;
use crate::evaluation::argmax;

/// The mean over classes (those present) of the total-variation distance between a class's mean
/// expert weights and all samples' `share`: 0 when every class is routed alike, up to 1 when
/// each class has experts of its own.
pub fn class_specialisation(per_class: &[Vec<f32>], share: &[f32]) -> f64 {
    let classes: Vec<&Vec<f32>> = per_class.iter().filter(|c| !c.is_empty()).collect();
    let distance = |c: &Vec<f32>| 0.5 * c.iter().zip(share).map(|(a, b)| (a - b).abs() as f64).sum::<f64>();
    classes.iter().map(|c| distance(c)).sum::<f64>() / classes.len().max(1) as f64
}

/// How MoPE's routers spread their weight on the test split, per layer, averaged over seeds: the
/// mean entropy of a sample's weights (`ln E` is uniform), the largest expert's mean weight and
/// its share of top-1 choices, and how differently the classes are routed (the mean over classes
/// of the total-variation distance between a class's mean weights and all samples').
pub fn routing_table(rows: &[Runs]) -> String {
    let mut out = String::from(
        "| experiment | layer | entropy (nats) | largest expert's weight | its top-1 share | class specialisation |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut any = false;
    for runs in rows.iter().filter(|r| matches!(r.role, Role::Mope | Role::MopeWithoutImportance | Role::MopeBothHeads)) {
        let layers: BTreeSet<usize> = runs.results.iter().flat_map(|r| r.report.routing.iter().filter(|l| l.expert.is_none()).map(|l| l.layer)).collect();
        for layer in layers {
            let mut columns = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            for result in &runs.results {
                let Some(routing) = result.report.routing.iter().find(|l| l.expert.is_none() && l.layer == layer) else { continue };
                let stats = &routing.stats;
                let largest = argmax(&stats.share);
                let specialisation = class_specialisation(&routing.per_class, &stats.share);
                for (column, value) in columns.iter_mut().zip([stats.entropy as f64, stats.share[largest] as f64, stats.top1_share[largest] as f64, specialisation]) {
                    column.push(value);
                }
            }
            let [entropy, weight, top1, special] = columns.map(|c| mean_sd(&c).0);
            out.push_str(&format!("| {} | {layer} | {entropy:.3} | {weight:.3} | {top1:.3} | {special:.3} |\n", runs.name));
            any = true;
        }
    }
    if any { out } else { String::new() }
}

/// The experts of a pMoE experiment and the class names of its task, by experiment name.
pub type DescribePmoe<'a> = dyn Fn(&str) -> Option<(Vec<String>, Vec<String>)> + 'a;

/// Each source's mean weight at a dispatcher, as (own EPTs, other experts' EPTs, carried prompt)
/// shares of expert `k`'s prompt tokens; `weights` are the sources in order (every expert's
/// EPTs, then the carried prompt where there is one).
fn own_other_carried(weights: &[f32], k: usize, experts: usize) -> [f64; 3] {
    let own = weights.get(k).copied().unwrap_or(0.0) as f64;
    let others: f64 = weights.iter().take(experts).enumerate().filter(|&(j, _)| j != k).map(|(_, &w)| w as f64).sum();
    let carried = weights.get(experts).copied().unwrap_or(0.0) as f64;
    [own, others, carried]
}

/// The dispatcher of expert `k` at `layer` in a run's test evaluation.
fn site(result: &RunResult, k: usize, layer: usize) -> Option<&LayerRouting> {
    result.report.routing.iter().find(|l| l.expert == Some(k) && l.layer == layer)
}

/// pMoE's dispatchers on the test split, averaged over seeds, in two Markdown tables per pMoE
/// experiment: per expert fed and layer, the mean weight of each source (each expert's EPTs, the
/// carried prompt), the entropy and the class specialisation; and per class, the share of each
/// expert's prompt tokens drawn from its own EPTs, from the other experts' and from its carried
/// prompt, averaged over its prompted layers (the first has no carried prompt: 0 there).
pub fn dispatch_tables(rows: &[Runs], describe: &DescribePmoe) -> String {
    let mut out = String::new();
    for runs in rows.iter().filter(|r| r.role == Role::Pmoe) {
        let Some((experts, labels)) = describe(&runs.name) else { continue };
        let k_count = experts.len();
        let sites: BTreeSet<(usize, usize)> = runs.results.iter().flat_map(|r| r.report.routing.iter().filter_map(|l| Some((l.expert?, l.layer)))).collect();
        if sites.is_empty() {
            continue;
        }
        let legend: Vec<String> = experts.iter().enumerate().map(|(k, e)| format!("e{k} = `{e}`")).collect();
        let n = runs.results.len();
        out.push_str(&format!("{} ({n} seed{}; {}):\n\n", runs.name, if n == 1 { "" } else { "s" }, legend.join(", ")));
        out.push_str("| expert fed | layer |");
        for k in 0..k_count {
            out.push_str(&format!(" from e{k}'s EPTs |"));
        }
        out.push_str(" from its carried prompt | entropy (nats) | class specialisation |\n|---|---:|");
        out.push_str(&"---:|".repeat(k_count + 3));
        out.push('\n');
        for &(k, layer) in &sites {
            let mut shares = vec![Vec::new(); k_count + 1];
            let (mut entropy, mut special) = (Vec::new(), Vec::new());
            for routing in runs.results.iter().filter_map(|r| site(r, k, layer)) {
                for (j, column) in shares.iter_mut().enumerate() {
                    column.push(routing.stats.share.get(j).copied().unwrap_or(0.0) as f64);
                }
                entropy.push(routing.stats.entropy as f64);
                special.push(class_specialisation(&routing.per_class, &routing.stats.share));
            }
            out.push_str(&format!("| e{k} | {layer} |"));
            for column in &shares {
                out.push_str(&format!(" {:.3} |", mean_sd(column).0));
            }
            out.push_str(&format!(" {:.3} | {:.3} |\n", mean_sd(&entropy).0, mean_sd(&special).0));
        }
        out.push_str("\n| class |");
        for k in 0..k_count {
            out.push_str(&format!(" e{k}: own EPTs | e{k}: other experts' | e{k}: carried |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(3 * k_count));
        out.push('\n');
        for (class, label) in labels.iter().enumerate() {
            let mut line = format!("| {label} |");
            let mut present = false;
            for k in 0..k_count {
                let mut sums = [Vec::new(), Vec::new(), Vec::new()];
                for result in &runs.results {
                    let expert_sites: Vec<&LayerRouting> = sites.iter().filter(|&&(fed, _)| fed == k).filter_map(|&(_, layer)| site(result, k, layer)).collect();
                    if let Some(mean) = LayerRouting::class_mean(&expert_sites, class, k_count + 1) {
                        for (sum, share) in sums.iter_mut().zip(own_other_carried(&mean, k, k_count)) {
                            sum.push(share);
                        }
                    }
                }
                present |= !sums[0].is_empty();
                for sum in &sums {
                    // A class absent from this expert's evaluation: a dash, not a share of 0.
                    line.push_str(&if sum.is_empty() { " – |".to_string() } else { format!(" {:.3} |", mean_sd(sum).0) });
                }
            }
            if present {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes routed to different experts, the mean half and half: each is 0.5 from it.
    /// Classes routed alike: 0. An absent class (empty row) does not count.
    #[test]
    fn class_specialisation_is_the_mean_total_variation() {
        let share = [0.5, 0.5];
        assert!((class_specialisation(&[vec![1.0, 0.0], vec![0.0, 1.0], vec![]], &share) - 0.5).abs() < 1e-9);
        assert_eq!(class_specialisation(&[vec![0.5, 0.5], vec![0.5, 0.5]], &share), 0.0);
        assert!((class_specialisation(&[vec![0.7, 0.3], vec![0.5, 0.5]], &share) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn a_dispatchers_weights_split_into_own_other_and_carried() {
        // Expert 1 of 3 at a layer with a carried prompt: sources e0, e1, e2, carried.
        let [own, other, carried] = own_other_carried(&[0.1, 0.4, 0.2, 0.3], 1, 3);
        assert!((own - 0.4).abs() < 1e-6 && (other - 0.3).abs() < 1e-6 && (carried - 0.3).abs() < 1e-6);
        // The first prompted layer has no carried source.
        assert_eq!(own_other_carried(&[0.25, 0.75], 0, 2), [0.25, 0.75, 0.0]);
    }
}
