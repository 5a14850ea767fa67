//! Feature maps of a frozen, unprompted network kept per input, so that a training loop computes
//! them once instead of at every step: the map is a constant of the input. Keyed by the input's
//! values (two 64-bit hashes of its bits), so a changed input is a new key, never a stale map.
//! Bounded by a byte budget: past it, new maps are computed and not kept. Off by default; the
//! trainer turns it on for the CPU backend, where the inputs are on the host anyway.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Frozen feature maps by input; clones share one store.
#[derive(Clone, Default)]
pub struct FrozenMapMemo {
    store: Option<Arc<Mutex<Store>>>,
}

#[derive(Default)]
struct Store {
    maps: HashMap<(u64, u64), Vec<f32>>,
    /// `[channels, height, width]` of every map kept.
    shape: Option<[usize; 3]>,
    bytes: usize,
    budget: usize,
}

impl std::fmt::Debug for FrozenMapMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            None => write!(f, "FrozenMapMemo(off)"),
            Some(store) => {
                let store = store.lock().expect("the memo's lock is never poisoned");
                write!(f, "FrozenMapMemo({} maps, {} of {} bytes)", store.maps.len(), store.bytes, store.budget)
            }
        }
    }
}

impl FrozenMapMemo {
    /// A memo keeping at most `budget` bytes of maps; `0`: off.
    pub fn with_budget(budget: usize) -> Self {
        Self { store: (budget > 0).then(|| Arc::new(Mutex::new(Store { budget, ..Store::default() }))) }
    }

    /// Maps kept.
    pub fn len(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.lock().expect("the memo's lock is never poisoned").maps.len())
    }

    /// Whether no map is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `compute(input)`, or the kept maps where every sample of `input` has one. A batch with
    /// any new sample is computed whole (as without the memo) and its maps kept.
    ///
    /// # Shapes
    /// - `input`: `[batch, ...]`, 4-D
    /// - output: `[batch, channels, height, width]`, as `compute` returns
    pub fn map<B: Backend>(&self, input: &Tensor<B, 4>, compute: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>) -> Tensor<B, 4> {
        let Some(store) = &self.store else { return compute(input.clone()) };
        let batch = input.dims()[0];
        let values: Vec<f32> = input.to_data().convert::<f32>().to_vec().expect("floats");
        let keys: Vec<(u64, u64)> = values.chunks(values.len() / batch.max(1)).map(key).collect();
        {
            let store = store.lock().expect("the memo's lock is never poisoned");
            if let Some([c, h, w]) = store.shape
                && batch > 0
                && keys.iter().all(|k| store.maps.contains_key(k))
            {
                let mut flat = Vec::with_capacity(batch * c * h * w);
                for k in &keys {
                    flat.extend_from_slice(&store.maps[k]);
                }
                return Tensor::from_data(TensorData::new(flat, [batch, c, h, w]), &input.device());
            }
        }
        let map = compute(input.clone());
        let [_, c, h, w] = map.dims();
        let rows: Vec<f32> = map.to_data().convert::<f32>().to_vec().expect("floats");
        let mut store = store.lock().expect("the memo's lock is never poisoned");
        if store.shape.is_some_and(|shape| shape != [c, h, w]) {
            store.maps.clear();
            store.bytes = 0;
        }
        store.shape = Some([c, h, w]);
        for (k, row) in keys.into_iter().zip(rows.chunks(c * h * w)) {
            let bytes = 4 * row.len();
            if store.maps.contains_key(&k) || store.bytes + bytes > store.budget {
                continue;
            }
            store.maps.insert(k, row.to_vec());
            store.bytes += bytes;
        }
        map
    }
}

/// Two independent 64-bit hashes of the values' bits.
fn key(values: &[f32]) -> (u64, u64) {
    let mut a = DefaultHasher::new();
    let mut b = DefaultHasher::new();
    b.write_u8(0x5a);
    for v in values {
        a.write_u32(v.to_bits());
        b.write_u32(v.to_bits());
    }
    (a.finish(), b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use std::cell::Cell;

    fn batch(values: &[[f32; 4]]) -> Tensor<Flex, 4> {
        let flat: Vec<f32> = values.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [values.len(), 1, 2, 2]), &Default::default())
    }

    #[test]
    fn maps_are_computed_once_per_input_and_returned_in_the_batch_order() {
        let memo = FrozenMapMemo::with_budget(1 << 20);
        let calls = Cell::new(0);
        let double = |x: Tensor<Flex, 4>| {
            calls.set(calls.get() + 1);
            x * 2.0
        };
        let (a, b, c) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 0.0, 0.0, 1.0]);
        let first = memo.map(&batch(&[a, b]), double);
        assert_eq!(first.to_data().to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
        assert_eq!((calls.get(), memo.len()), (1, 2));
        // The same samples in another order: from the memo.
        let again = memo.map(&batch(&[b, a]), double);
        assert_eq!(again.to_data().to_vec::<f32>().unwrap(), [10.0, 12.0, 14.0, 16.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(calls.get(), 1);
        // A new sample: the batch is computed whole.
        memo.map(&batch(&[a, c]), double);
        assert_eq!((calls.get(), memo.len()), (2, 3));
        // A changed input is a new key, never the old map.
        let changed = memo.map(&batch(&[[1.0, 2.0, 3.0, 4.5]]), double);
        assert_eq!(changed.to_data().to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0, 9.0]);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn the_budget_bounds_what_is_kept_and_zero_turns_it_off() {
        // Room for one map of 4 floats.
        let memo = FrozenMapMemo::with_budget(16);
        memo.map(&batch(&[[1.0; 4], [2.0; 4]]), |x| x);
        assert_eq!(memo.len(), 1);
        let off = FrozenMapMemo::with_budget(0);
        off.map(&batch(&[[1.0; 4]]), |x| x);
        assert!(off.is_empty());
        assert_eq!(format!("{off:?}"), "FrozenMapMemo(off)");
    }
}
