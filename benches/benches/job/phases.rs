//! Where one training step's time goes, by phase: the loop of `train::train` taken apart, each
//! part timed (`flex` runs eagerly, so the clock sees each part's work).
//!
//! The loop is the trainer's for a MoPE-family model, step for step (the same seeds, data
//! order, schedule, clipping and optimiser), with the classifier's forward pass spelled out so
//! that each layer and each layer's prompts are timed apart; its mean loss equals the one
//! `mope train` reports for the same experiment, which the output shows.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, ElementConversion, Tensor};
use mope_core::{LayerPromptSource, PromptableEncoder, forward_prompted};
use serde::{Deserialize, Serialize};
use train::{ExperimentSpec, FeatureCache, Logits, MainUse, Model, Objective, Setup, TrainBackend, TrainOptimizer, clip_global_norm};

/// Seconds per step of each phase, averaged over an epoch.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Waiting for the loader (decoding, tokenising) and collating the batch into tensors.
    pub data: f64,
    /// Looking the complementary features up in the cache.
    pub features: f64,
    /// The main encoder's embeddings.
    pub embed: f64,
    /// Per layer: the frozen layer itself (prompt splicing included).
    pub layers: Vec<f64>,
    /// All layers' prompts: routers, expert mixtures, static and mapped prompts.
    pub prompts: f64,
    /// Pooling, head, task loss and importance loss.
    pub head_and_loss: f64,
    /// The backward pass.
    pub backward: f64,
    /// Gradient clipping and the AdamW step.
    pub optimizer: f64,
    /// Reading the step's losses back (what the progress line and the log show).
    pub metrics: f64,
    /// Mean task loss over the epoch (to compare with `mope train`'s).
    pub mean_loss: f64,
    /// Steps timed.
    pub steps: usize,
}

impl PhaseTimes {
    /// Seconds of a whole step.
    pub fn step(&self) -> f64 {
        self.data + self.features + self.embed + self.layers.iter().sum::<f64>() + self.prompts + self.head_and_loss + self.backward + self.optimizer + self.metrics
    }

    /// The rows of the phase table: name and seconds per step.
    pub fn rows(&self) -> Vec<(String, f64)> {
        let mut rows = vec![("data and collation".to_string(), self.data), ("feature lookup".into(), self.features), ("embeddings".into(), self.embed)];
        rows.extend(self.layers.iter().enumerate().map(|(i, &s)| (format!("forward, layer {i}"), s)));
        rows.extend([
            ("prompts: routers, mixing, mapped".to_string(), self.prompts),
            ("pooling, head, losses".into(), self.head_and_loss),
            ("backward".into(), self.backward),
            ("clipping and optimiser".into(), self.optimizer),
            ("metrics (losses read back)".into(), self.metrics),
        ]);
        rows
    }
}

/// A prompt source that clocks each layer (the time from one layer's prompts to the next's)
/// and the prompts themselves.
struct Timed<'a, S> {
    inner: &'a mut S,
    last: Instant,
    layers: Vec<f64>,
    prompts: f64,
}

impl<B: Backend, S: LayerPromptSource<B>> LayerPromptSource<B> for Timed<'_, S> {
    fn prompts(&mut self, layer: usize, hidden: &Tensor<B, 3>, mask_pad: Option<&Tensor<B, 2, Bool>>) -> Option<Tensor<B, 3>> {
        let start = Instant::now();
        if layer > 0 {
            self.layers[layer - 1] += (start - self.last).as_secs_f64();
        }
        let prompts = self.inner.prompts(layer, hidden, mask_pad);
        self.last = Instant::now();
        self.prompts += (self.last - start).as_secs_f64();
        prompts
    }

    fn replaces_unread(&self, layer: usize) -> bool {
        self.inner.replaces_unread(layer)
    }
}

/// One epoch of `spec`'s training loop, timed by phase.
pub fn profile<B: TrainBackend>(spec: &ExperimentSpec, setup: Setup<B>, splits: &train::Splits) -> Result<PhaseTimes> {
    let device: B::Device = Default::default();
    let Setup { mut model, prepare, objective, feature_stores, .. } = setup;
    let t = &spec.train;
    let mut optimizer: TrainOptimizer<Model<B>, B> = AdamWConfig::new().with_weight_decay(t.weight_decay as f32).init();
    let samples = Arc::new(splits.train.samples.clone());
    let mut loader = data::LoaderConfig::new(t.batch_size);
    loader.shuffle = Some(t.seed);
    loader.drop_last = t.drop_last;
    let steps_per_epoch = data::batch_indices(samples.len(), &loader, 0).len();
    anyhow::ensure!(model.main_use() == MainUse::Encoded, "the phase profile covers the prompted methods");
    let mut cache = FeatureCache::for_model(&model, feature_stores, false);
    let first_epoch = train::epoch_samples(&samples, &loader, 0);
    let epoch_prepare = cache.prepare_for(&prepare, "train", &first_epoch);
    anyhow::ensure!(epoch_prepare.skip().complementary, "the feature cache does not cover the first epoch's samples: run the job once first");
    B::seed(&device, t.seed.wrapping_add(1));
    let mut times = PhaseTimes { layers: Vec::new(), ..Default::default() };
    let mut loss_sum = 0.0;
    let mut waited = Instant::now();
    for (step, batch) in data::batches(samples.clone(), epoch_prepare, &loader, 0).enumerate() {
        let items = batch?;
        let main = prepare.main_batch::<B>(&items, &device)?;
        let mut clock = Instant::now();
        let mut lap = || {
            let now = Instant::now();
            let seconds = (now - clock).as_secs_f64();
            clock = now;
            seconds
        };
        times.data += (Instant::now() - waited).as_secs_f64();
        let feature = cache.complementary(&model, &prepare, "train", &items, &device)?.context("the model reads a complementary feature")?;
        times.features += lap();
        let Model::Fusion(classifier) = &model else { bail!("the phase profile covers MoPE-family models") };
        let embedded = classifier.main.embed(&main);
        times.embed += lap();
        let prompts = classifier.prompts.as_ref().context("a prompted method")?;
        let mut run = prompts.run(Some(feature.clone()));
        times.prompts += lap();
        let layers = classifier.main.num_layers();
        let mut timed = Timed { inner: &mut run, last: Instant::now(), layers: vec![0.0; layers], prompts: 0.0 };
        let out = forward_prompted(&classifier.main, embedded, &mut timed);
        times.layers.resize(layers, 0.0);
        timed.layers[layers - 1] += timed.last.elapsed().as_secs_f64();
        times.layers.iter_mut().zip(&timed.layers).for_each(|(total, s)| *total += s);
        times.prompts += timed.prompts;
        lap();
        let logits = classifier.head_logits(out.pooled, feature);
        let importance = classifier.mean_importance_loss(&run.routing, &device);
        let task = objective.loss(&Logits::Scores(logits), &items);
        let loss = task.clone() + importance.clone() * t.importance_weight;
        times.head_and_loss += lap();
        let grads = loss.backward();
        times.backward += lap();
        let lr = t.schedule.rate(t.lr, step, steps_per_epoch * t.epochs, steps_per_epoch);
        // The emoji experiments train no complementary prompts: one learning-rate group.
        let mut groups = model.gradient_groups(grads);
        clip_global_norm(&model, &mut groups.iter_mut().map(|(_, g)| g).collect::<Vec<_>>(), t.grad_clip);
        for (_, grads) in groups {
            model = optimizer.step(lr, model, grads);
        }
        times.optimizer += lap();
        loss_sum += task.into_scalar().elem::<f64>();
        let _ = importance.into_scalar().elem::<f64>();
        times.metrics += lap();
        times.steps += 1;
        waited = Instant::now();
    }
    let steps = times.steps.max(1) as f64;
    for seconds in [&mut times.data, &mut times.features, &mut times.embed, &mut times.prompts, &mut times.head_and_loss, &mut times.backward, &mut times.optimizer, &mut times.metrics]
        .into_iter()
        .chain(times.layers.iter_mut())
    {
        *seconds /= steps;
    }
    times.mean_loss = loss_sum / steps;
    Ok(times)
}
