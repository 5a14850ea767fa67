//! Swin: parity with Hugging Face transformers' `SwinModel` on a tiny random model (two stages,
//! shifted windows in both; fixture made by `fixtures/make_fixtures.py`), and the behaviour of
//! deep prompts inside windows: per-sample prompts never leak to batch mates (the official code's
//! layout does leak, reproduced on purpose), prompts change the output, and prompt tokens flow
//! through patch merging with the stage's width.

mod common;

use backbones::{Pooling, PromptLayout, Swin, load_swin};
use burn::backend::Flex;
use burn::tensor::{Bool, Distribution, Tensor, TensorData, Tolerance};
use common::{fixtures, reference, relative_error};
use mope_core::{LayerPromptSource, PromptableEncoder, forward_prompted};

type B = Flex;

fn pixels() -> Tensor<B, 4> {
    let (values, shape) = reference(&fixtures().join("tiny-swin/expected.safetensors"), "pixel_values");
    Tensor::from_data(
        TensorData::new(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), [shape[0], shape[1], shape[2], shape[3]]),
        &Default::default(),
    )
}

fn swin(layout: PromptLayout, pooling: Pooling) -> Swin<B> {
    load_swin::<B>(&fixtures().join("tiny-swin"), pooling, layout, &Default::default()).unwrap().0
}

#[test]
fn tiny_swin_matches_transformers() {
    let (swin, report) = load_swin::<B>(&fixtures().join("tiny-swin"), Pooling::Mean, PromptLayout::PerSample, &Default::default()).unwrap();
    assert!(report.unused.iter().all(|k| k.ends_with("relative_position_index")), "{:?}", report.unused);
    let out = forward_prompted(&swin, swin.embed(&pixels()), &mut ());
    let expected = fixtures().join("tiny-swin/expected.safetensors");
    let (hidden, shape) = reference(&expected, "last_hidden_state");
    let ours = swin.final_norm.forward(out.tokens);
    assert_eq!(ours.dims().to_vec(), shape);
    let err = relative_error(&ours.to_data().to_vec::<f32>().unwrap(), &hidden);
    println!("swin_parity: last hidden state relative error {err:.2e}");
    assert!(err < 1e-4, "last hidden state relative error {err:e}");
    let (pooled, _) = reference(&expected, "pooled");
    let err = relative_error(&out.pooled.to_data().to_vec::<f32>().unwrap(), &pooled);
    println!("swin_parity: pooled relative error {err:.2e}");
    assert!(err < 1e-4, "pooled relative error {err:e}");
}

/// Per-sample prompts made from each sample's own tokens, at the layers given.
struct OwnTokens {
    layers: Vec<usize>,
    len: usize,
}

impl LayerPromptSource<B> for OwnTokens {
    fn prompts(&mut self, layer: usize, hidden: &Tensor<B, 3>, _: Option<&Tensor<B, 2, Bool>>) -> Option<Tensor<B, 3>> {
        let [_, seq, _] = hidden.dims();
        self.layers.contains(&layer).then(|| hidden.clone().narrow(1, seq - self.len, self.len) * 3.0)
    }
}

fn prompted(swin: &Swin<B>, pixels: Tensor<B, 4>, layers: Vec<usize>) -> Tensor<B, 2> {
    forward_prompted(swin, swin.embed(&pixels), &mut OwnTokens { layers, len: 3 }).pooled
}

#[test]
fn per_sample_prompts_do_not_leak_to_batch_mates() {
    let swin = swin(PromptLayout::PerSample, Pooling::MeanWithPrompts);
    let layers: Vec<usize> = (0..swin.num_layers()).collect();
    let batch = prompted(&swin, pixels(), layers.clone());
    for i in 0..2 {
        let alone = prompted(&swin, pixels().narrow(0, i, 1), layers.clone());
        alone.to_data().assert_approx_eq::<f32>(&batch.clone().narrow(0, i, 1).to_data(), Tolerance::default());
    }
    let plain = forward_prompted(&swin, swin.embed(&pixels()), &mut ()).pooled;
    let diff: f32 = (plain - batch).abs().max().into_scalar();
    assert!(diff > 1e-3, "prompts change the output ({diff})");
}

#[test]
fn the_official_layout_leaks_prompts_across_the_batch() {
    let swin = swin(PromptLayout::OfficialWindowMajor, Pooling::MeanWithPrompts);
    let layers: Vec<usize> = (0..swin.num_layers()).collect();
    let batch = prompted(&swin, pixels(), layers.clone());
    let alone = prompted(&swin, pixels().narrow(0, 0, 1), layers);
    let diff: f32 = (alone - batch.narrow(0, 0, 1)).abs().max().into_scalar();
    assert!(diff > 1e-3, "with the official layout a sample's output depends on its batch mates ({diff})");
}

#[test]
fn prompts_flow_through_patch_merging_at_the_stage_width() {
    let swin = swin(PromptLayout::PerSample, Pooling::Mean);
    assert_eq!(swin.stage_starts(), [0, 2]);
    assert_eq!((0..4).map(|l| swin.layer_width(l)).collect::<Vec<_>>(), [16, 16, 32, 32]);
    let embedded = swin.embed(&Tensor::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &Default::default()));
    // Prompted only at layer 0: the 3 prompt tokens pass the merging (16 → 32 wide) and stage 2.
    let out = forward_prompted(&swin, embedded, &mut OwnTokens { layers: vec![0], len: 3 });
    assert_eq!(out.num_prompts, 3);
    assert_eq!(out.tokens.dims(), [1, 3 + 64, 32]);
}

#[test]
fn mope_over_swin_routes_every_block_but_stage_starts_at_its_width() {
    use backbones::{TokenEncoder, TokenEncoderConfig};
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use mope_core::{FusionMethod, MopePromptsConfig, MultimodalClassifier, MultimodalClassifierConfig, ParamSummary};
    type AB = Autodiff<Flex>;

    let device = Default::default();
    let main = Swin::<AB>::from_inner(swin(PromptLayout::PerSample, Pooling::MeanWithPrompts));
    let complementary = TokenEncoderConfig::new(20, 12, 2, 24, 1).init::<AB>(&device);
    let prompts = MopePromptsConfig::new(0, 0, 0).with_static_len(2).with_num_experts(3).with_expert_len(2).with_mapper_hidden(6);
    let model: MultimodalClassifier<AB, Swin<AB>, TokenEncoder<AB>> =
        MultimodalClassifierConfig::new(FusionMethod::Mope, 4, prompts).init(main, complementary, &device);
    let layers = &model.prompts.as_ref().unwrap().layers;
    assert_eq!(layers.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, false, true], "stage starts carry prompts");
    let widths: Vec<usize> = layers.iter().flatten().map(|l| l.experts.as_ref().unwrap().experts.dims()[2]).collect();
    assert_eq!(widths, [16, 32]);
    // Per stage: static 2·w + experts 3·2·w + router (w·2+2) + (12·8+8); mapper 12→6, 6→16 and 6→32; head 32→4.
    let routed = |w: usize| 2 * w + 6 * w + (2 * w + 2) + (12 * 8 + 8);
    let expected = routed(16) + routed(32) + (12 * 6 + 6) + (6 * 16 + 16) + (6 * 32 + 32) + (32 * 4 + 4);
    assert_eq!(ParamSummary::of(&model).trainable, expected);

    let ids = Tensor::<AB, 2, burn::tensor::Int>::from_data(TensorData::new(vec![1i64, 5, 6, 1, 7, 0], [2, 3]), &device);
    let mask = Tensor::<AB, 2, Bool>::from_data(TensorData::new(vec![false, false, false, false, false, true], [2, 3]), &device);
    let out = model.valid().forward(&pixels(), &backbones::TokenBatch { ids: ids.inner(), mask_pad: mask.inner() });
    assert_eq!(out.logits.dims(), [2, 4]);
    assert_eq!(out.routing.iter().map(|(l, r)| (*l, r.weights.dims())).collect::<Vec<_>>(), [(1, [2, 3]), (3, [2, 3])]);
}
