//! Buffers of burn's CPU tensors (`flex`) for the kernels of this crate that write in place
//! ([`crate::gelu`], [`crate::attention`]).

use burn_flex::FlexTensor;

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
}
