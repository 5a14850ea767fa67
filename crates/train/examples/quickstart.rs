//! Quick start: MoPE and its baselines on a small synthetic paired task, on the CPU.
//!
//! Each sample pairs a *main* token sequence holding a topic token (one of 4) with a
//! *complementary* sequence holding a modifier token (one of 2); the label is
//! `(topic + modifier) mod 4`, so neither modality alone predicts it and a linear head on the
//! concatenated features cannot either. Both encoders are small random transformers, frozen.
//! Every method trains under the adapter contract: the trainable-parameter line, a training run,
//! held-out accuracy, per-expert routing, and an adapter saved, reloaded and checked.
//!
//! Run with `cargo run -p train --example quickstart`. This is a demonstration of the library on
//! synthetic data, not a result of the paper: `cargo xtask reproduce` is the real job.

use std::time::Instant;

use backbones::{Pooling, TokenBatch, TokenEncoder, TokenEncoderConfig};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use mope_core::{FusionMethod, MopePromptsConfig, MultimodalClassifier, MultimodalClassifierConfig, ParamSummary, RoutingStats, load_adapter, materialize, save_adapter};
use ops::Kernels;

type AB = Autodiff<Flex>;
type Model<B> = MultimodalClassifier<B, TokenEncoder<B>, TokenEncoder<B>>;

const VOCAB: usize = 64;
const MAIN_LEN: usize = 10;
const COMP_LEN: usize = 8;
const BATCH: usize = 32;
const STEPS: usize = 400;
/// Weight of the importance loss in the training loss (official `--w_imp`).
const IMPORTANCE_WEIGHT: f64 = 0.01;

/// A tiny deterministic generator for the synthetic samples.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Split {
    main: Vec<i64>,
    comp: Vec<i64>,
    labels: Vec<i64>,
}

fn make_split(n: usize, seed: u64) -> Split {
    let mut rng = Lcg(seed);
    let (mut main, mut comp, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let topic = rng.below(4) as i64;
        let modifier = rng.below(2) as i64;
        let sequence = |len: usize, special: i64, rng: &mut Lcg| {
            let at = 1 + rng.below(len as u64 - 1) as usize;
            (0..len)
                .map(|i| match i {
                    0 => 0, // [CLS]
                    i if i == at => special,
                    _ => 8 + rng.below(VOCAB as u64 - 8) as i64,
                })
                .collect::<Vec<_>>()
        };
        main.extend(sequence(MAIN_LEN, 1 + topic, &mut rng));
        comp.extend(sequence(COMP_LEN, 5 + modifier, &mut rng));
        labels.push((topic + modifier) % 4);
    }
    Split { main, comp, labels }
}

fn tokens<B: Backend>(ids: &[i64], len: usize) -> TokenBatch<B> {
    let device = Default::default();
    let n = ids.len() / len;
    TokenBatch {
        ids: Tensor::from_data(TensorData::new(ids.to_vec(), [n, len]), &device),
        mask_pad: Tensor::<B, 2, Int>::zeros([n, len], &device).bool(),
    }
}

fn encoders<B: Backend>(device: &B::Device) -> (TokenEncoder<B>, TokenEncoder<B>) {
    B::seed(device, 0);
    let config = |d: usize| TokenEncoderConfig::new(VOCAB, d, 4, 2 * d, 2).with_max_position(32).with_pooling(Pooling::Mean);
    (materialize(config(32).init(device)), materialize(config(24).init(device)))
}

fn build<B: Kernels>(method: FusionMethod) -> (Model<B>, MultimodalClassifierConfig) {
    let device = Default::default();
    let (main, comp) = encoders::<B>(&device);
    let prompts = MopePromptsConfig::new(0, 0, 0)
        .with_static_len(2)
        .with_num_experts(4)
        .with_expert_len(2)
        .with_mapped_len(1)
        .with_mapper_hidden(32);
    let config = MultimodalClassifierConfig::new(method, 4, prompts);
    B::seed(&device, 1);
    (config.init(main, comp, &device), config)
}

fn accuracy(model: &Model<Flex>, split: &Split) -> f64 {
    let out = model.forward(&tokens(&split.main, MAIN_LEN), &tokens(&split.comp, COMP_LEN));
    let predicted: Vec<i64> = out.logits.argmax(1).into_data().convert::<i64>().to_vec().unwrap();
    predicted.iter().zip(&split.labels).filter(|(p, l)| p == l).count() as f64 / split.labels.len() as f64
}

fn main() -> anyhow::Result<()> {
    let train = make_split(BATCH * 32, 11);
    let test = make_split(512, 12);
    let out_dir = std::env::temp_dir().join("mope-quickstart");
    println!("synthetic paired task: label = (topic in main + modifier in complementary) mod 4");
    println!("{} training pairs, {} test pairs, {STEPS} steps of {BATCH}\n", train.labels.len(), test.labels.len());

    let mut table = Vec::new();
    for method in [FusionMethod::LateFusion, FusionMethod::PromptTuning, FusionMethod::Sequential, FusionMethod::Mope] {
        let (mut model, config) = build::<AB>(method);
        let summary = ParamSummary::of(&model);
        println!("== {} ==\n{summary}", method.name());
        let mut optimizer = AdamWConfig::new().with_weight_decay(1e-3).init::<AB, Model<AB>>();
        let loss_fn = CrossEntropyLossConfig::new().init(&Default::default());
        let start = Instant::now();
        for step in 0..STEPS {
            let at = (step * BATCH) % train.labels.len();
            let main = tokens::<AB>(&train.main[at * MAIN_LEN..(at + BATCH) * MAIN_LEN], MAIN_LEN);
            let comp = tokens::<AB>(&train.comp[at * COMP_LEN..(at + BATCH) * COMP_LEN], COMP_LEN);
            let labels = Tensor::<AB, 1, Int>::from_data(
                TensorData::new(train.labels[at..at + BATCH].to_vec(), [BATCH]),
                &Default::default(),
            );
            let out = model.forward(&main, &comp);
            let task = loss_fn.forward(out.logits, labels);
            let loss = task.clone() + out.importance_loss * IMPORTANCE_WEIGHT;
            if step % 100 == 0 || step == STEPS - 1 {
                println!("step {step:>4}  loss {:.4}", task.into_scalar());
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(1e-2, model, grads);
        }
        let seconds = start.elapsed().as_secs_f64();
        let trained = model.valid();
        let acc = accuracy(&trained, &test);

        if method == FusionMethod::Mope {
            let out = trained.forward(&tokens(&test.main, MAIN_LEN), &tokens(&test.comp, COMP_LEN));
            println!("routing on the test set (mean weight per expert, entropy in nats):");
            for (layer, routing) in &out.routing {
                let s = RoutingStats::of(&routing.weights);
                let share: Vec<String> = s.share.iter().map(|v| format!("{v:.2}")).collect();
                println!("  layer {layer}: [{}]  entropy {:.3}", share.join(", "), s.entropy);
            }
        }
        let dir = out_dir.join(method.name());
        let report = save_adapter(
            &model,
            &dir,
            method.name(),
            serde_json::json!({"main": "random TokenEncoder d=32 (seed 0)", "complementary": "random TokenEncoder d=24 (seed 0)"}),
            serde_json::to_value(&config)?,
        )?;
        println!("{report}");
        let (reloaded, _) = load_adapter(build::<Flex>(method).0, &dir)?;
        anyhow::ensure!(accuracy(&reloaded, &test) == acc, "reloaded adapter must reproduce the accuracy");
        println!("test accuracy {:.1}%  ({seconds:.1} s), reloaded adapter gives the same\n", 100.0 * acc);
        table.push((method.name(), summary.trainable, acc, seconds));
    }

    println!("{:<14} {:>10} {:>9} {:>8}", "method", "trainable", "accuracy", "time");
    for (name, trainable, acc, seconds) in table {
        println!("{name:<14} {trainable:>10} {:>8.1}% {seconds:>7.1}s", 100.0 * acc);
    }
    println!("(chance is 25%; synthetic data: this shows the machinery, not the paper's numbers)");
    Ok(())
}
