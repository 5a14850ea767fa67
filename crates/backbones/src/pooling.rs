//! How an encoder turns its final token sequence into one vector per sample.

use burn::tensor::{Bool, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// Pooling of the final hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The first token (`[CLS]`): BERT's classification feature, ViT's.
    #[default]
    Cls,
    /// Mean over non-padding tokens, prompt tokens excluded (sentence-transformers).
    Mean,
    /// Mean over all non-padding tokens, prompt tokens included (the official MoPE Swin head).
    MeanWithPrompts,
}

impl Pooling {
    /// Pools `tokens`, whose prompt tokens sit at positions `prefix..prefix + num_prompts`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len, d_model]`, `mask_pad`: `[batch, seq_len]`
    /// - output: `[batch, d_model]`
    pub fn apply<B: Backend>(
        self,
        tokens: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        prefix: usize,
        num_prompts: usize,
    ) -> Tensor<B, 2> {
        let [batch, seq_len, _] = tokens.dims();
        let device = tokens.device();
        match self {
            Self::Cls => tokens.narrow(1, 0, 1).squeeze_dim(1),
            Self::Mean | Self::MeanWithPrompts => {
                let mut keep = match mask_pad {
                    Some(mask) => mask.bool_not().float(),
                    None => Tensor::ones([batch, seq_len], &device),
                };
                if self == Self::Mean && num_prompts > 0 {
                    let mut column = vec![1f32; seq_len];
                    column[prefix..prefix + num_prompts].iter_mut().for_each(|v| *v = 0.0);
                    let column = Tensor::<B, 1>::from_floats(column.as_slice(), &device).unsqueeze_dim::<2>(0);
                    keep = keep * column;
                }
                let keep = keep.unsqueeze_dim::<3>(2); // [batch, seq_len, 1]
                let count = keep.clone().sum_dim(1).clamp_min(1e-9);
                (tokens * keep).sum_dim(1).div(count).squeeze_dim(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    type B = Flex;

    #[test]
    fn pools_as_documented() {
        let device = Default::default();
        // [CLS]=1, prompt=10, tokens 2 and 4, one padding token 100.
        let tokens = Tensor::<B, 3>::from_floats([[[1.0], [10.0], [2.0], [4.0], [100.0]]], &device);
        let mask = Tensor::<B, 2, Bool>::from_bool([[false, false, false, false, true]].into(), &device);
        let pool = |p: Pooling| p.apply(tokens.clone(), Some(mask.clone()), 1, 1).into_data();
        pool(Pooling::Cls).assert_approx_eq::<f32>(&Tensor::<B, 2>::from_floats([[1.0]], &device).into_data(), Tolerance::default());
        pool(Pooling::Mean).assert_approx_eq::<f32>(&Tensor::<B, 2>::from_floats([[7.0 / 3.0]], &device).into_data(), Tolerance::default());
        pool(Pooling::MeanWithPrompts)
            .assert_approx_eq::<f32>(&Tensor::<B, 2>::from_floats([[17.0 / 4.0]], &device).into_data(), Tolerance::default());
    }
}
