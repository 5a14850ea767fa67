//! Optimisation helpers burn does not provide in this form: clipping by the *global* gradient
//! norm over every trainable tensor (PyTorch's `clip_grad_norm_`, which the official code uses;
//! burn's own clipping is per tensor), and splitting gradients into learning-rate groups.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};

struct SquaredNorm<'a, 'g, B: AutodiffBackend> {
    groups: &'a [&'g mut GradientsParams],
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, '_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        for grads in self.groups.iter() {
            if let Some(g) = grads.get::<B::InnerBackend, D>(param.id) {
                let sq = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
    }
}

struct Scale<'a, 'g> {
    groups: &'a mut [&'g mut GradientsParams],
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, '_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        for grads in self.groups.iter_mut() {
            if let Some(g) = grads.remove::<B::InnerBackend, D>(param.id) {
                grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
}

/// Scales the gradients of `model`'s parameters in `groups` so that their global L2 norm is at
/// most `max_norm`, and returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, groups: &mut [&mut GradientsParams], max_norm: f64) -> f64 {
    let mut visitor = SquaredNorm::<B> { groups, total: None };
    model.visit(&mut visitor);
    let norm = visitor.total.map_or(0.0, |t| t.into_scalar().elem::<f64>()).sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        model.visit(&mut Scale { groups, factor });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: burn::tensor::backend::Backend> {
        a: Linear<B>,
        b: Linear<B>,
    }

    #[test]
    fn clips_the_global_norm_across_groups() {
        let device = Default::default();
        let model = Two::<AB> { a: LinearConfig::new(2, 1).init(&device), b: LinearConfig::new(2, 1).init(&device) };
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![3.0f32, 4.0], [1, 2]), &device);
        // d/dW of sum(W x + b) is x, d/db is 1: per linear, |g|² = 9 + 16 + 1 = 26.
        let loss = model.a.forward(x.clone()).sum() + model.b.forward(x).sum();
        let mut grads = loss.backward();
        let mut a = GradientsParams::from_module(&mut grads, &model.a);
        let mut b = GradientsParams::from_module(&mut grads, &model.b);
        let norm = clip_global_norm(&model, &mut [&mut a, &mut b], 1.0);
        assert!((norm - 52f64.sqrt()).abs() < 1e-5, "{norm}");
        let mut after = clip_global_norm(&model, &mut [&mut a, &mut b], 0.0);
        assert!((after - 1.0).abs() < 1e-4, "clipped to 1, got {after}");
        after = clip_global_norm(&model, &mut [&mut a, &mut b], 10.0);
        assert!((after - 1.0).abs() < 1e-4, "under the limit: unchanged, got {after}");
        let w = a.get::<Flex, 2>(model.a.weight.id).unwrap().into_data().to_vec::<f32>().unwrap();
        let s = 1.0 / 52f32.sqrt();
        assert!((w[0] - 3.0 * s).abs() < 1e-5 && (w[1] - 4.0 * s).abs() < 1e-5, "{w:?}");
    }
}
