//! Criterion benchmarks of the fused routing operation ([`ops::routing_mixture`]) against its
//! composed-tensor reference, at the paper's shapes: MoPE's dynamic prompt (batch 32; 4 to 16
//! experts of 6 or 16 tokens, 384 to 1024 wide; dense and top-2) and pMoE's dispatcher (one
//! routing group per slot, 2 or 4 experts' EPTs plus the carried prompt, 10 slots, 768 wide).
//!
//! For each backend, two passes: `forward` (the backend's `softmax_mix` against the reference's
//! mask + softmax + batched matmul) and `forward+backward` under autodiff (the fused op with its
//! hand-written backward against autodiff through the composed reference). On `flex` the
//! forward is the reference itself, so only the backward differs; with `--features wgpu` (or
//! `cuda`) the CubeCL kernel runs on that device. The device is synchronised inside each
//! iteration, nothing is read back.
//!
//! ```sh
//! cargo bench -p mope-benches --bench routing                      # flex (CPU)
//! cargo bench -p mope-benches --bench routing --features wgpu      # + wgpu (lavapipe on a CPU)
//! cargo bench -p mope-benches --bench routing --features cuda      # + CUDA
//! ```

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion};
use ops::{RoutingMixture, RoutingSoftmax, softmax_mix, softmax_mix_reference};

/// One benchmarked shape of the operation.
#[derive(Debug, Clone, Copy)]
struct Shape {
    batch: usize,
    /// Routing groups: 1 for MoPE, one per slot for pMoE.
    groups: usize,
    /// Shared sources: MoPE's experts, pMoE's experts' EPTs.
    shared: usize,
    /// Whether a per-instance source (pMoE's carried prompt) is mixed in.
    own: bool,
    len: usize,
    width: usize,
    softmax: RoutingSoftmax,
}

impl Shape {
    const fn mope(experts: usize, len: usize, width: usize, top_k: usize) -> Self {
        Self { batch: 32, groups: 1, shared: experts, own: false, len, width, softmax: RoutingSoftmax { temperature: 0.1, top_k } }
    }

    const fn pmoe(experts: usize) -> Self {
        Self { batch: 32, groups: 10, shared: experts, own: true, len: 10, width: 768, softmax: RoutingSoftmax { temperature: 1.0, top_k: 0 } }
    }

    fn label(self) -> String {
        let kind = if self.own { "pmoe" } else { "mope" };
        let top_k = if self.softmax.top_k > 0 { format!(" top{}", self.softmax.top_k) } else { String::new() };
        format!("{kind} B{} E{} L{} D{}{top_k}", self.batch, self.shared, self.len, self.width)
    }
}

const SHAPES: [Shape; 8] = [
    Shape::mope(4, 6, 384, 0),
    Shape::mope(4, 6, 768, 0),
    Shape::mope(8, 6, 768, 0),
    Shape::mope(16, 6, 768, 0),
    Shape::mope(16, 6, 768, 2),
    Shape::mope(16, 16, 1024, 0),
    Shape::pmoe(2),
    Shape::pmoe(4),
];

type Inputs<B> = (Tensor<B, 3>, Tensor<B, 3>, Option<Tensor<B, 3>>, Tensor<B, 3>);

fn inputs<B: Backend>(shape: Shape, device: &B::Device) -> Inputs<B> {
    let normal = |dims: [usize; 3]| Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), device);
    let sources = shape.shared + usize::from(shape.own);
    (
        normal([shape.batch, shape.groups, sources]),
        normal([shape.shared, shape.len, shape.width]),
        shape.own.then(|| normal([shape.batch, shape.len, shape.width])),
        normal([shape.batch, shape.len, shape.width]),
    )
}

fn mix<B: RoutingMixture>(fused: bool, (logits, shared, own): (Tensor<B, 3>, Tensor<B, 3>, Option<Tensor<B, 3>>), softmax: RoutingSoftmax) -> Tensor<B, 3> {
    if fused { softmax_mix(logits, shared, own, softmax) } else { softmax_mix_reference(logits, shared, own, softmax) }
}

fn bench_backend<B: RoutingMixture>(c: &mut Criterion, backend: &str, device: &B::Device) {
    for shape in SHAPES {
        let mut group = c.benchmark_group(format!("{backend}/{}", shape.label()));
        let (logits, shared, own, upstream) = inputs::<B>(shape, device);
        for (name, fused) in [("fused", true), ("reference", false)] {
            group.bench_function(BenchmarkId::new("forward", name), |b| {
                b.iter(|| {
                    let out = mix(fused, (logits.clone(), shared.clone(), own.clone()), shape.softmax);
                    B::sync(device).unwrap();
                    out
                })
            });
        }
        let tracked = |t: &Tensor<B, 3>| Tensor::<Autodiff<B>, 3>::from_inner(t.clone()).require_grad();
        let upstream = Tensor::<Autodiff<B>, 3>::from_inner(upstream);
        for (name, fused) in [("fused", true), ("reference", false)] {
            group.bench_function(BenchmarkId::new("forward+backward", name), |b| {
                b.iter(|| {
                    let out = mix(fused, (tracked(&logits), tracked(&shared), own.as_ref().map(tracked)), shape.softmax);
                    let grads = (out * upstream.clone()).sum().backward();
                    B::sync(device).unwrap();
                    grads
                })
            });
        }
        group.finish();
    }
}

fn routing(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex", &Default::default());
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Wgpu>(c, "wgpu", &Default::default());
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Cuda>(c, "cuda", &Default::default());
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    routing(&mut criterion);
    criterion.final_summary();
}
