//! The token rows of a padded batch without its padding.
//!
//! A transformer layer's row-wise work (projections, feed-forward, norms, residuals) is the same
//! for every token, and a padding token's result is never read: attention masks it as a key, the
//! pooling and the router's mean leave it out. [`Unpadded`] gathers the real tokens of a
//! `[batch, seq_len, d]` tensor into `[tokens, d]` rows so that this work runs on them alone, and
//! puts rows back into the padded layout, with zeros at the padding, for the attention. On text
//! batches padded to their longest sample that is the difference between computing every
//! sample at the longest one's length and at its own.

use std::ops::Range;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use burn::tensor::IndexingUpdateOp;

/// Where the real tokens of a padded batch sit.
#[derive(Debug, Clone)]
pub struct Unpadded<B: Backend> {
    /// Row of each real token in the flattened `[batch * seq_len]` layout, in order.
    rows: Tensor<B, 1, Int>,
    batch: usize,
    seq_len: usize,
}

impl<B: Backend> Unpadded<B> {
    /// The real tokens of `mask_pad` (`true` = padding), or `None` when no token is padding
    /// (the padded layout is then already without padding). Reads the mask back to the host,
    /// which on a GPU backend waits for the work queued before it.
    ///
    /// # Shapes
    /// - `mask_pad`: `[batch, seq_len]`
    pub fn from_mask(mask_pad: &Tensor<B, 2, Bool>) -> Option<Self> {
        let [batch, seq_len] = mask_pad.dims();
        let padding = padding_of(mask_pad);
        let rows: Vec<i64> = (0..batch * seq_len).filter(|&i| !padding[i]).map(|i| i as i64).collect();
        if rows.len() == batch * seq_len {
            return None;
        }
        Some(Self::of_rows(rows, [batch, seq_len], &mask_pad.device()))
    }

    /// The rows `rows` (indices into the flattened `[batch * seq_len]` layout, in order).
    fn of_rows(rows: Vec<i64>, [batch, seq_len]: [usize; 2], device: &B::Device) -> Self {
        let len = rows.len();
        Self { rows: Tensor::from_data(TensorData::new(rows, [len]), device), batch, seq_len }
    }

    /// Number of real tokens.
    pub fn len(&self) -> usize {
        self.rows.dims()[0]
    }

    /// Whether no token is real.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The real tokens' rows.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d]`; output `[tokens, d]`
    pub fn pack(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, seq_len, d] = x.dims();
        assert_eq!([batch, seq_len], [self.batch, self.seq_len], "pack: the tensor's batch and length differ from the mask's");
        x.reshape([batch * seq_len, d]).select(0, self.rows.clone())
    }

    /// The rows back in the padded layout, zeros at the padding.
    ///
    /// # Shapes
    /// - `rows`: `[tokens, d]`; output `[batch, seq_len, d]`
    pub fn unpack(&self, rows: Tensor<B, 2>) -> Tensor<B, 3> {
        let [tokens, d] = rows.dims();
        assert_eq!(tokens, self.len(), "unpack: {tokens} rows for {} real tokens", self.len());
        Tensor::zeros([self.batch * self.seq_len, d], &rows.device())
            .select_assign(0, self.rows.clone(), rows, IndexingUpdateOp::Add)
            .reshape([self.batch, self.seq_len, d])
    }
}

/// A padding mask read back to the host, flattened (`true` = padding).
fn padding_of<B: Backend>(mask_pad: &Tensor<B, 2, Bool>) -> Vec<bool> {
    mask_pad.to_data().convert::<bool>().to_vec::<bool>().expect("a bool mask reads as bools")
}

/// The rows of a layer whose outputs at some positions nothing reads: every real token serves
/// as an attention key and value ([`real`](Self::real)), and only the others (real, outside the
/// discarded positions) are queries and go through the rest of the layer ([`kept`](Self::kept)).
#[derive(Debug, Clone)]
pub struct KeptRows<B: Backend> {
    /// Every real token.
    pub real: Unpadded<B>,
    /// The real tokens outside the discarded positions.
    pub kept: Unpadded<B>,
    /// Each kept token's row among `real`'s.
    kept_in_real: Tensor<B, 1, Int>,
}

impl<B: Backend> KeptRows<B> {
    /// The rows of a `[batch, seq_len]` batch with padding `mask_pad` (`true` = padding; `None`:
    /// none) whose outputs at positions `discard` are not read. Reads the mask back to the host.
    ///
    /// # Shapes
    /// - `mask_pad`: `[batch, seq_len]`
    pub fn new(mask_pad: Option<&Tensor<B, 2, Bool>>, [batch, seq_len]: [usize; 2], discard: Range<usize>, device: &B::Device) -> Self {
        let padding = mask_pad.map(padding_of);
        let real: Vec<i64> = (0..batch * seq_len).filter(|&i| padding.as_ref().is_none_or(|p| !p[i])).map(|i| i as i64).collect();
        let (kept_in_real, kept): (Vec<i64>, Vec<i64>) =
            real.iter().enumerate().filter(|&(_, &i)| !discard.contains(&(i as usize % seq_len))).map(|(r, &i)| (r as i64, i)).unzip();
        let len = kept_in_real.len();
        Self {
            real: Unpadded::of_rows(real, [batch, seq_len], device),
            kept: Unpadded::of_rows(kept, [batch, seq_len], device),
            kept_in_real: Tensor::from_data(TensorData::new(kept_in_real, [len]), device),
        }
    }

    /// The kept tokens' rows among the real tokens' rows.
    ///
    /// # Shapes
    /// - `rows`: `[real tokens, d]`; output `[kept tokens, d]`
    pub fn keep(&self, rows: Tensor<B, 2>) -> Tensor<B, 2> {
        rows.select(0, self.kept_in_real.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type AB = Autodiff<Flex>;

    #[test]
    fn packs_the_real_tokens_and_puts_them_back() {
        let device = Default::default();
        let mask = Tensor::<AB, 2, Bool>::from_bool([[false, false, true], [false, true, true]].into(), &device);
        let unpadded = Unpadded::from_mask(&mask).unwrap();
        assert_eq!(unpadded.len(), 3);
        let x = Tensor::<AB, 3>::from_floats([[[1., 2.], [3., 4.], [5., 6.]], [[7., 8.], [9., 10.], [11., 12.]]], &device);
        let packed = unpadded.pack(x.clone());
        assert_eq!(packed.to_data().to_vec::<f32>().unwrap(), vec![1., 2., 3., 4., 7., 8.]);
        let back = unpadded.unpack(packed);
        let expected = [[[1., 2.], [3., 4.], [0., 0.]], [[7., 8.], [0., 0.], [0., 0.]]];
        assert_eq!(back.to_data().to_vec::<f32>().unwrap(), expected.as_flattened().as_flattened().to_vec());
    }

    #[test]
    fn gradients_reach_only_the_real_tokens() {
        let device = Default::default();
        let mask = Tensor::<AB, 2, Bool>::from_bool([[false, true], [false, false]].into(), &device);
        let unpadded = Unpadded::from_mask(&mask).unwrap();
        let x = Tensor::<AB, 3>::random([2, 2, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<AB, 3>::random([2, 2, 3], Distribution::Normal(0.0, 1.0), &device);
        let grads = (unpadded.unpack(unpadded.pack(x.clone()) * 2.0) * weights.clone()).sum().backward();
        let expected = weights.inner() * mask.inner().bool_not().float().unsqueeze_dim::<3>(2) * 2.0;
        // Compared as floats: a masked negative weight is -0.0 where the gradient is 0.0.
        let values = |t: Tensor<Flex, 3>| t.to_data().to_vec::<f32>().unwrap();
        assert_eq!(values(x.grad(&grads).unwrap()), values(expected));
    }

    #[test]
    fn kept_rows_are_the_real_tokens_outside_the_discarded_positions() {
        let device = Default::default();
        // Positions 1..3 discarded; sample 0 pads its last position, sample 1 none.
        let mask = Tensor::<Flex, 2, Bool>::from_bool([[false, false, false, true], [false; 4]].into(), &device);
        let rows = KeptRows::new(Some(&mask), [2, 4], 1..3, &device);
        assert_eq!((rows.real.len(), rows.kept.len()), (7, 3));
        let x = Tensor::<Flex, 3>::from_floats([[[0.], [1.], [2.], [3.]], [[4.], [5.], [6.], [7.]]], &device);
        assert_eq!(rows.kept.pack(x.clone()).to_data().to_vec::<f32>().unwrap(), vec![0., 4., 7.]);
        assert_eq!(rows.keep(rows.real.pack(x.clone())).to_data().to_vec::<f32>().unwrap(), vec![0., 4., 7.]);
        let unpadded = KeptRows::new(None, [2, 4], 1..3, &device);
        assert_eq!((unpadded.real.len(), unpadded.kept.len()), (8, 4));
        assert_eq!(unpadded.kept.pack(x).to_data().to_vec::<f32>().unwrap(), vec![0., 3., 4., 7.]);
    }

    #[test]
    fn no_padding_needs_no_packing() {
        let device = Default::default();
        let mask = Tensor::<Flex, 2, Bool>::from_bool([[false, false]].into(), &device);
        assert!(Unpadded::from_mask(&mask).is_none());
    }
}
