//! Strided matrix products on burn's CPU backend (`flex`) for the kernels that write their
//! outputs in place ([`crate::linear`], [`crate::attention`]): one call of `gemm` (the library
//! `flex`'s own matmul uses, without its threads: the callers split the work over rayon's), its
//! operands read through their strides without copying, its result written into part of a buffer
//! the caller owns.
//!
//! `gemm`'s entry point takes raw pointers and strides, so this module, like its two callers, is
//! allowed `unsafe` code; each block says what makes it sound.

#![allow(unsafe_code)]

use burn_flex::FlexTensor;

/// The address of `x`'s first value (its view's, past any offset into the buffer).
pub(crate) fn start_of(x: &FlexTensor) -> *const f32 {
    x.storage::<f32>()[x.layout().start_offset()..].as_ptr()
}

/// A matrix read through strides (in values) from the address of its first value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    pub(crate) start: *const f32,
    pub(crate) row_stride: isize,
    pub(crate) col_stride: isize,
}

// SAFETY: a `Strided` is only read through, and [`product`]'s callers keep what it points to
// alive and unchanged while any task uses it.
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

impl Strided {
    /// A contiguous row-major matrix with rows of `row_len` values.
    pub(crate) fn row_major(start: *const f32, row_len: usize) -> Self {
        Self { start, row_stride: row_len as isize, col_stride: 1 }
    }

    /// The same values `values` further on (the address is only computed, not read).
    pub(crate) fn offset(self, values: isize) -> Self {
        Self { start: self.start.wrapping_offset(values), ..self }
    }

    /// The transposed matrix: the same values, rows and columns swapped.
    pub(crate) fn transposed(self) -> Self {
        Self { start: self.start, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

/// Where tasks write: the address of a buffer's first value, shared by the rayon tasks that each
/// write their own, disjoint part of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Destination(pub(crate) *mut f32);

// SAFETY: the tasks that share a `Destination` write disjoint values (their callers' promise to
// [`product`]) of a buffer that outlives them.
unsafe impl Send for Destination {}
unsafe impl Sync for Destination {}

impl Destination {
    /// The address `values` further on (only computed, not written).
    pub(crate) fn offset(self, values: usize) -> *mut f32 {
        self.0.wrapping_add(values)
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, on one thread.
///
/// # Shapes
/// - `lhs`: `[rows, depth]`, `rhs`: `[depth, cols]`
/// - `dst`: `[rows, cols]`, row-major with `dst_row_stride` values from one row to the next
///
/// # Safety
/// `lhs` and `rhs` must address `rows × depth` and `depth × cols` readable values; `dst` must
/// address `rows × cols` writable values (through `dst_row_stride`) that nothing else reads or
/// writes while this runs, and that are initialised when `accumulate`.
pub(crate) unsafe fn product(dst: *mut f32, dst_row_stride: usize, [rows, depth, cols]: [usize; 3], lhs: Strided, rhs: Strided, accumulate: bool) {
    if depth == 0 {
        // An empty sum: nothing to add, or zeros (`gemm` may not write an empty product).
        if !accumulate {
            for row in 0..rows {
                // SAFETY: row `row` of `dst` has `cols` writable values (the caller's promise).
                unsafe { std::ptr::write_bytes(dst.add(row * dst_row_stride), 0, cols) };
            }
        }
        return;
    }
    // SAFETY: the operands and the destination are as `gemm` reads and writes them (the
    // caller's promise); `gemm` writes every value of `dst` (`read_dst` false) or adds to it.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            depth,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.start,
            lhs.col_stride,
            lhs.row_stride,
            rhs.start,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[rows, cols]` row-major values `scale · (i + 1)`.
    fn matrix(rows: usize, cols: usize, scale: f32) -> Vec<f32> {
        (0..rows * cols).map(|i| scale * (i + 1) as f32).collect()
    }

    /// The product by the definition, reading `lhs` and `rhs` row-major.
    fn naive(lhs: &[f32], rhs: &[f32], [rows, depth, cols]: [usize; 3]) -> Vec<f32> {
        let mut out = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..depth).map(|k| lhs[i * depth + k] * rhs[k * cols + j]).sum();
            }
        }
        out
    }

    /// Into a sub-block of a wider buffer (the other values untouched), from a transposed view,
    /// accumulating, and with no depth.
    #[test]
    fn products_match_the_definition() {
        let [rows, depth, cols] = [5, 7, 3];
        let (lhs, rhs) = (matrix(rows, depth, 0.5), matrix(depth, cols, -0.25));
        let expected = naive(&lhs, &rhs, [rows, depth, cols]);
        // `dst` is columns 2..5 of a [5, 6] buffer of 9s.
        let mut wide = vec![9.0f32; rows * 6];
        let rhs_transposed: Vec<f32> = (0..cols * depth).map(|i| rhs[(i % depth) * cols + i / depth]).collect();
        let rhs_view = Strided::row_major(rhs_transposed.as_ptr(), depth).transposed();
        // SAFETY: the operands address [5, 7] and [7, 3] values of live vectors; `dst` is
        // [5, 3] values of `wide` with rows 6 apart.
        unsafe { product(wide.as_mut_ptr().add(2), 6, [rows, depth, cols], Strided::row_major(lhs.as_ptr(), depth), rhs_view, false) };
        for (row, wide) in wide.chunks(6).enumerate() {
            assert_eq!(&wide[..2], &[9.0, 9.0]);
            assert_eq!(wide[5], 9.0);
            for (got, want) in wide[2..5].iter().zip(&expected[row * cols..]) {
                assert!((got - want).abs() <= 1e-5 * want.abs(), "row {row}: {got} vs {want}");
            }
        }
        // Accumulating onto ones.
        let mut dst = vec![1.0f32; rows * cols];
        // SAFETY: as above, `dst` initialised.
        unsafe { product(dst.as_mut_ptr(), cols, [rows, depth, cols], Strided::row_major(lhs.as_ptr(), depth), Strided::row_major(rhs.as_ptr(), cols), true) };
        for (got, want) in dst.iter().zip(&expected) {
            assert!((got - (want + 1.0)).abs() <= 1e-5 * want.abs());
        }
        // No depth: zeros, or the values left as they were.
        let mut dst = vec![4.0f32; 6];
        let empty = Strided::row_major(lhs.as_ptr(), 0);
        // SAFETY: nothing is read at depth 0; `dst` is [2, 3] values.
        unsafe { product(dst.as_mut_ptr(), 3, [2, 0, 3], empty, empty, true) };
        assert_eq!(dst, [4.0; 6]);
        // SAFETY: as above.
        unsafe { product(dst.as_mut_ptr(), 3, [2, 0, 3], empty, empty, false) };
        assert_eq!(dst, [0.0; 6]);
    }
}
