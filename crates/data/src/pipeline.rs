//! Parallel batch loading: worker threads prepare whole batches (decode, resize, normalise …)
//! while training consumes earlier ones. Batches come out in a deterministic order that depends on
//! the seed and the epoch only, never on the number of workers or on timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::DataError;
use crate::sample::Sample;

/// Turns a sample into what a batch is made of.
pub trait Prepare: Send + Sync + 'static {
    /// A prepared sample.
    type Item: Send + 'static;

    /// Prepares one sample.
    fn prepare(&self, sample: &Sample) -> Result<Self::Item, DataError>;
}

/// How batches are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Worker threads preparing batches (at least 1).
    pub workers: usize,
    /// Shuffle with this seed (mixed with the epoch); `None` keeps file order.
    pub shuffle: Option<u64>,
    /// Drop a last, incomplete batch (the official code does for training).
    pub drop_last: bool,
    /// Prepared batches that may wait for the consumer.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Batches of `batch_size` in file order, with one worker per core.
    pub fn new(batch_size: usize) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { batch_size, workers, shuffle: None, drop_last: false, prefetch: 2 * workers }
    }
}

/// The sample indices of each batch of an epoch.
pub fn batch_indices(len: usize, config: &LoaderConfig, epoch: u64) -> Vec<Vec<usize>> {
    assert!(config.batch_size > 0, "batch_size must be at least 1");
    let mut order: Vec<usize> = (0..len).collect();
    if let Some(seed) = config.shuffle {
        // Fisher–Yates with SplitMix64, seeded by (seed, epoch).
        let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            crate::stratify::mix(state)
        };
        for i in (1..len).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(config.batch_size).map(<[usize]>::to_vec).collect();
    if config.drop_last && batches.last().is_some_and(|b| b.len() < config.batch_size) {
        batches.pop();
    }
    batches
}

/// Throughput of a pass over the data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Samples delivered.
    pub samples: usize,
    /// Time from the start of the pass to the last delivery.
    pub elapsed: Duration,
}

impl Throughput {
    /// Samples per second.
    pub fn per_second(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

type Message<T> = (usize, Result<Vec<T>, DataError>);

/// Batches of one epoch, in order, prepared by worker threads.
pub struct Batches<T> {
    receiver: Receiver<Message<T>>,
    pending: BTreeMap<usize, Result<Vec<T>, DataError>>,
    next: usize,
    total: usize,
    started: Instant,
    throughput: Throughput,
    workers: Vec<JoinHandle<()>>,
}

impl<T> Batches<T> {
    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Samples delivered so far and the time they took.
    pub fn throughput(&self) -> Throughput {
        self.throughput
    }
}

impl<T> Iterator for Batches<T> {
    type Item = Result<Vec<T>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            match self.receiver.recv() {
                Ok((index, batch)) => {
                    self.pending.insert(index, batch);
                }
                Err(_) => return None, // workers gone: only after a panic in `prepare`
            }
        }
        let batch = self.pending.remove(&self.next).expect("just checked");
        self.next += 1;
        if let Ok(items) = &batch {
            self.throughput.samples += items.len();
            self.throughput.elapsed = self.started.elapsed();
        }
        Some(batch)
    }
}

impl<T> Drop for Batches<T> {
    fn drop(&mut self) {
        // Unblock workers waiting to send, then let them finish.
        let (_, dead) = sync_channel(0);
        let receiver = std::mem::replace(&mut self.receiver, dead);
        drop(receiver);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Starts preparing the batches of `epoch` over `samples` with `prepare`.
pub fn batches<P: Prepare>(samples: Arc<Vec<Sample>>, prepare: Arc<P>, config: &LoaderConfig, epoch: u64) -> Batches<P::Item> {
    let plan = Arc::new(batch_indices(samples.len(), config, epoch));
    let total = plan.len();
    let (sender, receiver) = sync_channel::<Message<P::Item>>(config.prefetch.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let sender = Arc::new(Mutex::new(sender));
    let workers = (0..config.workers.max(1))
        .map(|_| {
            let (plan, samples, prepare, next) = (plan.clone(), samples.clone(), prepare.clone(), next.clone());
            let sender = sender.lock().expect("not poisoned").clone();
            std::thread::spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = plan.get(index) else { break };
                    let items = batch.iter().map(|&i| prepare.prepare(&samples[i])).collect::<Result<Vec<_>, _>>();
                    if sender.send((index, items)).is_err() {
                        break; // the consumer is gone
                    }
                }
            })
        })
        .collect();
    Batches { receiver, pending: BTreeMap::new(), next: 0, total, started: Instant::now(), throughput: Throughput::default(), workers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Target;

    fn samples(n: usize) -> Arc<Vec<Sample>> {
        Arc::new(
            (0..n)
                .map(|i| Sample { id: i.to_string(), image: None, depth: None, audio: None, text: None, target: Target::Class(i % 3) })
                .collect(),
        )
    }

    /// Slow for some samples, so that workers finish out of order.
    struct Jittery;
    impl Prepare for Jittery {
        type Item = usize;
        fn prepare(&self, sample: &Sample) -> Result<usize, DataError> {
            let i: usize = sample.id.parse().unwrap();
            std::thread::sleep(Duration::from_micros(((i * 7919) % 13) as u64 * 100));
            if i == 13 {
                return Err(DataError::Decode { path: "13.png".into(), message: "broken".into() });
            }
            Ok(i)
        }
    }

    #[test]
    fn order_depends_on_seed_and_epoch_not_on_workers() {
        let run = |workers: usize, epoch: u64| -> Vec<Result<Vec<usize>, String>> {
            let config = LoaderConfig { batch_size: 4, workers, shuffle: Some(7), drop_last: false, prefetch: 2 };
            batches(samples(30), Arc::new(Jittery), &config, epoch).map(|b| b.map_err(|e| e.to_string())).collect()
        };
        let one = run(1, 0);
        assert_eq!(one.len(), 8);
        assert_eq!(run(4, 0), one, "same batches with 4 workers");
        assert_ne!(run(4, 1), one, "another epoch, another order");
        let flat: Vec<usize> = one.iter().flat_map(|b| b.clone().unwrap_or_default()).collect();
        assert_eq!(flat.len(), 30 - 4, "the batch holding sample 13 fails as a whole");
        assert!(one.iter().any(|b| b.as_ref().is_err_and(|e| e == "13.png: cannot decode: broken")));
    }

    #[test]
    fn file_order_and_drop_last() {
        let config = LoaderConfig { batch_size: 4, workers: 2, shuffle: None, drop_last: true, prefetch: 1 };
        assert_eq!(batch_indices(10, &config, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        let shuffled = batch_indices(10, &LoaderConfig { shuffle: Some(1), ..config }, 0).concat();
        assert_eq!(shuffled.len(), 8, "two full batches of a shuffled order");
        let mut distinct = shuffled.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
        assert_ne!(shuffled, (0..8).collect::<Vec<_>>(), "shuffled");
    }

    #[test]
    fn dropping_early_stops_the_workers() {
        let config = LoaderConfig { batch_size: 1, workers: 2, shuffle: None, drop_last: false, prefetch: 1 };
        let mut it = batches(samples(100), Arc::new(Jittery), &config, 0);
        assert_eq!(it.next().unwrap().unwrap(), vec![0]);
        assert_eq!(it.throughput().samples, 1);
        drop(it); // must not hang
    }
}
