//! Deterministic stratified hold-out: the same samples go to validation on every machine, and each
//! class keeps its share; and the stable hashes it draws with (also the names of cache files and
//! the loader's shuffle).

/// SplitMix64's finaliser: every input bit reaches every output bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of `key` with `seed`: FNV-1a of the key, mixed with the mixed seed. (FNV-1a
/// alone, seeded through its initial state, orders short ids by their structure: held-out sets
/// drawn with two seeds then differ in kind, e.g. in their share of multi-codepoint emoji.)
fn hash(key: &str, seed: u64) -> u64 {
    mix(fnv1a(key) ^ mix(seed.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// FNV-1a, 64 bits: a stable hash of `text` (file names of caches, the draws above).
pub fn fnv1a(text: &str) -> u64 {
    fnv1a_bytes(text.as_bytes())
}

/// FNV-1a, 64 bits, of bytes (the checksum of a cache file's contents).
pub fn fnv1a_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Splits items (given by id and class) into `(kept, held_out)` index lists, holding out about
/// `held_out` items in total, proportionally per class (rounded, at least one per class of two or
/// more items), chosen by a seeded hash of the id.
pub fn hold_out(ids: &[&str], classes: &[usize], held_out: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert_eq!(ids.len(), classes.len(), "one class per id");
    let total = ids.len();
    let fraction = held_out as f64 / total.max(1) as f64;
    let num_classes = classes.iter().copied().max().map_or(0, |m| m + 1);
    let mut out = vec![false; total];
    for class in 0..num_classes {
        let mut members: Vec<usize> = (0..total).filter(|&i| classes[i] == class).collect();
        if members.is_empty() {
            continue;
        }
        members.sort_by_key(|&i| (hash(ids[i], seed), i));
        let mut take = (members.len() as f64 * fraction).round() as usize;
        if take == 0 && members.len() >= 2 && fraction > 0.0 {
            take = 1;
        }
        for &i in members.iter().take(take.min(members.len() - 1)) {
            out[i] = true;
        }
    }
    let kept = (0..total).filter(|&i| !out[i]).collect();
    let held = (0..total).filter(|&i| out[i]).collect();
    (kept, held)
}

/// Train, val and test index lists: 15% of `ids.len()` held out for test (stratified, seeded by
/// `seeds.0`), then as many again for val from the rest (seeded by `seeds.1`); train keeps the
/// remaining ~70%.
pub fn train_val_test(ids: &[&str], classes: &[usize], seeds: (u64, u64)) -> [Vec<usize>; 3] {
    let fifteen = ids.len() * 15 / 100;
    let (rest, test) = hold_out(ids, classes, fifteen, seeds.0);
    let rest_ids: Vec<&str> = rest.iter().map(|&i| ids[i]).collect();
    let rest_classes: Vec<usize> = rest.iter().map(|&i| classes[i]).collect();
    let (train, val) = hold_out(&rest_ids, &rest_classes, fifteen, seeds.1);
    [train.into_iter().map(|i| rest[i]).collect(), val.into_iter().map(|i| rest[i]).collect(), test]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_out_per_class_deterministically() {
        let ids: Vec<String> = (0..100).map(|i| format!("item{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let classes: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let (kept, held) = hold_out(&ids, &classes, 10, 42);
        assert_eq!(held.len(), 10);
        assert_eq!(held.iter().filter(|&&i| classes[i] == 0).count(), 8, "class shares are kept");
        assert_eq!(kept.len() + held.len(), 100);
        assert_eq!(hold_out(&ids, &classes, 10, 42).1, held, "same seed, same split");
        assert_ne!(hold_out(&ids, &classes, 10, 7).1, held, "another seed, another split");
    }

    /// Ids of two structures (single and multi-codepoint emoji), one class: the test and val
    /// draws each keep about their share, whatever the seeds.
    #[test]
    fn held_out_sets_do_not_follow_the_structure_of_the_ids() {
        let ids: Vec<String> = (0..2000).map(|i| if i % 2 == 0 { format!("{:x}", 0x1f300 + i) } else { format!("{:x}-200d-{:x}", 0x1f468 + i % 7, 0x1f300 + i) }).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let classes = vec![0; ids.len()];
        for seeds in [(1, 2), (11, 12)] {
            for split in &train_val_test(&ids, &classes, seeds) {
                let multi = split.iter().filter(|&&i| ids[i].contains('-')).count() as f64 / split.len() as f64;
                assert!((multi - 0.5).abs() < 0.06, "seeds {seeds:?}: {multi:.3} multi-codepoint in a split of {}", split.len());
            }
        }
    }

}
