//! Parity of EfficientNet-Lite with an independent PyTorch implementation
//! (`fixtures/make_efficientnet_fixtures.py`): a tiny random network whose stride-2 convolutions
//! meet even and odd sides (TensorFlow's padding differs between the two), always run; the real
//! Lite0 ImageNet weights on a formula-generated input, and the classes of real photographs
//! shipped by scikit-image (both run when `cargo xtask fetch-assets` has fetched the assets; CI
//! does).

mod common;

use backbones::efficientnet_lite::Stage;
use backbones::{EfficientNetLite, EfficientNetLiteConfig, InputSpec, by_name, load_efficientnet_lite};
use burn::backend::Flex;
use burn::tensor::Tensor;
use common::{fixtures, formula_image, reference, relative_error, weights_dir};

type B = Flex;

fn assert_close(ours: Tensor<B, 4>, expected: &std::path::Path, key: &str) {
    let (theirs, shape) = reference(expected, key);
    assert_eq!(ours.dims().to_vec(), shape, "{key}");
    let err = relative_error(&ours.to_data().to_vec::<f32>().unwrap(), &theirs);
    println!("efficientnet_parity: {key} relative error {err:.2e}");
    assert!(err < 1e-4, "{key} relative error {err:e}");
}

#[test]
fn tiny_efficientnet_lite_matches_the_reference() {
    let dir = fixtures().join("tiny-efficientnet-lite");
    let stage = |expansion, kernel, stride, channels, repeats| Stage { expansion, kernel, stride, channels, repeats };
    let config = EfficientNetLiteConfig { stem: 8, stages: vec![stage(1, 3, 1, 8, 1), stage(4, 5, 2, 12, 2), stage(4, 3, 2, 16, 1)], head: 32, num_classes: Some(10) };
    let (net, report) = load_efficientnet_lite::<B>(&dir.join("model.safetensors"), &config, &Default::default()).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let pixels = formula_image(2, 34);
    let expected = dir.join("expected.safetensors");
    let (logits, _) = reference(&expected, "logits");
    let err = relative_error(&net.forward(pixels.clone()).to_data().to_vec::<f32>().unwrap(), &logits);
    println!("efficientnet_parity: logits relative error {err:.2e}");
    assert!(err < 1e-4, "logits relative error {err:e}");
    assert_close(net.feature_map(pixels, 3), &expected, "features3");
}

fn real_network() -> Option<EfficientNetLite<B>> {
    let path = weights_dir().join("efficientnet-lite0/model.safetensors");
    match load_efficientnet_lite::<B>(&path, &EfficientNetLiteConfig::lite0(), &Default::default()) {
        Ok((net, report)) => {
            // Only the checkpoint's batch counters are left: one per norm.
            assert_eq!(report.unused.len(), 49, "{:?}", report.unused);
            assert!(report.unused.iter().all(|k| k.ends_with("num_batches_tracked")), "{:?}", report.unused);
            Some(net)
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

#[test]
fn real_efficientnet_lite0_matches_the_reference() {
    let Some(net) = real_network() else { return };
    let expected = fixtures().join("efficientnet-lite0/expected.safetensors");
    let (logits, _) = reference(&expected, "logits");
    let err = relative_error(&net.forward(formula_image(1, 224)).to_data().to_vec::<f32>().unwrap(), &logits);
    println!("efficientnet_parity: logits relative error {err:.2e}");
    assert!(err < 1e-4, "logits relative error {err:e}");
    assert_close(net.feature_map(formula_image(1, 112), 11), &expected, "features11");
}

#[test]
fn real_efficientnet_lite0_recognises_real_photographs() {
    let Some(net) = real_network() else { return };
    let images = weights_dir().join("../images");
    let InputSpec::Image(preprocess) = by_name("efficientnet-lite0").unwrap().input else { unreachable!() };
    let files = ["chelsea.png", "coffee.png", "rocket.jpg"];
    let prepared: Vec<Vec<f32>> = files.iter().map(|file| preprocess.load(&images.join(file)).unwrap()).collect();
    let probs = burn::tensor::activation::softmax(net.forward(preprocess.batch::<B>(&prepared, &Default::default())), 1).to_data().to_vec::<f32>().unwrap();
    let top5 = |i: usize| {
        let row = &probs[i * 1000..(i + 1) * 1000];
        let mut classes: Vec<usize> = (0..1000).collect();
        classes.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        println!("{}: top-5 classes {:?}", files[i], &classes[..5]);
        classes.truncate(5);
        classes
    };
    // ImageNet classes: 281-285 domestic cats, 967 espresso, 812 space shuttle (657, missile,
    // ranks above it for this photograph of a launch).
    assert!((281..=285).contains(&top5(0)[0]), "chelsea.png");
    assert_eq!(top5(1)[0], 967, "coffee.png");
    assert!(top5(2).contains(&812), "rocket.jpg");
}
