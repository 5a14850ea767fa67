//! The step's operations one by one at a step's shapes (ViT-B by default, `--shape small`), ours
//! (burn's `flex` CPU backend) against PyTorch on the same machine and threads: where the
//! training step's time goes (docs/performance.md). Dense products (burn's matmul, and the
//! encoders' linear layers as the step runs them) in GFLOP/s, the other operations in
//! milliseconds.
//!
//! ```sh
//! MOPE_TORCH_PYTHON=venv/bin/python cargo bench -p mope-benches --bench ops -- --threads 2 [--shape small]
//! ```

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::LayerNormConfig;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::ops::{ActivationOps, FloatTensor};
use burn::tensor::{Distribution, Tensor};
use mope_benches::{StepShape, VIT_B};
use ops::{FastGelu, gelu as fast_gelu, layer_norm, linear, multi_head_attention};

/// `[m, k] × [k, n]` products of one layer of `s` (ViT-B: batch 8, 210 tokens a sample),
/// forward and the input-gradient products of the backward pass, and the per-head attention
/// products.
fn shapes(s: StepShape) -> Vec<(&'static str, usize, usize, usize, usize)> {
    let rows = s.batch * s.tokens();
    let (d, ff, n) = (s.d_model, s.d_ff, s.tokens());
    vec![
        ("qkv/out projection", 1, rows, d, d),
        ("ffn in", 1, rows, d, ff),
        ("ffn out (and ffn-in input grad)", 1, rows, ff, d),
        ("attention scores (per head)", s.batch * s.n_heads, n, d / s.n_heads, n),
        ("attention mixing (per head)", s.batch * s.n_heads, n, n, d / s.n_heads),
    ]
}

/// The encoders' linear layers of one layer of `s` as the step runs them: `(name, d_in, d_out)`,
/// on `[batch, tokens, d_in]`.
fn linear_layers(s: StepShape) -> Vec<(&'static str, usize, usize)> {
    vec![("qkv/out projection", s.d_model, s.d_model), ("ffn in", s.d_model, s.d_ff), ("ffn out", s.d_ff, s.d_model)]
}

/// Mean seconds of [`ops::linear`] on `[batch, len, d_in]` with a bias (`forward`),
/// or of its input-gradient product, a gradient times the weight's transposed view (without).
fn time_our_linear(s: StepShape, d_in: usize, d_out: usize, forward: bool, reps: usize) -> f64 {
    let device = Default::default();
    let random = |shape: [usize; 3]| Tensor::<Flex, 3>::random(shape, Distribution::Default, &device);
    let weight = Tensor::<Flex, 2>::random([d_in, d_out], Distribution::Default, &device);
    let bias = Tensor::<Flex, 1>::random([d_out], Distribution::Default, &device);
    if forward {
        let x = random([s.batch, s.tokens(), d_in]);
        mean_seconds(reps, || drop(linear(x.clone(), weight.clone(), Some(bias.clone())).into_data()))
    } else {
        let grad = random([s.batch, s.tokens(), d_out]);
        mean_seconds(reps, || drop(linear(grad.clone(), weight.clone().transpose(), None).into_data()))
    }
}

fn time_ours(batch: usize, m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let device = Default::default();
    let a = Tensor::<Flex, 3>::random([batch, m, k], Distribution::Default, &device);
    let b = Tensor::<Flex, 3>::random([batch, k, n], Distribution::Default, &device);
    mean_seconds(reps, || drop(a.clone().matmul(b.clone()).into_data()))
}

/// Mean seconds of the PyTorch statement `stmt` over `reps` runs, after `setup` and one untimed run.
fn torch_seconds(python: &str, threads: usize, setup: &str, stmt: &str, reps: usize) -> Result<f64> {
    let code = format!(
        "import torch,time\nimport torch.nn.functional as F\ntorch.set_num_threads({threads})\n{setup}\n{stmt}\nt=time.perf_counter()\nfor _ in range({reps}): {stmt}\nprint((time.perf_counter()-t)/{reps})"
    );
    let out = Command::new(python).args(["-c", &code]).output().with_context(|| format!("cannot run {python}"))?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// PyTorch's GFLOP/s and ours over it, as table cells (`n/a` where PyTorch was not measured).
fn rate_columns(ours: f64, theirs: Result<f64>) -> (String, String) {
    match theirs {
        Ok(t) => (format!("{t:.1}"), format!("{:.2}", ours / t)),
        Err(e) => {
            eprintln!("PyTorch not measured: {e:#}");
            ("n/a".into(), "n/a".into())
        }
    }
}

/// Mean seconds of `f` over `reps` calls, after one untimed call.
fn mean_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

/// Other operations of a layer of `s`: `(name, our seconds, the PyTorch statement timed on
/// tensors x [rows, d], h [rows, d_ff], s [batch·heads, n, n], bias [d_ff],
/// o [batch, heads, n, d/heads], q, k, v [batch, n, d], with `split` and `merge` of heads)`.
fn other_ops(s: StepShape, reps: usize) -> Vec<(&'static str, f64, &'static str)> {
    let device = Default::default();
    let rows = s.batch * s.tokens();
    let x = Tensor::<Flex, 2>::random([rows, s.d_model], Distribution::Default, &device);
    // Pre-activations are roughly normal (uniform [0, 1) would take erf's cheapest branch only).
    let h = Tensor::<Flex, 2>::random([rows, s.d_ff], Distribution::Normal(0.0, 1.0), &device);
    let scores = Tensor::<Flex, 3>::random([s.batch * s.n_heads, s.tokens(), s.tokens()], Distribution::Default, &device);
    let bias = Tensor::<Flex, 1>::random([s.d_ff], Distribution::Default, &device);
    let heads_out = Tensor::<Flex, 4>::random([s.batch, s.n_heads, s.tokens(), s.d_model / s.n_heads], Distribution::Default, &device);
    let norm = LayerNormConfig::new(s.d_model).init::<Flex>(&device);
    let norm_ad = LayerNormConfig::new(s.d_model).init::<Autodiff<Flex>>(&device).no_grad();
    let (b, n, heads, dh) = (s.batch, s.tokens(), s.n_heads, s.d_model / s.n_heads);
    let qkv = [0; 3].map(|_| Tensor::<Flex, 3>::random([b, n, s.d_model], Distribution::Default, &device));
    // `flex` computes eagerly: dropping the result times the operation alone (no read-back, as
    // on the PyTorch side).
    vec![
        ("bias add [rows, d_ff] + [d_ff]", mean_seconds(reps, || drop(h.clone() + bias.clone().unsqueeze::<2>())), "h + bias"),
        ("GELU [rows, d_ff], burn's", mean_seconds(reps, || drop(gelu(h.clone()))), "F.gelu(h)"),
        ("GELU [rows, d_ff], ours (`ops::gelu`)", mean_seconds(reps, || drop(fast_gelu(h.clone()))), "F.gelu(h)"),
        ("GELU backward [rows, d_ff], burn's", mean_seconds(reps, || drop(Flex::gelu_backward(primitive(&h), primitive(&h)))), "torch.ops.aten.gelu_backward(h, h)"),
        ("GELU backward [rows, d_ff], ours", mean_seconds(reps, || drop(Flex::fast_gelu_backward(primitive(&h), primitive(&h)))), "torch.ops.aten.gelu_backward(h, h)"),
        ("layer norm [rows, d]", mean_seconds(reps, || drop(norm.forward(x.clone()))), "F.layer_norm(x, (x.shape[1],))"),
        (
            "layer norm forward + input gradient under autodiff, burn's",
            mean_seconds(reps, || drop(layer_norm_gradient(&x, |x| norm_ad.forward(x)))),
            "xg=x.requires_grad_(); torch.autograd.grad(F.layer_norm(xg, (x.shape[1],)), xg, x)",
        ),
        (
            "layer norm forward + input gradient under autodiff, ours (`ops::layer_norm`)",
            mean_seconds(reps, || drop(layer_norm_gradient(&x, |x| layer_norm(x, norm_ad.gamma.val(), norm_ad.beta.as_ref().map(|b| b.val()), 1e-5)))),
            "xg=x.requires_grad_(); torch.autograd.grad(F.layer_norm(xg, (x.shape[1],)), xg, x)",
        ),
        ("softmax [b·heads, n, n], burn's", mean_seconds(reps, || drop(softmax(scores.clone(), 2))), "s.softmax(2)"),
        (
            // The reshape of the permuted view is what copies.
            "merge heads [b, heads, n, d/heads] → [b, n, d], burn's",
            mean_seconds(reps, || drop(heads_out.clone().swap_dims(1, 2).reshape([b, n, heads * dh]))),
            "o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1)",
        ),
        (
            "attention [b, n, d], forward (ours: `ops::attention`; PyTorch: `F.scaled_dot_product_attention` on the split heads, merged)",
            mean_seconds(reps, || drop(multi_head_attention(qkv[0].clone(), qkv[1].clone(), qkv[2].clone(), None, heads))),
            "merge(F.scaled_dot_product_attention(split(q), split(k), split(v)))",
        ),
        (
            "attention, forward + gradients of q, k, v under autodiff",
            mean_seconds(reps, || {
                let [q, k, v] = qkv.clone().map(|t| Tensor::<Autodiff<Flex>, 3>::from_inner(t).require_grad());
                let out = multi_head_attention(q.clone(), k.clone(), v.clone(), None, heads);
                let grads = (out * Tensor::from_inner(qkv[0].clone())).sum().backward();
                drop([q, k, v].map(|t| t.grad(&grads)));
            }),
            "qg,kg,vg=(t.requires_grad_() for t in (q,k,v)); torch.autograd.grad(merge(F.scaled_dot_product_attention(split(qg), split(kg), split(vg))), (qg,kg,vg), q)",
        ),
    ]
}

/// The gradient of `sum(f(x) ⊙ x)` against `x` (a layer's input gradient with an upstream gradient).
fn layer_norm_gradient(x: &Tensor<Flex, 2>, f: impl Fn(Tensor<Autodiff<Flex>, 2>) -> Tensor<Autodiff<Flex>, 2>) -> Tensor<Flex, 2> {
    let input = Tensor::<Autodiff<Flex>, 2>::from_inner(x.clone()).require_grad();
    let grads = (f(input.clone()) * Tensor::from_inner(x.clone())).sum().backward();
    input.grad(&grads).expect("x is tracked")
}

fn primitive<const D: usize>(t: &Tensor<Flex, D>) -> FloatTensor<Flex> {
    t.clone().into_primitive().tensor()
}

/// The PyTorch tensors [`other_ops`] statements read.
fn torch_tensors(s: StepShape) -> String {
    let rows = s.batch * s.tokens();
    format!(
        "x=torch.rand({rows},{d});h=torch.randn({rows},{ff});s=torch.rand({bh},{n},{n});bias=torch.rand({ff});o=torch.rand({b},{heads},{n},{dh})\n\
         q,k,v=(torch.rand({b},{n},{d}) for _ in range(3))\n\
         split=lambda t: t.view({b},{n},{heads},{dh}).transpose(1,2);merge=lambda t: t.transpose(1,2).reshape({b},{n},{d})",
        d = s.d_model,
        heads = s.n_heads,
        dh = s.d_model / s.n_heads,
        ff = s.d_ff,
        bh = s.batch * s.n_heads,
        n = s.tokens(),
        b = s.batch,
    )
}

fn main() -> Result<()> {
    // As `mope` and the training-step bench run: glibc keeps freed tensor buffers mapped (the
    // PyTorch child inherits the setting).
    train::tune_glibc_malloc();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shape = VIT_B;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--shape" => {
                let name = args.next().context("--shape small|vit-b")?;
                shape = StepShape::by_name(&name).with_context(|| format!("unknown shape `{name}` (small, vit-b)"))?;
            }
            "--bench" => {}
            other => anyhow::bail!("unknown argument `{other}`"),
        }
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let python = std::env::var("MOPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    println!("{} shapes, {threads} threads\n", shape.name);
    println!("| product | shape | ours GFLOP/s | PyTorch GFLOP/s | ours / PyTorch |");
    println!("|---|---|---:|---:|---:|");
    for (name, batch, m, k, n) in shapes(shape) {
        let flops = 2.0 * (batch * m * k * n) as f64;
        let reps = (2e10 / flops).clamp(3.0, 200.0) as usize;
        let ours = flops / time_ours(batch, m, k, n, reps) / 1e9;
        let theirs = torch_seconds(&python, threads, &format!("a=torch.rand({batch},{m},{k});b=torch.rand({batch},{k},{n})"), "a@b", reps);
        let (t, r) = rate_columns(ours, theirs.map(|t| flops / t / 1e9));
        println!("| {name} | {batch}×[{m}×{k}]·[{k}×{n}] | {ours:.1} | {t} | {r} |");
    }
    println!();
    println!("| linear layer (ours: `ops::linear`; PyTorch: `F.linear`) | pass | ours GFLOP/s | PyTorch GFLOP/s | ours / PyTorch |");
    println!("|---|---|---:|---:|---:|");
    for (name, d_in, d_out) in linear_layers(shape) {
        let (batch, len) = (shape.batch, shape.tokens());
        let flops = 2.0 * (batch * len * d_in * d_out) as f64;
        let reps = (2e10 / flops).clamp(3.0, 200.0) as usize;
        for (pass, forward, setup, stmt) in [
            ("forward, with bias", true, format!("x=torch.rand({batch},{len},{d_in});w=torch.rand({d_out},{d_in});b=torch.rand({d_out})"), "F.linear(x,w,b)"),
            ("input gradient", false, format!("g=torch.rand({batch},{len},{d_out});w=torch.rand({d_out},{d_in})"), "g@w"),
        ] {
            let ours = flops / time_our_linear(shape, d_in, d_out, forward, reps) / 1e9;
            let (t, r) = rate_columns(ours, torch_seconds(&python, threads, &setup, stmt, reps).map(|t| flops / t / 1e9));
            println!("| {name} {batch}×[{len}×{d_in}]·[{d_in}×{d_out}] | {pass} | {ours:.1} | {t} | {r} |");
        }
    }
    println!();
    println!("| operation | ours (ms) | PyTorch (ms) | PyTorch / ours |");
    println!("|---|---:|---:|---:|");
    for (name, ours, stmt) in other_ops(shape, 20) {
        let (t, r) = match torch_seconds(&python, threads, &torch_tensors(shape), stmt, 20) {
            Ok(t) => (format!("{:.2}", 1e3 * t), format!("{:.2}", t / ours)),
            Err(e) => {
                eprintln!("PyTorch not measured: {e:#}");
                ("n/a".into(), "n/a".into())
            }
        };
        println!("| {name} | {:.2} | {t} | {r} |", 1e3 * ours);
    }
    Ok(())
}
