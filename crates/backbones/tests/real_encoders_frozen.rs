//! "Frozen means frozen" on the real pretrained encoders: MoPE over the CNN-token hybrid
//! (MobileNetV2 + all-MiniLM-L6-v2) with all-MiniLM-L6-v2 as the complementary encoder, on real
//! photographs and captions. After an AdamW step, every pretrained tensor is bit-identical,
//! gradients reached exactly the trainable parameters, and under 1% of the parameters train.
//! Runs when `cargo xtask fetch-assets` has fetched the assets (CI does).

mod common;

use backbones::{BERT_CLS_ID, CnnTokenEncoder, InputSpec, TokenEncoder, by_name};
use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use common::weights_dir;
use mope_core::{
    FusionMethod, MopePromptsConfig, MultimodalClassifier, MultimodalClassifierConfig, ParamSummary, float_params,
    params_with_gradient,
};

type AB = Autodiff<Flex>;
type Model = MultimodalClassifier<AB, CnnTokenEncoder<AB>, TokenEncoder<AB>>;

#[test]
fn mope_on_real_encoders_trains_only_the_adapter() {
    let weights = weights_dir();
    let device = Default::default();
    let text = by_name("all-minilm-l6-v2").unwrap();
    let (main, complementary, tokenizer) = match (|| {
        let cnn = by_name("mobilenet-v2").unwrap();
        let main = CnnTokenEncoder::<AB>::new(
            cnn.load_cnn(&cnn.dir(&weights)?, &device)?,
            text.load_token_transformer(&text.dir(&weights)?, &device)?,
            13,
            BERT_CLS_ID,
            &device,
        );
        let (complementary, tokenizer) = text.load_text::<AB>(&text.dir(&weights)?, &device)?;
        Ok::<_, backbones::BackboneError>((main, complementary, tokenizer))
    })() {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("SKIPPED mope_on_real_encoders_trains_only_the_adapter: {e}");
            return;
        }
    };
    let prompts = MopePromptsConfig::new(0, 0, 0).with_static_len(6).with_num_experts(4).with_expert_len(6);
    let model: Model = MultimodalClassifierConfig::new(FusionMethod::Mope, 3, prompts).init(main, complementary, &device);
    let summary = ParamSummary::of(&model);
    println!("{summary}\n{}", summary.table());
    assert!(summary.percent() < 1.0, "MoPE trains under 1% of the parameters: {summary}");

    let InputSpec::Image(preprocess) = by_name("mobilenet-v2").unwrap().input else { unreachable!() };
    let images = weights.join("../images");
    let pixels: Vec<Vec<f32>> =
        ["chelsea.png", "coffee.png", "rocket.jpg"].iter().map(|f| preprocess.load(&images.join(f)).unwrap()).collect();
    let pixels = preprocess.batch::<AB>(&pixels, &device);
    let captions = tokenizer.encode::<AB>(&["a cat on a sofa", "a cup of coffee", "a rocket on the launch pad"], &device).unwrap();
    let labels = Tensor::<AB, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2], [3]), &device);

    let before: Vec<(String, bool, Vec<f32>)> = float_params::<AB, _>(&model, |_, _| true)
        .into_iter()
        .map(|p| (p.path, p.trainable, p.data.unwrap().to_vec().unwrap()))
        .collect();
    let out = model.forward(&pixels, &captions);
    assert_eq!(out.routing.len(), 6, "every MiniLM layer is routed");
    let loss = CrossEntropyLossConfig::new().init(&device).forward(out.logits, labels) + out.importance_loss * 0.01;
    let grads = loss.backward();
    let reached = params_with_gradient(&model, &grads);
    for ((path, has_grad), (_, trainable, _)) in reached.iter().zip(&before) {
        assert_eq!(has_grad, trainable, "{path}: gradient presence must equal trainability");
    }
    let grads = GradientsParams::from_grads(grads, &model);
    let model = AdamWConfig::new().init::<AB, Model>().step(1e-3, model, grads);
    let after = float_params::<AB, _>(&model, |_, _| true);
    let mut frozen = 0;
    for ((path, trainable, a), b) in before.iter().zip(after) {
        if !trainable {
            assert_eq!(a, &b.data.unwrap().to_vec::<f32>().unwrap(), "{path} is pretrained and frozen: it must not change");
            frozen += 1;
        }
    }
    assert!(frozen > 300, "{frozen} frozen tensors checked");
    assert!(model.main.projection.weight.val().is_require_grad(), "the hybrid's projection trains");
    assert_eq!(model.clone().main.transformer.num_params(), model.complementary.num_params(), "same MiniLM on both sides");
}
