//! pMoE on small random ViT experts of different widths and depths: shapes, the dispatchers'
//! weights, gradients reaching exactly the trainable parts, and the one-expert reduction to
//! deep prompt tuning.

use backbones::{ViT, ViTConfig};
use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Distribution, Int, Tensor, Tolerance, backend::Backend};
use mope_core::{MopePromptsConfig, PromptableEncoder, float_params, forward_prompted, params_with_gradient};
use pmoe::{Combine, PmoeClassifier, PmoeConfig};

type AB = Autodiff<Flex>;

const CLASSES: usize = 3;

/// Two experts: 16 wide with 3 layers, 24 wide with 2 layers, both 16×16 images in 4×4 patches.
fn experts<B: Backend>() -> Vec<ViT<B>> {
    let device = Default::default();
    vec![ViTConfig::new(16, 4, 16, 2, 32, 3).init(&device), ViTConfig::new(16, 4, 24, 2, 48, 2).init(&device)]
}

fn pixels<B: Backend>(batch: usize) -> Tensor<B, 4> {
    Tensor::random([batch, 3, 16, 16], Distribution::Normal(0.0, 1.0), &Default::default())
}

#[test]
fn dispatchers_feed_every_expert_at_the_top_layers_with_distributions_over_sources() {
    let model: PmoeClassifier<Flex, ViT<Flex>> = PmoeConfig::new(CLASSES).with_prompt_len(4).init(experts(), &Default::default());
    assert_eq!(model.depth(), 2, "depth 0 prompts every layer of the shallowest expert");
    assert_eq!(model.prompt_len(), 4);
    assert_eq!((model.first_layer(0), model.first_layer(1)), (1, 0), "steps are aligned from the top");
    let x = pixels::<Flex>(2);
    let out = model.forward(&[x.clone(), x]);
    assert_eq!(out.logits.dims(), [2, CLASSES]);
    let sites: Vec<(usize, usize, [usize; 3])> = out.dispatch.iter().map(|d| (d.expert, d.layer, d.weights.dims())).collect();
    // Two experts' EPTs at the first step; the carried prompt joins them at the second.
    assert_eq!(sites, vec![(0, 1, [2, 4, 2]), (0, 2, [2, 4, 3]), (1, 0, [2, 4, 2]), (1, 1, [2, 4, 3])]);
    for d in &out.dispatch {
        let sums = d.weights.clone().sum_dim(2);
        sums.to_data().assert_approx_eq::<f32>(&Tensor::<Flex, 3>::ones([2, 4, 1], &Default::default()).to_data(), Tolerance::absolute(1e-6));
        assert!(d.weights.clone().min().into_scalar() >= 0.0);
    }
    // The 16-wide expert's EPTs enter the 24-wide expert through a projection, and back: one map
    // each way, shared by the two steps.
    assert_eq!(model.width_maps.maps.len(), 2);
    assert_eq!(model.width_maps.between(0, 0, 1).unwrap().weight.dims(), [24, 16]);
    assert_eq!(model.width_maps.between(1, 1, 0).unwrap().weight.dims(), [16, 24]);
    assert!(model.width_maps.between(0, 0, 0).is_none());
}

#[test]
fn dense_logits_are_on_the_finest_grid() {
    let device = Default::default();
    let coarse = ViTConfig::new(16, 8, 16, 2, 32, 2).init::<Flex>(&device);
    let fine = ViTConfig::new(16, 4, 16, 2, 32, 2).init::<Flex>(&device);
    for combine in [Combine::Dispatch, Combine::Mean, Combine::Concat] {
        let model = PmoeConfig::new(5).with_combine(combine).with_prompt_len(2).init(vec![coarse.clone(), fine.clone()], &device);
        let x = pixels::<Flex>(3);
        let out = model.forward_dense(&[x.clone(), x]);
        assert_eq!(out.logits.dims(), [3, 5, 4, 4], "{combine:?}");
        assert_eq!(out.dispatch.len(), if combine == Combine::Dispatch { 4 } else { 0 });
    }
}

#[test]
fn gradients_reach_exactly_the_prompts_dispatchers_and_head() {
    for combine in [Combine::Dispatch, Combine::Mean, Combine::Concat] {
        let model: PmoeClassifier<AB, ViT<AB>> = PmoeConfig::new(CLASSES).with_combine(combine).with_prompt_len(3).init(experts(), &Default::default());
        let x = pixels::<AB>(4);
        let labels = Tensor::<AB, 1, Int>::from_ints([0, 1, 2, 1], &Default::default());
        let out = model.forward(&[x.clone(), x]);
        let grads = CrossEntropyLossConfig::new().init(&labels.device()).forward(out.logits, labels).backward();
        let reached = params_with_gradient(&model, &grads);
        let trainable: Vec<(String, bool)> = float_params::<AB, _>(&model, |_, _| false).into_iter().map(|p| (p.path, p.trainable)).collect();
        assert_eq!(reached, trainable, "{combine:?}: gradient presence must equal trainability");
        for (path, has_gradient) in &reached {
            let adapter = ["prompts.", "dispatchers.", "width_maps.", "heads."].iter().any(|p| path.starts_with(p));
            assert_eq!(*has_gradient, adapter, "{combine:?}: {path}");
        }
        if combine == Combine::Dispatch {
            for needle in ["dispatchers.0.1.gate.weight", "width_maps.maps.1.weight", "prompts.1.steps.1"] {
                assert!(reached.iter().any(|(p, g)| *g && p.contains(needle)), "{needle} gets a gradient: {reached:?}");
            }
        }
    }
}

/// Deep prompt tuning (VPT-deep) of `expert` at its top `depth` layers with the given prompts,
/// through mope-core's static prompts: the reference the one-expert pMoE must equal.
fn deep_prompt_tuning(expert: &ViT<Flex>, prompts: &[Tensor<Flex, 2>], x: &Tensor<Flex, 4>) -> Tensor<Flex, 2> {
    let (layers, depth) = (expert.num_layers(), prompts.len());
    let [len, width] = prompts[0].dims();
    let mut vpt = MopePromptsConfig::new(layers, width, 0)
        .with_static_len(len)
        .with_num_experts(0)
        .with_mapped_len(0)
        .with_prompted_layers(Some((layers - depth..layers).collect()))
        .init::<Flex>(&Default::default());
    for (t, prompt) in prompts.iter().enumerate() {
        vpt.layers[layers - depth + t].as_mut().unwrap().static_prompt = Some(Param::from_tensor(prompt.clone()));
    }
    forward_prompted(expert, expert.embed(x), &mut vpt.run(None)).pooled
}

#[test]
fn with_one_expert_pmoe_is_deep_prompt_tuning() {
    let device = Default::default();
    let expert = ViTConfig::new(16, 4, 16, 2, 32, 3).init::<Flex>(&device);
    let x = pixels::<Flex>(2);
    for combine in [Combine::Dispatch, Combine::Mean] {
        let mut model = PmoeConfig::new(CLASSES).with_combine(combine).with_carry(false).with_depth(2).with_prompt_len(4).init(vec![expert.clone()], &device);
        if combine == Combine::Dispatch {
            // A gate far from zero: with one source its weight must still be exactly 1.
            for d in &mut model.dispatchers[0] {
                let dims = d.gate.weight.dims();
                d.gate.weight = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 5.0), &device));
            }
        }
        let out = model.forward(std::slice::from_ref(&x));
        let prompts: Vec<Tensor<Flex, 2>> = (0..2).map(|t| model.prompts[0].at(t)).collect();
        let pooled = deep_prompt_tuning(&model.experts[0], &prompts, &x);
        let reference = model.heads[0].forward(pooled);
        out.logits.to_data().assert_approx_eq::<f32>(&reference.to_data(), Tolerance::absolute(1e-5));
        for d in &out.dispatch {
            d.weights.to_data().assert_eq(&Tensor::<Flex, 3>::ones([2, 4, 1], &device).to_data(), true);
        }
    }
}

/// Late fusion over experts: no prompts, no dispatchers, one head over the concatenated pooled
/// outputs of the unprompted experts.
#[test]
fn late_fusion_heads_the_unprompted_experts_pooled_outputs() {
    let device = Default::default();
    let model: PmoeClassifier<Flex, ViT<Flex>> = PmoeConfig::new(CLASSES).with_combine(Combine::Concat).init(experts(), &device);
    assert!(model.prompts.is_empty() && model.dispatchers.is_empty());
    assert_eq!((model.depth(), model.prompt_len(), model.heads.len()), (0, 0, 1));
    assert_eq!(model.heads[0].weight.dims(), [16 + 24, CLASSES]);
    let x = pixels::<Flex>(2);
    let out = model.forward(&[x.clone(), x.clone()]);
    assert!(out.dispatch.is_empty());
    let pooled: Vec<Tensor<Flex, 2>> = model.experts.iter().map(|e| forward_prompted(e, e.embed(&x), &mut ()).pooled).collect();
    let reference = model.heads[0].forward(Tensor::cat(pooled, 1));
    out.logits.to_data().assert_approx_eq::<f32>(&reference.to_data(), Tolerance::absolute(1e-6));
    // Its pooled outputs are constant: the head on them, as cached, gives the same logits.
    assert!(model.pooled_is_constant());
    let constant = model.forward_constant(model.constant_pooled(&[x.clone(), x]));
    constant.logits.to_data().assert_eq(&out.logits.to_data(), true);
    let pmoe: PmoeClassifier<Flex, ViT<Flex>> = PmoeConfig::new(CLASSES).init(experts(), &device);
    assert!(!pmoe.pooled_is_constant());
}

#[test]
#[should_panic(expected = "depth 3 exceeds the shallowest expert's 2 layers")]
fn depth_beyond_an_expert_is_refused() {
    let _: PmoeClassifier<Flex, ViT<Flex>> = PmoeConfig::new(CLASSES).with_depth(3).init(experts(), &Default::default());
}
