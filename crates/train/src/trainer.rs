//! The training loop: seeded, with AdamW per learning-rate group, the schedule, global gradient
//! clipping, complementary features cached across epochs when they cannot change, validation
//! every epoch, the best adapter kept, a resumable checkpoint of the last epoch, and every number
//! written to the run directory ([`crate::run_dir`]).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use backbones::presets::default_weights_dir;
use backbones::{AnyEncoder, EncoderOptions, LoadedEncoder, load_encoder};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, backend::Backend};
use data::{LoaderConfig, Sample, batches};
use mope_core::{MopePromptsConfig, MultimodalClassifierConfig, RouterSettings, materialize};
use ops::Kernels;
use pmoe::PmoeConfig;
use serde_json::json;

use crate::checkpoint::{self, LoopState, TrainOptimizer};
use crate::dataset::Splits;
use crate::device::TrainBackend;
use crate::feature_cache::FeatureCache;
use crate::model::{ExpertsModel, Model, PixelAdapt};
use data::Task;

use crate::evaluation::{EvalReport, Evaluation, Objective};
use crate::optim::clip_global_norm;
use crate::pair::PairPrepare;
use crate::progress::{Progress, ProgressMode};
use crate::run_dir::{RunDir, RunResult, RunTask};
use crate::run_lock::RunLock;
use crate::spec::ExperimentSpec;

/// A model ready to train or evaluate, with what it needs around it.
#[derive(Debug)]
pub struct Setup<B: Backend> {
    /// The model, encoders frozen.
    pub model: Model<B>,
    /// Sample preparation for its encoders.
    pub prepare: Arc<PairPrepare>,
    /// Loss and metrics.
    pub objective: Task,
    /// Class (label) names.
    pub labels: Vec<String>,
    /// The model's configuration (saved in adapters): a `MultimodalClassifierConfig` or a
    /// `PmoeConfig`.
    pub classifier: serde_json::Value,
    /// Names of the encoders (saved in adapters).
    pub base_model: serde_json::Value,
    /// Where complementary features are kept between runs (see [`FeatureCache`]).
    pub feature_store: Option<std::path::PathBuf>,
}

/// The classifier configuration a MoPE-family experiment asks for, with `num_outputs` head
/// outputs.
///
/// # Panics
/// If the experiment is of the pMoE family.
pub fn classifier_config(spec: &ExperimentSpec, num_outputs: usize) -> MultimodalClassifierConfig {
    let p = &spec.prompts;
    let router = RouterSettings::new()
        .with_d_inter(p.d_inter)
        .with_d_cross(p.d_cross)
        .with_temperature(p.temperature)
        .with_noise_std(p.noise_std)
        .with_top_k((p.top_k > 0).then_some(p.top_k))
        .with_key_seed(spec.train.seed);
    let prompts = MopePromptsConfig::new(0, 0, 0)
        .with_static_len(p.static_len)
        .with_num_experts(p.num_experts)
        .with_expert_len(p.expert_len)
        .with_mapped_len(p.mapped_len)
        .with_prompted_layers((!p.prompted_layers.is_empty()).then(|| p.prompted_layers.clone()))
        .with_mapper_hidden(p.mapper_hidden)
        .with_router(router);
    let method = spec.model.method.fusion().expect("a two-encoder method");
    MultimodalClassifierConfig::new(method, num_outputs, prompts)
        .with_complementary_prompt_len(spec.model.complementary_prompt_len)
        .with_importance_threshold(spec.train.importance_threshold)
}

/// The pMoE configuration a pMoE-family experiment asks for, with `num_outputs` head outputs.
///
/// # Panics
/// If the experiment is of the MoPE family.
pub fn pmoe_config(spec: &ExperimentSpec, num_outputs: usize) -> PmoeConfig {
    let p = &spec.pmoe;
    PmoeConfig::new(num_outputs)
        .with_combine(spec.model.method.combine().expect("a method over experts"))
        .with_prompt_len(p.prompt_len)
        .with_depth(p.depth)
        .with_carry(p.carry)
        .with_temperature(p.temperature)
}

fn weights_dir(spec: &ExperimentSpec) -> std::path::PathBuf {
    if spec.model.weights_dir.as_os_str().is_empty() { default_weights_dir() } else { spec.model.weights_dir.clone() }
}

fn cache_dir(spec: &ExperimentSpec) -> Option<std::path::PathBuf> {
    (!spec.data.cache_dir.as_os_str().is_empty()).then(|| spec.data.cache_dir.clone())
}

impl<B: Kernels> Setup<B> {
    /// Loads the encoders the experiment names and builds the model.
    ///
    /// Hybrid encoders keep their frozen CNN's map of each image on the CPU backend
    /// ([`backbones::frozen_map_memo`]): computed once per image instead of at every step.
    pub fn load(spec: &ExperimentSpec, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        if spec.model.is_pmoe() {
            return Self::load_experts(spec, labels, objective, device);
        }
        if matches!(objective, Task::Segmentation { .. }) && backbones::modality_of(&spec.model.main)? != backbones::Modality::Image {
            anyhow::bail!("segmentation needs an image main encoder (ViT, Swin or a hybrid); `{}` is not one", spec.model.main);
        }
        let weights = weights_dir(spec);
        let options = |depth| EncoderOptions {
            depth,
            audio_seconds: spec.model.audio_seconds,
            image_size: spec.model.image_size,
            frozen_map_memo_bytes: frozen_map_memo_bytes::<B>(device),
            ..EncoderOptions::default()
        };
        let main = load_encoder(&spec.model.main, &weights, options(spec.model.main_reads_depth), device)
            .with_context(|| format!("main encoder `{}`", spec.model.main))?;
        let complementary = load_encoder(&spec.model.complementary, &weights, options(spec.model.complementary_reads_depth), device)
            .with_context(|| format!("complementary encoder `{}`", spec.model.complementary))?;
        Self::from_encoders(spec, main, complementary, labels, objective, device)
    }

    /// Builds the classifier around two loaded encoders.
    pub fn from_encoders(
        spec: &ExperimentSpec,
        main: LoadedEncoder<B>,
        complementary: LoadedEncoder<B>,
        labels: Vec<String>,
        objective: Task,
        device: &B::Device,
    ) -> Result<Self> {
        use mope_core::PromptableEncoder;
        if matches!(objective, Task::Segmentation { .. }) && (main.encoder.num_layers() == 0 || !matches!(main.preparer, backbones::InputPreparer::Image(..))) {
            anyhow::bail!("segmentation needs a prompted image main encoder (ViT, Swin or a hybrid); `{}` is not one", main.name);
        }
        let method = spec.model.method.fusion().context("a two-encoder method (MoPE and its baselines) needs `model.main` and `model.complementary`")?;
        if main.encoder.num_layers() == 0 && method.prompts_main() {
            anyhow::bail!("main encoder `{}` has no layer to prompt: use it as the complementary encoder, or with method late-fusion or fine-tuning", main.name);
        }
        if complementary.encoder.num_layers() == 0 && spec.model.complementary_prompt_len > 0 {
            anyhow::bail!("complementary encoder `{}` has no layer to prompt: set model.complementary_prompt_len = 0", complementary.name);
        }
        let cache_dir = cache_dir(spec);
        let feature_store = cache_dir.as_ref().map(|dir| {
            let m = &spec.model;
            let key = format!("{}|{}|{}|{}|{}", complementary.name, m.image_size, m.audio_seconds, m.complementary_reads_depth, spec.data.root.display());
            dir.join("features").join(data::cache_key(&key))
        });
        B::seed(device, spec.train.seed);
        // Trainable encoder parts (the hybrid's projection) are drawn from the seed first.
        let main_encoder = materialize(main.encoder);
        let classifier = classifier_config(spec, objective.num_outputs());
        let model = Model::Fusion(classifier.init(main_encoder, complementary.encoder, device));
        Ok(Self {
            model,
            prepare: Arc::new(PairPrepare::new(main.preparer, Some(complementary.preparer), cache_dir.map(|c| c.join("images")))),
            objective,
            labels,
            classifier: serde_json::to_value(&classifier)?,
            base_model: json!({ "main": main.name, "complementary": complementary.name }),
            feature_store,
        })
    }

    /// Loads the image experts a pMoE-family experiment names and builds the model.
    fn load_experts(spec: &ExperimentSpec, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        let weights = weights_dir(spec);
        let options = EncoderOptions {
            image_size: spec.model.image_size,
            depth: spec.model.main_reads_depth,
            frozen_map_memo_bytes: frozen_map_memo_bytes::<B>(device),
            ..EncoderOptions::default()
        };
        let experts = spec
            .model
            .experts
            .iter()
            .enumerate()
            .map(|(k, name)| load_encoder(name, &weights, options, device).with_context(|| format!("expert {k} `{name}` (model.experts)")))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_experts(spec, experts, labels, objective, device)
    }

    /// Builds a pMoE-family model around loaded image experts. They all read one prepared
    /// image: the largest crop any of them asks for, with the first such expert's
    /// normalisation, adapted on the device to each expert's own ([`PixelAdapt`]).
    pub fn from_experts(spec: &ExperimentSpec, experts: Vec<LoadedEncoder<B>>, labels: Vec<String>, objective: Task, device: &B::Device) -> Result<Self> {
        use mope_core::PromptableEncoder;
        let mut preprocess = Vec::with_capacity(experts.len());
        for (k, e) in experts.iter().enumerate() {
            match &e.preparer {
                backbones::InputPreparer::Image(modality, pre) if e.encoder.num_layers() > 0 => preprocess.push((*modality, *pre)),
                _ => anyhow::bail!("expert {k} `{}` (model.experts): pMoE experts are image encoders with layers to prompt (ViT, Swin or a hybrid)", e.name),
            }
        }
        let (_, shared) = *preprocess.iter().max_by_key(|(_, p)| p.size).context("`model.experts` is empty")?;
        let modality = preprocess[0].0;
        let config = pmoe_config(spec, objective.num_outputs());
        let names: Vec<String> = experts.iter().map(|e| e.name.clone()).collect();
        let shallowest = experts.iter().map(|e| e.encoder.num_layers()).min().unwrap_or(0);
        anyhow::ensure!(config.depth <= shallowest, "pmoe.depth = {} exceeds the shallowest expert's {shallowest} layers", config.depth);
        B::seed(device, spec.train.seed);
        // Trainable encoder parts (the hybrids' projections) are drawn from the seed first.
        let encoders: Vec<AnyEncoder<B>> = experts.into_iter().map(|e| materialize(e.encoder)).collect();
        let classifier = config.init(encoders, device);
        let model = Model::Experts(ExpertsModel { classifier, inputs: preprocess.iter().map(|(_, p)| PixelAdapt::new(&shared, p)).collect() });
        Ok(Self {
            model,
            prepare: Arc::new(PairPrepare::new(backbones::InputPreparer::Image(modality, shared), None, cache_dir(spec).map(|c| c.join("images")))),
            objective,
            labels,
            classifier: serde_json::to_value(&config)?,
            base_model: json!({ "experts": names }),
            feature_store: None,
        })
    }
}

/// The bytes of frozen CNN maps each hybrid encoder keeps: 1 GiB on the CPU backend (`flex`),
/// where the images are on the host anyway; none on a GPU, where keeping them would copy every
/// batch back to the host.
fn frozen_map_memo_bytes<B: Backend>(device: &B::Device) -> usize {
    if B::name(device).contains("flex") { 1 << 30 } else { 0 }
}

/// How [`train`] runs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue from `<run>/last/` if it exists.
    pub resume: bool,
    /// Progress output.
    pub progress: ProgressMode,
    /// Loader worker threads (0: one per core).
    pub workers: usize,
}

fn loader(batch_size: usize, workers: usize, shuffle: Option<u64>, drop_last: bool) -> LoaderConfig {
    let mut config = LoaderConfig::new(batch_size);
    if workers > 0 {
        config.workers = workers;
        config.prefetch = 2 * workers;
    }
    config.shuffle = shuffle;
    config.drop_last = drop_last;
    config
}

/// The error of a training step whose loss or gradient is not finite (nothing of it is applied):
/// where it happened, the values, and the last good checkpoint to resume from.
fn non_finite_step(epoch: usize, step: usize, (task, importance, grad_norm): (f64, f64, f64), run: &RunDir, epochs_done: usize) -> String {
    let checkpoint = if epochs_done == 0 {
        "no checkpoint was saved yet: check the weights and the inputs for NaN or Inf, or lower train.lr".to_string()
    } else {
        format!(
            "the last good checkpoint is {} (after epoch {epochs_done}): resume from it with --resume and a lower train.lr, or check the weights and the inputs",
            run.last().display()
        )
    };
    format!(
        "epoch {epoch}, step {step}: the training loss is not finite (task loss {task}, importance loss {importance}, gradient norm {grad_norm}); \
         the step was not applied; {checkpoint}"
    )
}

/// The samples of one epoch's batches, in batch order: with `drop_last`, the shuffled remainder
/// that makes no full batch is not among them (so the feature cache need not hold it).
pub fn epoch_samples(samples: &[Sample], loader: &LoaderConfig, epoch: u64) -> Vec<Sample> {
    data::pipeline::batch_indices(samples.len(), loader, epoch).concat().into_iter().map(|i| samples[i].clone()).collect()
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
) -> Result<EvalReport> {
    let device: B::Device = Default::default();
    let config = loader(batch_size, workers, None, false);
    let prepare = if cache.covers(split_name, samples) { Arc::new(prepare.main_only()) } else { prepare.clone() };
    let batches = batches(samples.clone(), prepare.clone(), &config, 0);
    let mut bar = Progress::new(progress, format!("eval {split_name}"), batches.len());
    let mut evaluation = Evaluation::new(objective);
    for batch in batches {
        let items = batch?;
        let main = prepare.main_batch::<B>(&items, &device)?;
        let feature = cache.features(model, &prepare, split_name, &items, &device)?;
        let out = objective.forward(model, &main, feature);
        let loss = objective.loss(&out.logits, &items).into_scalar().elem::<f64>();
        let importance = out.importance_loss.clone().into_scalar().elem::<f64>();
        evaluation.update(&out.logits, &items, &out.routing, loss, importance);
        bar.step(items.len(), String::new);
    }
    bar.finish();
    cache.flush()?;
    Ok(evaluation.report())
}

/// Trains the experiment in `run`, and evaluates the best epoch's adapter on the test split
/// (the validation split where there is none).
pub fn train<B: TrainBackend>(spec: &ExperimentSpec, setup: Setup<B>, splits: &Splits, run: &RunDir, options: &TrainOptions) -> Result<RunResult> {
    let device: B::Device = Default::default();
    // One writer per run directory, until this function returns.
    let _lock = RunLock::acquire(run.path())?;
    let Setup { mut model, prepare, objective, labels, classifier, base_model, feature_store } = setup;
    let t = &spec.train;
    let summary = model.summary();
    let model_config = classifier;
    let method = spec.model.method.name();
    let mut optimizer: TrainOptimizer<Model<B>, B> = AdamWConfig::new().with_weight_decay(t.weight_decay as f32).init();
    let mut state = LoopState { epochs_done: 0, step: 0, best: None, seconds: 0.0 };
    if options.resume && checkpoint::exists(&run.last()) {
        (model, optimizer, state) = checkpoint::load(&run.last(), model, optimizer)?;
        run.truncate_metrics_after(state.epochs_done)?;
        run.write_config(spec)?;
        eprintln!("resuming {} after epoch {} (step {})", run.path().display(), state.epochs_done, state.step);
    } else {
        run.start(spec, &RunTask { objective, labels: labels.clone() })?;
    }

    let train_samples = Arc::new(splits.train.samples.clone());
    let val_samples = Arc::new(splits.val.samples.clone());
    let train_loader = loader(t.batch_size, options.workers, Some(t.seed), t.drop_last);
    let steps_per_epoch = data::pipeline::batch_indices(train_samples.len(), &train_loader, 0).len();
    anyhow::ensure!(steps_per_epoch > 0, "{} training samples make no batch of {} (drop_last)", train_samples.len(), t.batch_size);
    let total_steps = steps_per_epoch * t.epochs;
    let mut cache = FeatureCache::for_model(&model, feature_store);
    if options.progress != ProgressMode::Quiet
        && let Some(line) = cache.describe("train", &epoch_samples(&train_samples, &train_loader, state.epochs_done as u64))
    {
        eprintln!("{line}");
    }
    for epoch in state.epochs_done..t.epochs {
        // Reseeded every epoch: routing noise and dropout depend on the seed and the epoch only,
        // so a resumed run draws what an uninterrupted one would.
        B::seed(&device, t.seed.wrapping_add(1 + epoch as u64));
        let start = Instant::now();
        let covered = cache.covers("train", &epoch_samples(&train_samples, &train_loader, epoch as u64));
        let epoch_prepare = if covered { Arc::new(prepare.main_only()) } else { prepare.clone() };
        let batches = batches(train_samples.clone(), epoch_prepare, &train_loader, epoch as u64);
        let mut bar = Progress::new(options.progress, format!("epoch {}/{}", epoch + 1, t.epochs), batches.len());
        let (mut loss_sum, mut importance_sum, mut seen, mut samples) = (0.0, 0.0, 0usize, 0usize);
        for batch in batches {
            let items = batch?;
            let lr = t.schedule.rate(t.lr, state.step, total_steps, steps_per_epoch);
            let lr_complementary = t.schedule.rate(t.complementary_lr, state.step, total_steps, steps_per_epoch);
            let main = prepare.main_batch::<B>(&items, &device)?;
            let feature = cache.features(&model, &prepare, "train", &items, &device)?;
            let out = objective.forward(&model, &main, feature);
            let task = objective.loss(&out.logits, &items);
            let loss = task.clone() + out.importance_loss.clone() * t.importance_weight;
            let mut grads = loss.backward();
            let mut complementary = model.complementary_prompts().map(|p| GradientsParams::from_module(&mut grads, p));
            let mut rest = GradientsParams::from_grads(grads, &model);
            let grad_norm = {
                let mut groups: Vec<&mut GradientsParams> = vec![&mut rest];
                groups.extend(complementary.as_mut());
                clip_global_norm(&model, &mut groups, t.grad_clip)
            };
            let (task, importance) = (task.into_scalar().elem::<f64>(), out.importance_loss.into_scalar().elem::<f64>());
            if !(task.is_finite() && importance.is_finite() && grad_norm.is_finite()) {
                anyhow::bail!(non_finite_step(epoch + 1, state.step + 1, (task, importance, grad_norm), run, state.epochs_done));
            }
            model = optimizer.step(lr, model, rest);
            if let Some(grads) = complementary {
                model = optimizer.step(lr_complementary, model, grads);
            }
            loss_sum += task;
            importance_sum += importance;
            seen += 1;
            samples += items.len();
            state.step += 1;
            if t.log_every > 0 && state.step.is_multiple_of(t.log_every) {
                run.log(&json!({ "event": "step", "epoch": epoch + 1, "step": state.step, "lr": lr, "loss": task,
                    "importance_loss": importance, "grad_norm": grad_norm }))?;
            }
            bar.step(items.len(), || format!("loss {:.4}", loss_sum / seen as f64));
        }
        bar.finish();
        cache.flush()?;
        let train_seconds = start.elapsed().as_secs_f64();
        state.seconds += train_seconds;
        let val_start = Instant::now();
        let val = evaluate(&model.valid(), &prepare, objective, &mut cache, "val", &val_samples, t.eval_batch_size, options.workers, options.progress)?;
        let val_seconds = val_start.elapsed().as_secs_f64();
        let value = val.metric(objective.primary_metric()).expect("the primary metric is always reported");
        let improved = state.best.is_none_or(|(best, _)| value > best);
        if improved {
            state.best = Some((value, epoch + 1));
            model.save_adapter(&run.best(), method, base_model.clone(), model_config.clone())?;
        }
        state.epochs_done = epoch + 1;
        run.log(&json!({ "event": "epoch", "epoch": epoch + 1, "step": state.step,
            "lr": t.schedule.rate(t.lr, state.step.saturating_sub(1), total_steps, steps_per_epoch),
            "train_loss": loss_sum / seen.max(1) as f64, "train_importance_loss": importance_sum / seen.max(1) as f64,
            "train_seconds": train_seconds, "train_samples_per_second": samples as f64 / train_seconds,
            "val_seconds": val_seconds, "val_samples_per_second": val_samples.len() as f64 / val_seconds, "val": val, "best": improved }))?;
        eprintln!(
            "epoch {}/{}: train loss {:.4}, val {} {:.2}{} ({train_seconds:.1} s)",
            epoch + 1,
            t.epochs,
            loss_sum / seen.max(1) as f64,
            objective.primary_metric(),
            value,
            if improved { " (best)" } else { "" }
        );
        checkpoint::save(&run.last(), &model, &optimizer, &state, base_model.clone(), model_config.clone(), method)?;
    }

    // The best epoch's adapter, on the test split.
    let (best_value, best_epoch) = state.best.expect("at least one epoch ran");
    let (best_model, _) = model.valid().load_adapter(&run.best())?;
    let (test_name, test_samples) = match &splits.test {
        Some(test) => ("test", Arc::new(test.samples.clone())),
        None => ("val", val_samples.clone()),
    };
    let test = evaluate(&best_model, &prepare, objective, &mut cache, test_name, &test_samples, t.eval_batch_size, options.workers, options.progress)?;
    run.log(&json!({ "event": "test", "split": test_name, "epoch": best_epoch, "report": test }))?;
    let result = RunResult::new::<B>(spec, objective, &summary, run, best_epoch, best_value, test_name, test, &state, &device)?;
    run.write_result(&result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_leaves_out_the_remainder_that_makes_no_full_batch() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample { id: format!("s{i}"), image: None, depth: None, audio: None, text: None, target: data::Target::Class(0) })
            .collect();
        let ids = |loader: &LoaderConfig, epoch| epoch_samples(&samples, loader, epoch).into_iter().map(|s| s.id).collect::<Vec<_>>();
        let dropping = loader(2, 0, Some(7), true);
        let (first, second) = (ids(&dropping, 0), ids(&dropping, 1));
        assert_eq!((first.len(), second.len()), (4, 4));
        let mut all = first.clone();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "each sample at most once");
        let keeping = ids(&loader(2, 0, Some(7), false), 0);
        assert_eq!(keeping.len(), 5);
        assert_eq!(keeping[..4], first[..], "the same shuffle, the remainder last");
    }
}
