//! The MoPE training step, ours (burn, CPU) against the PyTorch reference of the same step
//! (`benches/reference/mope_step.py`), measured side by side in one run with the same shapes and
//! the same number of threads.
//!
//! ```sh
//! cargo bench -p mope-benches --bench train_step                  # both shapes, 2 timed steps each
//! cargo bench -p mope-benches --bench train_step -- small --steps 5 --threads 2
//! MOPE_TORCH_PYTHON=/path/to/venv/bin/python cargo bench -p mope-benches --bench train_step
//! ```
//!
//! Each side builds the model, runs one untimed warm-up step, then `--steps` timed steps, and
//! reports samples per second, its peak resident memory, and the achieved rate against the step's
//! arithmetic floor ([`StepShape::step_flops`]).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use backbones::ViTConfig;
use burn::backend::{Autodiff, Flex};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor};
use mope_benches::{SMALL, StepShape, VIT_B, peak_rss_bytes};
use mope_core::{FusionMethod, MopePromptsConfig, MultimodalClassifierConfig};
use serde::Deserialize;

type B = Autodiff<Flex>;

/// What one side measured.
#[derive(Debug, Deserialize)]
struct Measurement {
    samples_per_second: f64,
    /// Mean seconds of the forward pass (loss included) per timed step; the rest is backward
    /// and the optimiser step.
    forward_seconds: f64,
    peak_rss_bytes: Option<u64>,
    #[serde(default)]
    label: String,
}

fn burn_step(shape: &StepShape, steps: usize) -> Measurement {
    let device = Default::default();
    let main = ViTConfig::new(shape.image_size, shape.patch_size, shape.d_model, shape.n_heads, shape.d_ff, shape.num_layers).init::<B>(&device);
    // The complementary feature is cached (computed once per sample and epoch), so its encoder
    // never runs here; a one-layer stand-in of the right width fills the slot.
    let complementary = ViTConfig::new(16, 16, shape.d_complementary, 12, shape.d_complementary, 1).init::<B>(&device);
    let prompts = MopePromptsConfig::new(0, 0, 0)
        .with_static_len(shape.static_len)
        .with_num_experts(shape.num_experts)
        .with_expert_len(shape.expert_len)
        .with_mapped_len(shape.mapped_len);
    let mut model = MultimodalClassifierConfig::new(FusionMethod::Mope, shape.num_classes, prompts).init(main, complementary, &device);
    let mut optimizer = AdamWConfig::new().with_weight_decay(1e-3).init();
    let pixels = Tensor::<B, 4>::random([shape.batch, 3, shape.image_size, shape.image_size], Distribution::Normal(0.0, 1.0), &device);
    let feature = Tensor::<B, 2>::random([shape.batch, shape.d_complementary], Distribution::Normal(0.0, 1.0), &device);
    let labels = Tensor::<B, 1, Int>::from_ints((0..shape.batch as i64).map(|i| i % shape.num_classes as i64).collect::<Vec<_>>().as_slice(), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut timed, mut forward) = (0.0, 0.0);
    for step in 0..=steps {
        let start = Instant::now();
        let out = model.forward_with_feature(&pixels, feature.clone());
        let loss = loss_fn.forward(out.logits, labels.clone()) + out.importance_loss * 0.01;
        // flex runs eagerly: the loss is computed when this returns.
        let forward_done = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, grads);
        if step > 0 {
            timed += start.elapsed().as_secs_f64();
            forward += forward_done;
        }
    }
    Measurement {
        samples_per_second: (steps * shape.batch) as f64 / timed,
        forward_seconds: forward / steps as f64,
        peak_rss_bytes: peak_rss_bytes(),
        label: "burn 0.21 flex".into(),
    }
}

fn reference_step(python: &str, shape: &StepShape, steps: usize, threads: usize) -> Result<Measurement> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/reference/mope_step.py");
    let output = Command::new(python)
        .args([script, "--shape", &shape.to_json(), "--steps", &steps.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run `{python}` (set MOPE_TORCH_PYTHON to a Python with torch)"))?;
    if !output.status.success() {
        bail!("{python} {script} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("the reference printed `{last}`, not a measurement"))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
}

fn main() -> Result<()> {
    // What `mope` runs with; the PyTorch reference, a child of this process, inherits it too.
    train::malloc::tune_glibc_malloc();
    let mut shapes = Vec::new();
    let (mut steps, mut threads, mut reference) = (2usize, std::thread::available_parallelism().map_or(1, |n| n.get()), true);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--steps" => steps = args.next().context("--steps N")?.parse()?,
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--no-reference" => reference = false,
            name => shapes.push(StepShape::by_name(name).with_context(|| format!("unknown shape `{name}` (small, vit-b)"))?),
        }
    }
    if shapes.is_empty() {
        shapes = vec![SMALL, VIT_B];
    }
    // Peak memory is the process's high-water mark: the smaller steps run first, so that each
    // shape's figure is its own.
    shapes.sort_by(|a, b| (a.step_flops() * a.batch as f64).total_cmp(&(b.step_flops() * b.batch as f64)));
    anyhow::ensure!(steps > 0, "--steps must be at least 1");
    // burn's CPU backend runs its kernels on rayon's global pool; PyTorch gets the same count.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("rayon's pool was already built")?;
    let python = std::env::var("MOPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    println!("| shape | batch | tokens | ours (samples/s) | PyTorch (samples/s) | ours / PyTorch | ours fwd / rest (s) | PyTorch fwd / rest (s) | ours peak MiB | PyTorch peak MiB | ours GFLOP/s | PyTorch GFLOP/s | floor (GFLOP/step) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for shape in shapes {
        // The reference runs first, in its own process, so that our peak memory is ours alone.
        let theirs = if reference { Some(reference_step(&python, &shape, steps, threads)) } else { None };
        let ours = burn_step(&shape, steps);
        let flops = shape.step_flops();
        let rate = |m: &Measurement| m.samples_per_second * flops / 1e9;
        let split = |m: &Measurement| {
            let step = shape.batch as f64 / m.samples_per_second;
            format!("{:.2} / {:.2}", m.forward_seconds, step - m.forward_seconds)
        };
        let (their_rate, ratio, their_split, their_mem, their_gflops) = match &theirs {
            Some(Ok(m)) => (
                format!("{:.2}", m.samples_per_second),
                format!("{:.2}", ours.samples_per_second / m.samples_per_second),
                split(m),
                mib(m.peak_rss_bytes),
                format!("{:.1}", rate(m)),
            ),
            Some(Err(e)) => {
                eprintln!("PyTorch reference not measured: {e:#}");
                ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into(), "n/a".into())
            }
            None => ("skipped".into(), "n/a".into(), "n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!(
            "| {} | {} | {} | {:.2} | {their_rate} | {ratio} | {} | {their_split} | {} | {their_mem} | {:.1} | {their_gflops} | {:.1} |",
            shape.name,
            shape.batch,
            shape.tokens(),
            ours.samples_per_second,
            split(&ours),
            mib(ours.peak_rss_bytes),
            rate(&ours),
            flops * shape.batch as f64 / 1e9
        );
        if let Some(Ok(m)) = &theirs {
            eprintln!("{}: ours {}, reference {} ({threads} threads, {steps} timed steps)", shape.name, ours.label, m.label);
        }
    }
    Ok(())
}
