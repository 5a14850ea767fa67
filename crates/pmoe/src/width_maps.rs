//! The learned linear maps that carry one expert's EPTs into another expert's token width where
//! the two differ (MobileNetV2-into-MiniLM tokens are 384 wide, EfficientNet-into-Whisper tokens
//! 512). One map per ordered pair of experts and pair of widths, shared by every prompted layer
//! at which the two experts meet at those widths: one per pair for experts of constant width, one
//! per pair of stages for Swin experts. The EPTs themselves are free per layer, so a map shared by
//! the layers loses nothing a per-layer map would give, and costs `D_j · D_k` weights once instead
//! of once per layer. Where the widths match (the paper's ViT-B experts, all 768 wide) there is no
//! map.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

/// The maps between experts' widths, and which one serves each dispatcher and source.
#[derive(Module, Debug)]
pub struct WidthMaps<B: Backend> {
    /// The distinct maps, `D_source → D_target`, no bias.
    pub maps: Vec<Linear<B>>,
    /// `[target][step][source]`: the index of the map that carries the source's EPTs into the
    /// target's width at that step; `None` where the widths match.
    #[module(skip)]
    index: Vec<Vec<Vec<Option<usize>>>>,
}

impl<B: Backend> WidthMaps<B> {
    /// The maps for experts whose token widths at each prompted step are `widths[step][expert]`.
    pub fn new(widths: &[Vec<usize>], device: &B::Device) -> Self {
        let experts = widths.first().map_or(0, Vec::len);
        // (target, source, source width, target width) of each map, in creation order.
        let mut keys: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut maps = Vec::new();
        let index = (0..experts)
            .map(|k| {
                widths
                    .iter()
                    .map(|w| {
                        (0..experts)
                            .map(|j| {
                                if w[j] == w[k] {
                                    return None;
                                }
                                let key = (k, j, w[j], w[k]);
                                Some(keys.iter().position(|&seen| seen == key).unwrap_or_else(|| {
                                    keys.push(key);
                                    maps.push(LinearConfig::new(w[j], w[k]).with_bias(false).init(device));
                                    maps.len() - 1
                                }))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Self { maps, index }
    }

    /// The map carrying `source`'s EPTs into `target`'s width at `step`, if the widths differ.
    pub fn between(&self, target: usize, step: usize, source: usize) -> Option<&Linear<B>> {
        self.index[target][step][source].map(|i| &self.maps[i])
    }

    /// `source`'s EPTs of `step` in `target`'s width.
    ///
    /// # Shapes
    /// - `ept`: `[prompt_len, D_source]`; output `[prompt_len, D_target]`
    pub fn carry(&self, target: usize, step: usize, source: usize, ept: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.between(target, step, source) {
            Some(linear) => linear.forward(ept),
            None => ept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn one_map_per_pair_of_experts_and_widths_shared_by_the_layers() {
        let device = Default::default();
        // Three steps; experts 0 and 1 keep 4 and 6, expert 2 widens from 4 to 8 at step 2 (a
        // Swin stage).
        let widths = [vec![4, 6, 4], vec![4, 6, 4], vec![4, 6, 8]];
        let maps = WidthMaps::<Flex>::new(&widths, &device);
        // 0↔1 both ways; 2→1 and 1→2 at width 4, again at width 8; 0↔2 at step 2 only.
        assert_eq!(maps.maps.len(), 2 + 2 + 2 + 2);
        assert!(maps.between(0, 0, 0).is_none() && maps.between(0, 1, 2).is_none(), "equal widths need no map");
        assert_eq!(maps.between(0, 0, 1).unwrap().weight.dims(), [6, 4]);
        assert!(std::ptr::eq(maps.between(0, 0, 1).unwrap(), maps.between(0, 2, 1).unwrap()), "shared by the layers");
        assert_eq!(maps.between(1, 2, 2).unwrap().weight.dims(), [8, 6]);
        assert!(!std::ptr::eq(maps.between(1, 0, 2).unwrap(), maps.between(1, 2, 2).unwrap()), "a new pair of widths, a new map");
        let ept = Tensor::<Flex, 2>::ones([3, 6], &device);
        assert_eq!(maps.carry(2, 2, 1, ept.clone()).dims(), [3, 8]);
        assert_eq!(maps.carry(1, 0, 1, ept).dims(), [3, 6]);
    }
}
