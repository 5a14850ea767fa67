//! Counting parameters the way PEFT users know it:
//! `trainable params: N || all params: M || trainable%: P`, with *trainable* defined once as
//! "float parameters that require gradients", and a breakdown per top-level module.

use std::fmt;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};

use crate::format::thousands;

/// One float parameter, found by walking a module.
#[derive(Debug, Clone)]
pub struct FloatParam {
    /// Dot-separated module path, e.g. `prompts.layers.3.experts.experts`; this is the key under
    /// which the parameter is saved.
    pub path: String,
    /// Parameter id (the key of optimiser state).
    pub id: ParamId,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Whether the parameter requires gradients (always `false` on a backend without autodiff).
    pub trainable: bool,
    /// The values, when asked for.
    pub data: Option<TensorData>,
}

/// Walks every float parameter of `module`, reading the values of those for which
/// `want_data(path, trainable)` holds.
pub fn float_params<B: Backend, M: Module<B>>(
    module: &M,
    want_data: impl Fn(&str, bool) -> bool,
) -> Vec<FloatParam> {
    struct Walker<F> {
        path: Vec<String>,
        want_data: F,
        out: Vec<FloatParam>,
    }
    impl<B: Backend, F: Fn(&str, bool) -> bool> ModuleVisitor<B> for Walker<F> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let path = self.path.join(".");
            let trainable = value.is_require_grad();
            let data = (self.want_data)(&path, trainable).then(|| value.to_data());
            self.out.push(FloatParam {
                path,
                id: param.id,
                shape: value.dims().to_vec(),
                trainable,
                data,
            });
        }
    }
    let mut walker = Walker {
        path: Vec::new(),
        want_data,
        out: Vec::new(),
    };
    module.visit(&mut walker);
    walker.out
}

/// Draws every lazily initialised parameter of `module` now, in declaration order.
///
/// burn initialises parameters on first access, so without this the random values of a module
/// depend on the order in which its parameters are first used, not on the seed alone.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// Makes every float parameter of `module` require gradients (full fine-tuning).
pub fn unfreeze<B: Backend, M: Module<B>>(module: M) -> M {
    struct Unfreeze;
    impl<B: Backend> ModuleMapper<B> for Unfreeze {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.set_require_grad(true)
        }
    }
    module.map(&mut Unfreeze)
}

/// Replaces the values of float parameters by module path: `values(path, shape)` returns the new
/// values of the parameter at `path` and whether it requires gradients, or `None` to keep it.
/// Replaced parameters keep their id; a lazily initialised one is replaced without drawing its
/// random initial value. The shared mechanism of adapter loading and pretrained-weight loading.
pub fn replace_float_params<B: Backend, M: Module<B>>(
    module: M,
    values: impl FnMut(&str, &[usize]) -> Option<(TensorData, bool)>,
) -> M {
    struct Replacer<F> {
        path: Vec<String>,
        values: F,
    }
    impl<B: Backend, F: FnMut(&str, &[usize]) -> Option<(TensorData, bool)>> ModuleMapper<B> for Replacer<F> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let shape = param.shape().dims::<D>().to_vec();
            match (self.values)(&self.path.join("."), &shape) {
                None => param,
                Some((data, trainable)) => {
                    let device = param.lazy_device();
                    Param::initialized(param.id, Tensor::<B, D>::from_data(data, &device).set_require_grad(trainable))
                }
            }
        }
    }
    module.map(&mut Replacer { path: Vec::new(), values })
}

/// For every float parameter of `module`, its path and whether `grads` holds a gradient for it:
/// the check behind "gradients reach exactly the trainable parameters".
pub fn params_with_gradient<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<(String, bool)> {
    struct Walker<'a, B: AutodiffBackend> {
        path: Vec<String>,
        grads: &'a B::Gradients,
        out: Vec<(String, bool)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Walker<'_, B> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let has_grad = param.val().grad(self.grads).is_some();
            self.out.push((self.path.join("."), has_grad));
        }
    }
    let mut walker = Walker::<B> { path: Vec::new(), grads, out: Vec::new() };
    module.visit(&mut walker);
    walker.out
}

/// Parameter counts of one top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleParams {
    /// Field name of the module in the model.
    pub name: String,
    /// Parameters that require gradients.
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

/// Trainable and total parameter counts of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSummary {
    /// Parameters that require gradients.
    pub trainable: usize,
    /// All parameters, frozen ones included.
    pub total: usize,
    /// Breakdown per top-level module, in declaration order.
    pub modules: Vec<ModuleParams>,
}

impl ParamSummary {
    /// Counts the parameters of a model on an autodiff backend (only there does "requires
    /// gradients" mean anything).
    pub fn of<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> Self {
        let mut modules: Vec<ModuleParams> = Vec::new();
        let (mut trainable, mut total) = (0, 0);
        for p in float_params::<B, M>(module, |_, _| false) {
            let n: usize = p.shape.iter().product();
            let top = p.path.split('.').next().unwrap_or("").to_string();
            let entry = match modules.iter_mut().find(|m| m.name == top) {
                Some(entry) => entry,
                None => {
                    modules.push(ModuleParams { name: top, trainable: 0, total: 0 });
                    modules.last_mut().expect("just pushed")
                }
            };
            entry.total += n;
            total += n;
            if p.trainable {
                entry.trainable += n;
                trainable += n;
            }
        }
        Self { trainable, total, modules }
    }

    /// Trainable share in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 { 0.0 } else { 100.0 * self.trainable as f64 / self.total as f64 }
    }

    /// One line per top-level module: name, state (trainable, frozen or partly trainable) and counts.
    pub fn table(&self) -> String {
        let width = self.modules.iter().map(|m| m.name.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        for m in &self.modules {
            let state = match (m.trainable, m.total) {
                (0, _) => "frozen",
                (t, n) if t == n => "trainable",
                _ => "partly trainable",
            };
            out.push_str(&format!(
                "{:<width$}  {:<16}  {:>13} / {:>13}\n",
                m.name,
                state,
                thousands(m.trainable),
                thousands(m.total)
            ));
        }
        out
    }
}

impl fmt::Display for ParamSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable),
            thousands(self.total),
            self.percent()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Toy<B: Backend> {
        backbone: Linear<B>,
        head: Linear<B>,
    }

    #[test]
    fn counts_trainable_from_require_grad() {
        let device = Default::default();
        let toy = Toy::<AB> {
            backbone: LinearConfig::new(10, 10).init(&device).no_grad(),
            head: LinearConfig::new(10, 3).init(&device),
        };
        let s = ParamSummary::of(&toy);
        assert_eq!((s.trainable, s.total), (33, 143));
        assert_eq!(
            s.modules,
            vec![
                ModuleParams { name: "backbone".into(), trainable: 0, total: 110 },
                ModuleParams { name: "head".into(), trainable: 33, total: 33 },
            ]
        );
        assert_eq!(s.to_string(), "trainable params: 33 || all params: 143 || trainable%: 23.0769");
        assert!(s.table().contains("backbone  frozen"));
    }

    #[test]
    fn paths_are_field_names() {
        let device = Default::default();
        let toy = Toy::<AB> {
            backbone: LinearConfig::new(2, 2).init(&device),
            head: LinearConfig::new(2, 1).with_bias(false).init(&device),
        };
        let paths: Vec<String> = float_params::<AB, _>(&toy, |_, _| false).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["backbone.weight", "backbone.bias", "head.weight"]);
    }
}
