//! The MoPE training step, ours (burn) against the PyTorch reference of the same step
//! (`benches/reference/mope_step.py`), measured side by side in one run with the same shapes, the
//! same number of threads and the same kind of device.
//!
//! ```sh
//! cargo bench -p mope-benches --bench train_step                  # the three shapes, 2 timed steps each
//! cargo bench -p mope-benches --bench train_step -- small --steps 5 --threads 2
//! MOPE_TORCH_PYTHON=/path/to/venv/bin/python cargo bench -p mope-benches --bench train_step
//! cargo bench -p mope-benches --features cuda --bench train_step -- --device cuda   # both on the GPU
//! ```
//!
//! Each side builds the model, runs one untimed warm-up step (on a GPU: kernel compilation and
//! autotuning), then `--steps` timed steps, waiting for the device at the end of the forward pass
//! and of each step, and reports samples per second, its peak resident memory (CPU runs only:
//! burn 0.21 does not report a device's peak), and the achieved rate against the step's
//! arithmetic floor ([`StepShape::step_flops`]).

use std::time::Instant;

use anyhow::{Context, Result};
use backbones::{Pooling, TokenBatch, TokenEncoderConfig, ViTConfig};
use burn::module::{AutodiffModule, ModuleDisplay};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use mope_benches::{SMALL, StepShape, TEXT, VIT_B, mib, peak_rss_bytes, run_reference};
use mope_core::{FusionMethod, MopePromptsConfig, MultimodalClassifierConfig, PromptableEncoder};
use serde::Deserialize;
use train::{BackendJob, DeviceChoice, TrainBackend, run_on};

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

/// Our step on the backend [`run_on`] picks.
struct BurnStep {
    shape: StepShape,
    steps: usize,
    device: DeviceChoice,
}

impl BackendJob for BurnStep {
    type Output = Measurement;

    fn run<B: TrainBackend>(self) -> Result<Measurement> {
        let Self { shape, steps, device: choice } = self;
        let device = Default::default();
        let (timed, forward) = if shape.is_text() {
            let main = TokenEncoderConfig::new(shape.vocab_size, shape.d_model, shape.n_heads, shape.d_ff, shape.num_layers)
                .with_pooling(Pooling::Mean)
                .init::<B>(&device);
            let longest = shape.lengths.iter().copied().max().unwrap_or(0);
            // Random ids after [CLS] (id 101); padding (id 0) after each text.
            let ids: Vec<i64> = (0..shape.batch * longest)
                .map(|i| match (i % longest, shape.lengths[i / longest]) {
                    (0, _) => 101,
                    (t, len) if t < len => 1000 + (i as i64 * 7919) % (shape.vocab_size as i64 - 1000),
                    _ => 0,
                })
                .collect();
            let padding: Vec<bool> = (0..shape.batch * longest).map(|i| i % longest >= shape.lengths[i / longest]).collect();
            let input = TokenBatch {
                ids: Tensor::from_data(TensorData::new(ids, [shape.batch, longest]), &device),
                mask_pad: Tensor::from_data(TensorData::new(padding, [shape.batch, longest]), &device),
            };
            time_steps::<B, _>(&shape, main, &input, steps)?
        } else {
            let main = ViTConfig::new(shape.image_size, shape.patch_size, shape.d_model, shape.n_heads, shape.d_ff, shape.num_layers).init::<B>(&device);
            let pixels = Tensor::<B, 4>::random([shape.batch, 3, shape.image_size, shape.image_size], Distribution::Normal(0.0, 1.0), &device);
            time_steps::<B, _>(&shape, main, &pixels, steps)?
        };
        let on_cpu = choice == DeviceChoice::Cpu;
        Ok(Measurement {
            samples_per_second: (steps * shape.batch) as f64 / timed,
            forward_seconds: forward / steps as f64,
            // burn 0.21 does not report a device's peak memory; the host's would mislead.
            peak_rss_bytes: if on_cpu { peak_rss_bytes() } else { None },
            label: format!("burn 0.21 {}", if on_cpu { "flex".to_string() } else { format!("{choice:?}").to_lowercase() }),
        })
    }
}

/// One untimed and `steps` timed training steps of MoPE on the frozen `main` encoder; returns
/// the seconds of the timed steps and of their forward passes.
fn time_steps<B: TrainBackend, M>(shape: &StepShape, main: M, input: &M::Input, steps: usize) -> Result<(f64, f64)>
where
    M: PromptableEncoder<B> + AutodiffModule<B> + ModuleDisplay,
    M::InnerModule: ModuleDisplay,
{
    let device = Default::default();
    // The complementary feature is cached (computed once per sample and epoch), so its encoder
    // never runs here; a one-layer stand-in of the right width fills the slot.
    let complementary = ViTConfig::new(16, 16, shape.d_complementary, 16, shape.d_complementary, 1).init::<B>(&device);
    let prompts = MopePromptsConfig::new(0, 0, 0)
        .with_static_len(shape.static_len)
        .with_num_experts(shape.num_experts)
        .with_expert_len(shape.expert_len)
        .with_mapped_len(shape.mapped_len);
    let mut model = MultimodalClassifierConfig::new(FusionMethod::Mope, shape.num_classes, prompts).init(main, complementary, &device);
    let mut optimizer = AdamWConfig::new().with_weight_decay(1e-3).init();
    let feature = Tensor::<B, 2>::random([shape.batch, shape.d_complementary], Distribution::Normal(0.0, 1.0), &device);
    let labels = Tensor::<B, 1, Int>::from_ints((0..shape.batch as i64).map(|i| i % shape.num_classes as i64).collect::<Vec<_>>().as_slice(), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    // A GPU backend queues its work: wait for it before reading the clock (on `flex`, which
    // runs eagerly, this returns at once).
    let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("the device failed: {e:?}"));
    let (mut timed, mut forward) = (0.0, 0.0);
    for step in 0..=steps {
        sync()?;
        let start = Instant::now();
        let out = model.forward_with_feature(input, feature.clone());
        let loss = loss_fn.forward(out.logits, labels.clone()) + out.importance_loss * 0.01;
        sync()?;
        let forward_done = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, grads);
        sync()?;
        if step > 0 {
            timed += start.elapsed().as_secs_f64();
            forward += forward_done;
        }
    }
    Ok((timed, forward))
}

fn reference_step(python: &str, shape: &StepShape, steps: usize, threads: usize, device: &str) -> Result<Measurement> {
    let (steps, threads) = (steps.to_string(), threads.to_string());
    run_reference(python, "mope_step.py", &["--shape", &shape.to_json(), "--steps", &steps, "--threads", &threads, "--device", device])
}

fn main() -> Result<()> {
    // What `mope` runs with; the PyTorch reference, a child of this process, inherits it too.
    train::tune_glibc_malloc();
    let mut shapes = Vec::new();
    let (mut steps, mut threads, mut reference) = (2usize, std::thread::available_parallelism().map_or(1, |n| n.get()), true);
    let mut device = DeviceChoice::Cpu;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--steps" => steps = args.next().context("--steps N")?.parse()?,
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--no-reference" => reference = false,
            "--device" => device = args.next().context("--device cpu|wgpu|cuda")?.parse().map_err(anyhow::Error::msg)?,
            name => shapes.push(StepShape::by_name(name).with_context(|| format!("unknown shape `{name}` (small, vit-b, text)"))?),
        }
    }
    if shapes.is_empty() {
        shapes = vec![SMALL, VIT_B, TEXT];
    }
    // Peak memory is the process's high-water mark: the smaller steps run first, so that each
    // shape's figure is its own.
    shapes.sort_by(|a, b| (a.step_flops() * a.batch as f64).total_cmp(&(b.step_flops() * b.batch as f64)));
    anyhow::ensure!(steps > 0, "--steps must be at least 1");
    // burn's CPU backend runs its kernels on rayon's global pool; PyTorch gets the same count.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("rayon's pool was already built")?;
    let python = std::env::var("MOPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    // PyTorch runs where ours does: its CPU, or its CUDA device (it has no wgpu backend).
    let torch_device = match device {
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Cuda => "cuda",
        DeviceChoice::Wgpu => {
            if reference {
                eprintln!("PyTorch has no wgpu backend: its reference runs on the CPU, the ratio compares different devices");
            }
            "cpu"
        }
    };
    println!("| shape | batch | tokens | ours (samples/s) | PyTorch (samples/s) | ours / PyTorch | ours fwd / rest (s) | PyTorch fwd / rest (s) | ours peak MiB | PyTorch peak MiB | ours GFLOP/s | PyTorch GFLOP/s | floor (GFLOP/step) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for shape in shapes {
        // The reference runs first, in its own process, so that our peak memory is ours alone.
        let theirs = if reference { Some(reference_step(&python, &shape, steps, threads, torch_device)) } else { None };
        let ours = run_on(device, BurnStep { shape, steps, device })?;
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
            eprintln!("{}: ours {}, reference {} ({threads} CPU threads, {steps} timed steps)", shape.name, ours.label, m.label);
        }
    }
    Ok(())
}
