//! Buffers of burn's CPU tensors (`flex`) for the kernels of this crate ([`crate::gelu`],
//! [`crate::layer_norm`], [`crate::linear`], [`crate::splice`]): which they may overwrite, how
//! they are allocated and split over threads.

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Values a rayon task takes at once: enough to amortise the task, few enough to split an
/// activation of a few megabytes over every thread.
pub(crate) const TASK_VALUES: usize = 1 << 14;

/// Whole rows of `row_len` values a rayon task takes at once: about [`TASK_VALUES`] values.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_VALUES / row_len.max(1)).max(1)
}

/// A contiguous `f32` tensor of zeros, in one allocation. (`FlexTensor::empty` allocates the
/// zeroed bytes and then copies them into a second allocation aligned to 16 bytes: burn 0.21's
/// `Bytes::from_bytes_vec` judges alignment by the vector's element type, `u8`, so it copies every
/// time. The kernels here read `f32`s, which need 4.)
///
/// The zeros are written over rayon's threads: `vec![0.0; n]` would have the allocator clear a
/// reused block on the calling thread alone, while the pool waits.
pub(crate) fn zeros_f32(shape: Shape) -> FlexTensor {
    let mut values = Vec::with_capacity(shape.num_elements());
    values.par_extend(rayon::iter::repeat_n(0.0f32, shape.num_elements()));
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `x` made contiguous without keeping a second handle on its buffer: where `x` is contiguous
/// already this is `x` itself, and [`FlexTensor::is_unique`] then tells whether a kernel may
/// overwrite it. (`FlexTensor::to_contiguous` takes `&self` and returns another handle on the same
/// buffer; with the original still alive beside it, every buffer would look shared.)
pub(crate) fn contiguous(x: FlexTensor) -> FlexTensor {
    let contiguous = x.to_contiguous();
    drop(x);
    contiguous
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tensor;

    #[test]
    fn the_last_holder_of_a_contiguous_buffer_gets_it_back_unique() {
        let x = Tensor::<Flex, 2>::ones([3, 4], &Default::default()).into_primitive().tensor();
        assert!(!contiguous(x.clone()).is_unique(), "`x` still holds the buffer");
        let address = x.storage::<f32>().as_ptr();
        let x = contiguous(x);
        assert!(x.is_unique() && x.storage::<f32>().as_ptr() == address, "the same buffer, held once");
        let transposed = Tensor::<Flex, 2>::ones([3, 4], &Default::default()).transpose().into_primitive().tensor();
        assert!(contiguous(transposed).is_unique(), "a copy");
    }

    #[test]
    fn zeros_are_a_contiguous_f32_tensor_of_the_shape() {
        let zeros = zeros_f32([2, 3, 5].into());
        assert_eq!(zeros.layout().shape().clone(), Shape::from([2, 3, 5]));
        assert!(zeros.is_unique() && zeros.layout().is_contiguous());
        assert!(zeros.storage::<f32>().len() == 30 && zeros.storage::<f32>().iter().all(|&v| v == 0.0));
    }
}
