//! The adapter contract of parameter-efficient tuning, end to end on small transformer encoders:
//! frozen backbones stay bit-identical, gradients reach exactly the trainable parameters, the
//! trainable count is what the configuration implies, and an adapter saved from a trained model
//! and loaded onto a freshly built one reproduces its logits exactly. Bad adapters are refused
//! with an error naming the file and the key.

use std::path::Path;
use std::sync::OnceLock;

use backbones::{TokenBatch, TokenEncoder, TokenEncoderConfig};
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use mope_core::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use mope_core::{
    FusionMethod, HeadInput, MopePromptsConfig, materialize, MultimodalClassifier, MultimodalClassifierConfig, ParamSummary, float_params,
    load_adapter, params_with_gradient, save_adapter,
};

type AB = Autodiff<Flex>;
type Model<B> = MultimodalClassifier<B, TokenEncoder<B>, TokenEncoder<B>>;

const NUM_CLASSES: usize = 3;

/// The stand-in "pretrained" encoders, built once per process and shared, as if loaded from a
/// file. (burn's seeded generator is global and other tests draw from it concurrently, so
/// re-seeding before each build would not give the same weights.)
fn pretrained() -> (TokenEncoder<Flex>, TokenEncoder<Flex>) {
    static ENCODERS: OnceLock<(TokenEncoder<Flex>, TokenEncoder<Flex>)> = OnceLock::new();
    ENCODERS
        .get_or_init(|| {
            let device = Default::default();
            Flex::seed(&device, 7);
            let main = materialize(TokenEncoderConfig::new(40, 16, 2, 32, 3).with_max_position(16).init(&device));
            let complementary = materialize(TokenEncoderConfig::new(40, 12, 2, 24, 2).with_max_position(16).init(&device));
            (main, complementary)
        })
        .clone()
}

fn config(method: FusionMethod, num_classes: usize) -> MultimodalClassifierConfig {
    let prompts = MopePromptsConfig::new(0, 0, 0)
        .with_static_len(2)
        .with_num_experts(4)
        .with_expert_len(2)
        .with_mapped_len(1)
        .with_mapper_hidden(8);
    MultimodalClassifierConfig::new(method, num_classes, prompts).with_importance_threshold(0.0)
}

/// An inference model around the pretrained encoders; its trainable parts are freshly drawn.
fn model(method: FusionMethod, num_classes: usize) -> Model<Flex> {
    let (main, complementary) = pretrained();
    config(method, num_classes).init(main, complementary, &Default::default())
}

/// A trainable model around the pretrained encoders.
fn model_ad(method: FusionMethod, num_classes: usize) -> Model<AB> {
    let (main, complementary) = pretrained();
    config(method, num_classes).init(
        TokenEncoder::<AB>::from_inner(main),
        TokenEncoder::<AB>::from_inner(complementary),
        &Default::default(),
    )
}

/// A batch of 4 samples: token ids, padding, labels.
fn batch<B: Backend>() -> (TokenBatch<B>, TokenBatch<B>, Tensor<B, 1, Int>) {
    let device = Default::default();
    let tokens = |ids: Vec<i64>, lens: [usize; 4], width: usize| {
        let pad: Vec<bool> = lens.iter().flat_map(|&n| (0..width).map(move |i| i >= n)).collect();
        TokenBatch {
            ids: Tensor::from_data(TensorData::new(ids, [4, width]), &device),
            mask_pad: Tensor::from_data(TensorData::new(pad, [4, width]), &device),
        }
    };
    let main = tokens((0..24).map(|i| 1 + (i * 7) % 39).collect(), [6, 4, 5, 3], 6);
    let complementary = tokens((0..20).map(|i| 1 + (i * 11) % 39).collect(), [5, 5, 2, 4], 5);
    let labels = Tensor::from_data(TensorData::new(vec![0i64, 2, 1, 2], [4]), &device);
    (main, complementary, labels)
}

fn train_step(model: Model<AB>) -> Model<AB> {
    let (main, complementary, labels) = batch::<AB>();
    let out = model.forward(&main, &complementary);
    let loss = CrossEntropyLossConfig::new().init(&labels.device()).forward(out.logits, labels)
        + out.importance_loss * 0.01;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optimizer = AdamWConfig::new().init::<AB, Model<AB>>();
    optimizer.step(1e-2, model, grads)
}

fn values<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, bool, Vec<f32>)> {
    float_params::<B, M>(model, |_, _| true)
        .into_iter()
        .map(|p| (p.path, p.trainable, p.data.unwrap().to_vec::<f32>().unwrap()))
        .collect()
}

fn logits(model: &Model<Flex>) -> Vec<f32> {
    let (main, complementary, _) = batch::<Flex>();
    model.forward(&main, &complementary).logits.to_data().to_vec().unwrap()
}

#[test]
fn trainable_count_is_what_the_config_implies() {
    let model = model_ad(FusionMethod::Mope, NUM_CLASSES);
    let summary = ParamSummary::of(&model);
    println!("{summary}\n{}", summary.table());
    // Per layer (d=16, d_comp=12): static 2x16 + experts 4x2x16 + router self 16x2+2 + cross 12x8+8.
    let per_layer = 32 + 128 + 34 + 104;
    // Mapper 12→8→16, head 16→3.
    let trainable = 3 * per_layer + (12 * 8 + 8) + (8 * 16 + 16) + (16 * 3 + 3);
    assert_eq!(summary.trainable, trainable);
    let keys = 3 * 10 * 4; // frozen orthogonal router keys
    let (main, complementary) = pretrained();
    assert_eq!(summary.total, trainable + keys + main.num_params() + complementary.num_params());
    assert_eq!(
        summary.to_string(),
        format!(
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            mope_core::thousands(trainable),
            mope_core::thousands(summary.total),
            100.0 * trainable as f64 / summary.total as f64
        )
    );
    let frozen: Vec<&str> = summary.modules.iter().filter(|m| m.trainable == 0).map(|m| m.name.as_str()).collect();
    assert_eq!(frozen, ["main", "complementary"]);
}

#[test]
fn gradients_reach_exactly_the_trainable_parameters() {
    for method in [FusionMethod::Mope, FusionMethod::Sequential, FusionMethod::PromptTuning, FusionMethod::LateFusion] {
        let model = model_ad(method, NUM_CLASSES);
        let (main, complementary, labels) = batch::<AB>();
        let out = model.forward(&main, &complementary);
        let loss = CrossEntropyLossConfig::new().init(&labels.device()).forward(out.logits, labels)
            + out.importance_loss * 0.01;
        let grads = loss.backward();
        let trainable: Vec<(String, bool)> =
            float_params::<AB, _>(&model, |_, _| false).into_iter().map(|p| (p.path, p.trainable)).collect();
        let reached = params_with_gradient(&model, &grads);
        assert_eq!(reached, trainable, "{method:?}: gradient presence must equal trainability");
        assert!(reached.iter().any(|(p, g)| *g && p.starts_with("head.")));
        assert!(reached.iter().all(|(p, g)| !*g || !(p.starts_with("main.") || p.starts_with("complementary."))));
        assert!(reached.iter().all(|(p, g)| !*g || p.starts_with("head.") || p.starts_with("prompts.")));
        if method == FusionMethod::Mope {
            for needle in ["experts.experts", "router.self_proj.weight", "router.cross_proj.weight", "static_prompt", "mapped.hidden.weight"] {
                assert!(reached.iter().any(|(p, g)| *g && p.contains(needle)), "{needle} gets a gradient");
            }
            assert!(reached.iter().all(|(p, g)| !(p.ends_with("router.keys") && *g)), "router keys are frozen");
        }
    }
}

/// The head reads what `head` says: the widths of its input (main 16, complementary 12), and a
/// probe of the complementary modality alone whose logits do not depend on the main input and
/// whose gradient reaches the head only.
#[test]
fn each_head_input_reads_what_it_says() {
    let (main, complementary) = pretrained();
    let device = Default::default();
    for (method, head, width) in [
        (FusionMethod::Mope, None, 16),
        (FusionMethod::Mope, Some(HeadInput::Both), 28),
        (FusionMethod::PromptTuning, None, 28),
        (FusionMethod::PromptTuning, Some(HeadInput::Main), 16),
        (FusionMethod::LateFusion, Some(HeadInput::Complementary), 12),
    ] {
        let model: Model<AB> = config(method, NUM_CLASSES).with_head(head).init(TokenEncoder::<AB>::from_inner(main.clone()), TokenEncoder::<AB>::from_inner(complementary.clone()), &device);
        assert_eq!(model.head.weight.dims(), [width, NUM_CLASSES], "{method:?} {head:?}");
    }
    let probe: Model<AB> = config(FusionMethod::LateFusion, NUM_CLASSES)
        .with_head(Some(HeadInput::Complementary))
        .init(TokenEncoder::<AB>::from_inner(main), TokenEncoder::<AB>::from_inner(complementary), &device);
    let (main_input, complementary_input, labels) = batch::<AB>();
    let other_main = TokenBatch { ids: main_input.ids.clone().flip([1]), mask_pad: main_input.mask_pad.clone() };
    let out = probe.forward(&main_input, &complementary_input);
    let logits = out.logits.to_data();
    logits.assert_eq(&probe.forward(&other_main, &complementary_input).logits.to_data(), true);
    let grads = CrossEntropyLossConfig::new().init(&labels.device()).forward(out.logits, labels).backward();
    for (path, has_gradient) in params_with_gradient(&probe, &grads) {
        assert_eq!(has_gradient, path.starts_with("head."), "{path}");
    }
}

/// Late fusion's main representation is a constant of the sample, and the head on it (cached,
/// as `forward_constant` reads it) gives the logits of the full forward pass, for each head;
/// prompted and fine-tuned main encoders are not constant.
#[test]
fn late_fusion_classifies_from_its_constant_main_representation_as_from_the_encoder() {
    let (main, complementary, _) = batch::<Flex>();
    for head in [None, Some(HeadInput::Main), Some(HeadInput::Complementary)] {
        let (m, c) = pretrained();
        let model: Model<Flex> = config(FusionMethod::LateFusion, NUM_CLASSES).with_head(head).init(m, c, &Default::default());
        assert!(model.main_is_constant());
        let feature = model.complementary_feature(&complementary);
        let full = model.forward_with_feature(&main, feature.clone()).logits;
        let pooled = model.reads_main().then(|| model.main_feature(&main));
        assert_eq!(model.reads_main(), head != Some(HeadInput::Complementary));
        full.to_data().assert_eq(&model.forward_constant(pooled, feature).logits.to_data(), true);
    }
    for method in [FusionMethod::Mope, FusionMethod::Sequential, FusionMethod::PromptTuning, FusionMethod::FineTuning] {
        assert!(!model(method, NUM_CLASSES).main_is_constant(), "{method:?}");
    }
}

#[test]
#[should_panic(expected = "a head on the complementary representation only is late fusion's probe")]
fn a_prompted_method_cannot_drop_the_main_encoder_from_its_head() {
    let _ = config(FusionMethod::Mope, NUM_CLASSES).with_head(Some(HeadInput::Complementary)).init::<Flex, _, _>(pretrained().0, pretrained().1, &Default::default());
}

#[test]
fn fine_tuning_trains_the_whole_main_encoder_and_nothing_of_the_complementary() {
    let model = model_ad(FusionMethod::FineTuning, NUM_CLASSES);
    let (main, complementary, labels) = batch::<AB>();
    let out = model.forward(&main, &complementary);
    let grads = CrossEntropyLossConfig::new().init(&labels.device()).forward(out.logits, labels).backward();
    let reached = params_with_gradient(&model, &grads);
    for (path, has_gradient) in &reached {
        let expected = path.starts_with("main.") || path.starts_with("head.");
        assert_eq!(*has_gradient, expected, "{path}");
    }
    assert!(model.prompts.is_none() && out.routing.is_empty());
    let summary = ParamSummary::of(&model);
    let main = summary.modules.iter().find(|m| m.name == "main").unwrap();
    assert_eq!(main.trainable, main.total, "every main parameter trains");
}

#[test]
fn a_training_step_leaves_backbones_bit_identical_and_moves_every_trainable_tensor() {
    let model = model_ad(FusionMethod::Mope, NUM_CLASSES);
    let before = values::<AB, _>(&model);
    let after = values::<AB, _>(&train_step(model));
    assert_eq!(before.len(), after.len());
    for ((path, trainable, a), (_, _, b)) in before.iter().zip(&after) {
        if *trainable {
            assert_ne!(a, b, "{path} is trainable and must move");
        } else {
            assert_eq!(a, b, "{path} is frozen and must stay bit-identical");
        }
    }
}

#[test]
fn adapter_round_trip_reproduces_logits_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let trained = train_step(model_ad(FusionMethod::Mope, NUM_CLASSES));
    let summary = ParamSummary::of(&trained);
    let report = save_adapter(
        &trained,
        dir.path(),
        FusionMethod::Mope.name(),
        serde_json::json!({"main": "test-encoder", "complementary": "test-encoder"}),
        serde_json::to_value(config(FusionMethod::Mope, NUM_CLASSES)).unwrap(),
    )
    .unwrap();
    println!("{report}");
    assert_eq!(report.params, summary.trainable);
    // The file holds the trainable tensors and nothing else: 4 bytes each plus a small header.
    let payload = 4 * summary.trainable as u64;
    assert!(report.bytes >= payload && report.bytes < payload + 8 * 1024, "{} bytes for {payload}", report.bytes);
    let saved: Vec<String> = safetensors::SafeTensors::deserialize(&std::fs::read(dir.path().join(ADAPTER_WEIGHTS_FILE)).unwrap())
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let expected: Vec<String> = float_params::<AB, _>(&trained, |_, _| false)
        .into_iter()
        .filter(|p| p.trainable)
        .map(|p| p.path)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(saved, expected);

    let reference = logits(&trained.valid());
    let fresh = model(FusionMethod::Mope, NUM_CLASSES);
    assert_ne!(logits(&fresh), reference, "a fresh model differs before loading");
    let (loaded, config) = load_adapter(fresh, dir.path()).unwrap();
    assert_eq!(config.method, "mope");
    assert_eq!(logits(&loaded), reference, "logits are identical after the round trip");

    // Loading onto a trainable model keeps what is frozen frozen and what trains trainable.
    let (loaded, _) = load_adapter(model_ad(FusionMethod::Mope, NUM_CLASSES), dir.path()).unwrap();
    assert_eq!(ParamSummary::of(&loaded), summary);
}

fn saved_adapter(dir: &Path) {
    let model = model_ad(FusionMethod::Mope, NUM_CLASSES);
    save_adapter(&model, dir, "mope", serde_json::Value::Null, serde_json::Value::Null).unwrap();
}

fn load_error(model: Model<Flex>, dir: &Path) -> String {
    load_adapter(model, dir).map(|_| ()).expect_err("loading must fail").to_string()
}

#[test]
fn bad_adapters_are_refused_with_the_file_and_key_named() {
    let fresh = || model(FusionMethod::Mope, NUM_CLASSES);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join(ADAPTER_WEIGHTS_FILE);
    let config = dir.path().join(ADAPTER_CONFIG_FILE);

    // A tensor missing from the weights file.
    saved_adapter(dir.path());
    let bytes = std::fs::read(&weights).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = file.tensors().into_iter().filter(|(name, _)| name != "head.bias").collect();
    safetensors::serialize_to_file(kept, None, &weights).unwrap();
    let msg = load_error(fresh(), dir.path());
    assert!(msg.contains("adapter_model.safetensors") && msg.contains("missing tensor `head.bias`"), "{msg}");

    // A tensor the model does not have: a MoPE adapter onto a model without experts.
    saved_adapter(dir.path());
    let msg = load_error(model(FusionMethod::Sequential, NUM_CLASSES), dir.path());
    assert!(msg.contains("is not a parameter of this model"), "{msg}");
    assert!(msg.contains(".experts.experts`") || msg.contains(".router."), "an expert or router tensor: {msg}");

    // A shape that differs: another number of classes.
    let msg = load_error(model(FusionMethod::Mope, 5), dir.path());
    assert!(msg.contains("tensor `head.bias` has shape [3], the model expects [5]"), "{msg}");

    // An unknown key in the configuration.
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["lora_rank"] = serde_json::json!(8);
    std::fs::write(&config, json.to_string()).unwrap();
    let msg = load_error(fresh(), dir.path());
    assert!(msg.contains("adapter_config.json") && msg.contains("unknown field `lora_rank`"), "{msg}");

    // Malformed JSON: the line and column are named.
    std::fs::write(&config, "{\n  \"format_version\": 1,\n  oops\n}").unwrap();
    let msg = load_error(fresh(), dir.path());
    assert!(msg.contains("adapter_config.json: invalid adapter config") && msg.contains("line 3"), "{msg}");

    // A truncated weights file.
    saved_adapter(dir.path());
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(fresh(), dir.path());
    assert!(msg.contains("adapter_model.safetensors: not a valid safetensors file"), "{msg}");

    // No adapter at all.
    std::fs::remove_file(&config).unwrap();
    let msg = load_error(fresh(), dir.path());
    assert!(msg.contains("adapter_config.json"), "{msg}");

    // A model with nothing to train has nothing to save.
    let frozen = model_ad(FusionMethod::Mope, NUM_CLASSES).no_grad();
    let err = save_adapter(&frozen, dir.path(), "mope", serde_json::Value::Null, serde_json::Value::Null).unwrap_err();
    assert_eq!(err.to_string(), "the model has no trainable parameter: nothing to save");
}

#[test]
fn predictions_do_not_depend_on_batch_mates() {
    let model = model(FusionMethod::Mope, NUM_CLASSES);
    let (main, complementary, _) = batch::<Flex>();
    let all = model.forward(&main, &complementary).logits;
    for i in 0..4 {
        let one = |b: &TokenBatch<Flex>| TokenBatch { ids: b.ids.clone().narrow(0, i, 1), mask_pad: b.mask_pad.clone().narrow(0, i, 1) };
        let alone = model.forward(&one(&main), &one(&complementary)).logits;
        alone
            .to_data()
            .assert_approx_eq::<f32>(&all.clone().narrow(0, i, 1).to_data(), burn::tensor::Tolerance::default());
    }
}

