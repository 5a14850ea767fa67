//! How an encoder turns its final token sequence into one vector per sample.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};
use ops::masked_mean;
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
    /// Whether the pooled vector depends on the prompt tokens' outputs.
    pub fn reads_prompts(self) -> bool {
        self == Self::MeanWithPrompts
    }

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
            Self::MeanWithPrompts => masked_mean(tokens, mask_pad.as_ref()),
            Self::Mean if num_prompts == 0 => masked_mean(tokens, mask_pad.as_ref()),
            Self::Mean => {
                // Prompt positions are left out of the mean as padding is.
                let mut column = vec![false; seq_len];
                column[prefix..prefix + num_prompts].iter_mut().for_each(|v| *v = true);
                let prompts = Tensor::<B, 1, Bool>::from_data(TensorData::new(column, [seq_len]), &device)
                    .unsqueeze_dim::<2>(0)
                    .expand([batch, seq_len]);
                let mask = match mask_pad {
                    Some(mask) => mask.bool_or(prompts),
                    None => prompts,
                };
                masked_mean(tokens, Some(&mask))
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
