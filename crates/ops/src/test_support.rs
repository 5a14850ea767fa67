//! What the operations' tests share: the error measure they compare with, whether a CUDA device
//! opens, and the macro that runs an operation's check on the GPU backends.

use burn::backend::Flex;
use burn::tensor::Tensor;

/// `max |a − b| / max |b|` over the entries where the reference `b` is finite: the error
/// relative to the tensor's scale (an element-wise ratio would blow up on entries that are
/// themselves near zero); absolute where `b` is all zero. Where `b` is NaN or infinite, `a` must
/// be the same (NaN, or the infinity of the same sign), and a finite `a` against a finite `b`
/// must be finite: otherwise the error is infinite.
pub(crate) fn max_relative_error<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let (a, b) = (a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    let same_non_finite = a.iter().zip(&b).all(|(x, y)| if y.is_finite() { x.is_finite() } else { x.is_nan() && y.is_nan() || x == y });
    if !same_non_finite {
        return f32::INFINITY;
    }
    let finite = || a.iter().zip(&b).filter(|(_, y)| y.is_finite());
    let scale = finite().fold(0f32, |m, (_, y)| m.max(y.abs()));
    // An all-zero reference (a source outside every row's top k) is compared absolutely.
    finite().map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / if scale > 0.0 { scale } else { 1.0 }
}

/// `t` with the flat entries `at` set to the given values (NaN or infinities, for the tests of
/// non-finite inputs).
pub(crate) fn poisoned<const D: usize>(t: &Tensor<Flex, D>, at: &[(usize, f32)]) -> Tensor<Flex, D> {
    let mut values = t.to_data().to_vec::<f32>().unwrap();
    let len = values.len();
    for &(i, value) in at {
        values[i % len] = value;
    }
    Tensor::from_data(burn::tensor::TensorData::new(values, t.dims()), &t.device())
}

/// A tensor of normal values with standard deviation `std`, the same for the same `seed` on every
/// run (SplitMix64 and Box-Muller): a test over them fails the same way every time, or never.
pub(crate) fn seeded_normal<const D: usize>(shape: [usize; D], std: f32, seed: u64) -> Tensor<Flex, D> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| {
            let (u, v) = (uniform().max(f64::MIN_POSITIVE), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32 * std
        })
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), &Default::default())
}

/// The non-finite values each operation's test puts into its inputs, one at a time.
pub(crate) const NON_FINITE: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Whether some of `t`'s entries are NaN or infinite: a test of non-finite inputs must reach the
/// output, or it tests nothing.
pub(crate) fn has_non_finite<const D: usize>(t: &Tensor<Flex, D>) -> bool {
    t.to_data().to_vec::<f32>().unwrap().iter().any(|v| !v.is_finite())
}

/// Whether a CUDA device opens; where none does, says on stderr that `test` is skipped.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_device_opens(test: &str) -> bool {
    use burn::backend::Cuda;
    let opens = std::panic::catch_unwind(|| Tensor::<Cuda, 1>::zeros([1], &Default::default()).into_data()).is_ok();
    if !opens {
        eprintln!("SKIPPED {test}: no CUDA device could be opened");
    }
    opens
}

/// The GPU-backend tests of an operation: `gpu_backends::wgpu` (feature `wgpu`; lavapipe on a
/// CPU-only machine) and `gpu_backends::cuda` (feature `cuda`; says `SKIPPED` without a device),
/// each running the calling test module's `check::<B>(&device)`, which compares the operation on
/// `B` with its reference on `flex`.
macro_rules! gpu_backend_tests {
    ($check:ident) => {
        mod gpu_backends {
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu() {
                super::$check::<burn::backend::Wgpu>(&Default::default());
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if crate::test_support::cuda_device_opens(module_path!()) {
                    super::$check::<burn::backend::Cuda>(&Default::default());
                }
            }
        }
    };
}
pub(crate) use gpu_backend_tests;
