//! The training loop: seeded, with AdamW per learning-rate group, the schedule, global gradient
//! clipping, complementary features cached across epochs when they cannot change, validation
//! every epoch, the best adapter kept, a resumable checkpoint of the last epoch, and every number
//! written to the run directory ([`crate::run_dir`]).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::ElementConversion;
use data::batches;
use serde_json::json;

use crate::checkpoint::{self, LoopState, TrainOptimizer};
use crate::dataset::{Splits, epoch_samples, loader_config};
use crate::device::TrainBackend;
use crate::evaluation::evaluate;
use crate::predictions::predictions_file;
use crate::feature_cache::FeatureCache;
use crate::model::{LearningRateGroup, Model};
use crate::objective::Objective;
use crate::optim::clip_global_norm;
use crate::progress::{Progress, ProgressMode};
use crate::run_dir::{RunDir, RunResult, RunTask};
use crate::run_lock::RunLock;
use crate::setup::Setup;
use crate::spec::ExperimentSpec;

/// How [`train`] runs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue from `<run>/last/` if it exists.
    pub resume: bool,
    /// Replace a run the directory holds (without it or `resume`, such a directory is refused).
    pub overwrite: bool,
    /// Progress output.
    pub progress: ProgressMode,
    /// Loader worker threads (0: one per core).
    pub workers: usize,
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

/// Trains the experiment in `run`, and evaluates the best epoch's adapter on the test split
/// (the validation split where there is none).
pub fn train<B: TrainBackend>(spec: &ExperimentSpec, setup: Setup<B>, splits: &Splits, run: &RunDir, options: &TrainOptions) -> Result<RunResult> {
    let device: B::Device = Default::default();
    // One writer per run directory, until this function returns.
    let _lock = RunLock::acquire(run.path())?;
    RunDir::refuse_unasked_overwrite(run.path(), options.resume, options.overwrite)?;
    let Setup { mut model, prepare, objective, labels, classifier, base_model, feature_stores } = setup;
    let t = &spec.train;
    let summary = model.summary();
    let model_config = classifier;
    let method = spec.model.method.name();
    let mut optimizer: TrainOptimizer<Model<B>, B> = AdamWConfig::new().with_weight_decay(t.weight_decay as f32).init();
    let mut state = LoopState { epochs_done: 0, step: 0, best: None, seconds: 0.0 };
    if options.resume {
        run.recover(None)?;
        // Nothing to continue from: starting again would remove a result or a best adapter.
        let kept = ["result.json", "best"].into_iter().filter(|name| run.path().join(name).exists()).collect::<Vec<_>>();
        if !checkpoint::exists(&run.last()) && !kept.is_empty() {
            anyhow::bail!(
                "{} holds {} but no checkpoint to continue from ({} is missing): --overwrite trains it again from the start, or choose another --run-dir",
                run.path().display(),
                kept.join(" and "),
                run.last().display()
            );
        }
    }
    if options.resume && checkpoint::exists(&run.last()) {
        (model, optimizer, state) = checkpoint::load(&run.last(), model, optimizer)?;
        run.recover(state.best.map(|(_, epoch)| epoch))?;
        run.truncate_metrics_after(state.epochs_done)?;
        run.write_config(spec)?;
        eprintln!("resuming {} after epoch {} (step {})", run.path().display(), state.epochs_done, state.step);
    } else {
        run.start(spec, &RunTask { objective, labels: labels.clone() })?;
    }

    let train_samples = Arc::new(splits.train.samples.clone());
    let val_samples = Arc::new(splits.val.samples.clone());
    let train_loader = loader_config(t.batch_size, options.workers, Some(t.seed), t.drop_last);
    let steps_per_epoch = data::batch_indices(train_samples.len(), &train_loader, 0).len();
    anyhow::ensure!(
        steps_per_epoch > 0,
        "{} training samples make no full batch of train.batch_size = {} with train.drop_last = true (lower the batch size, set train.drop_last = false, or give the training split more samples{})",
        train_samples.len(),
        t.batch_size,
        crate::dataset::split_size_hint(&spec.data, data::SplitName::Train)
    );
    let total_steps = steps_per_epoch * t.epochs;
    let mut cache = FeatureCache::for_model(&model, feature_stores, objective.is_dense());
    if options.progress != ProgressMode::Quiet {
        for line in cache.describe("train", &epoch_samples(&train_samples, &train_loader, state.epochs_done as u64)) {
            eprintln!("{line}");
        }
    }
    for epoch in state.epochs_done..t.epochs {
        if let Some((value, best_epoch)) = state.best
            && t.patience > 0
            && state.epochs_done >= t.min_epochs
            && state.epochs_done >= best_epoch + t.patience
        {
            eprintln!(
                "stopping after epoch {}: no better validation {} than {value:.2} (epoch {best_epoch}) for {} epochs (train.patience{})",
                state.epochs_done,
                objective.primary_metric(),
                t.patience,
                if t.min_epochs > 0 { format!(", after at least train.min_epochs = {}", t.min_epochs) } else { String::new() }
            );
            break;
        }
        // Reseeded every epoch: routing noise and dropout depend on the seed and the epoch only,
        // so a resumed run draws what an uninterrupted one would.
        B::seed(&device, t.seed.wrapping_add(1 + epoch as u64));
        let start = Instant::now();
        let epoch_prepare = cache.prepare_for(&prepare, "train", &epoch_samples(&train_samples, &train_loader, epoch as u64));
        let batches = batches(train_samples.clone(), epoch_prepare, &train_loader, epoch as u64);
        let mut bar = Progress::new(options.progress, format!("epoch {}/{}", epoch + 1, t.epochs), batches.len());
        let (mut loss_sum, mut importance_sum, mut seen, mut samples) = (0.0, 0.0, 0usize, 0usize);
        for batch in batches {
            let items = batch?;
            let lr = t.schedule.rate(t.lr, state.step, total_steps, steps_per_epoch);
            let lr_complementary = t.schedule.rate(t.complementary_lr, state.step, total_steps, steps_per_epoch);
            let inputs = cache.inputs(&model, &prepare, "train", &items, &device)?;
            let out = objective.forward(&model, inputs);
            let task = objective.loss(&out.logits, &items);
            let loss = task.clone() + out.importance_loss.clone() * t.importance_weight;
            let mut groups = model.gradient_groups(loss.backward());
            let grad_norm = clip_global_norm(&model, &mut groups.iter_mut().map(|(_, g)| g).collect::<Vec<_>>(), t.grad_clip);
            let (task, importance) = (task.into_scalar().elem::<f64>(), out.importance_loss.into_scalar().elem::<f64>());
            if !(task.is_finite() && importance.is_finite() && grad_norm.is_finite()) {
                anyhow::bail!(non_finite_step(epoch + 1, state.step + 1, (task, importance, grad_norm), run, state.epochs_done));
            }
            for (group, grads) in groups {
                let rate = match group {
                    LearningRateGroup::Main => lr,
                    LearningRateGroup::Complementary => lr_complementary,
                };
                model = optimizer.step(rate, model, grads);
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
        let evaluated = evaluate(&model.valid(), &prepare, objective, &mut cache, "val", &val_samples, t.eval_batch_size, options.workers, options.progress)?;
        let val = evaluated.report();
        let val_seconds = val_start.elapsed().as_secs_f64();
        let value = val.metric(objective.primary_metric()).expect("the primary metric is always reported");
        let improved = state.best.is_none_or(|(best, _)| value > best);
        if improved {
            state.best = Some((value, epoch + 1));
            // Waits until this epoch's checkpoint counts it as the best (see run_dir).
            run.save_best(epoch + 1, |dir| {
                model.save_adapter(dir, method, base_model.clone(), model_config.clone())?;
                match evaluated.predictions() {
                    Some(predictions) => predictions.write(&dir.join(predictions_file("val"))),
                    None => Ok(()),
                }
            })?;
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
        run.promote_best()?;
    }

    // The best epoch's adapter, on the test split.
    let (best_value, best_epoch) = state.best.expect("at least one epoch ran");
    let (best_model, _) = model.valid().load_adapter(&run.best())?;
    let (test_name, test_samples) = match &splits.test {
        Some(test) => ("test", Arc::new(test.samples.clone())),
        None => ("val", val_samples.clone()),
    };
    let evaluated = evaluate(&best_model, &prepare, objective, &mut cache, test_name, &test_samples, t.eval_batch_size, options.workers, options.progress)?;
    if let Some(predictions) = evaluated.predictions() {
        predictions.write(&run.path().join(predictions_file(test_name)))?;
    }
    let test = evaluated.report();
    run.log(&json!({ "event": "test", "split": test_name, "epoch": best_epoch, "report": test }))?;
    let result = RunResult::new::<B>(spec, objective, &summary, run, best_epoch, best_value, test_name, test, &state, &device)?;
    run.write_result(&result)?;
    Ok(result)
}
