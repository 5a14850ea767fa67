//! Parity of MobileNetV2 with torchvision: a tiny random model with non-trivial batch-norm
//! statistics (fixture made by `fixtures/make_fixtures.py`, always run), the real ImageNet weights
//! on a formula-generated input, and top-1 classes of real photographs shipped by scikit-image
//! (both run when `cargo xtask fetch-assets` has fetched the assets; CI does).

mod common;

use backbones::{InputSpec, MobileNetV2Config, by_name, load_mobilenet_v2};
use burn::backend::Flex;
use common::{fixtures, formula_image, reference, relative_error, weights_dir};

type B = Flex;

#[test]
fn tiny_mobilenet_v2_matches_torchvision() {
    let dir = fixtures().join("tiny-mobilenet-v2");
    let config = MobileNetV2Config::new().with_width_mult(0.25).with_num_classes(Some(10));
    let (net, report) = load_mobilenet_v2::<B>(&dir.join("model.safetensors"), &config, &Default::default()).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let pixels = formula_image(2, 32);
    let expected = dir.join("expected.safetensors");
    let (logits, _) = reference(&expected, "logits");
    let err = relative_error(&net.forward(pixels.clone()).to_data().to_vec::<f32>().unwrap(), &logits);
    println!("mobilenet_parity: logits relative error {err:.2e}");
    assert!(err < 1e-4, "logits relative error {err:e}");
    let (features, shape) = reference(&expected, "features13");
    let ours = net.feature_map(pixels, 13);
    assert_eq!(ours.dims().to_vec(), shape);
    let err = relative_error(&ours.to_data().to_vec::<f32>().unwrap(), &features);
    println!("mobilenet_parity: features.13 relative error {err:.2e}");
    assert!(err < 1e-4, "features.13 relative error {err:e}");
}

fn real_network() -> Option<backbones::MobileNetV2<B>> {
    let preset = by_name("mobilenet-v2").unwrap();
    match preset.load_mobilenet_v2::<B>(&weights_dir(), &Default::default()) {
        Ok(net) => Some(net),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

#[test]
fn real_mobilenet_v2_matches_torchvision() {
    let Some(net) = real_network() else { return };
    let (logits, _) = reference(&fixtures().join("mobilenet-v2/expected.safetensors"), "logits");
    let err = relative_error(&net.forward(formula_image(1, 224)).to_data().to_vec::<f32>().unwrap(), &logits);
    println!("mobilenet_parity: logits relative error {err:.2e}");
    assert!(err < 1e-4, "logits relative error {err:e}");
}

#[test]
fn real_mobilenet_v2_recognises_real_photographs() {
    let Some(net) = real_network() else { return };
    let images = weights_dir().join("../images");
    let InputSpec::Image(preprocess) = by_name("mobilenet-v2").unwrap().input else { unreachable!() };
    // ImageNet classes: 285 Egyptian cat, 967 espresso, 812 space shuttle.
    let cases = [("chelsea.png", 285), ("coffee.png", 967), ("rocket.jpg", 812)];
    let prepared: Vec<Vec<f32>> = cases.iter().map(|(file, _)| preprocess.load(&images.join(file)).unwrap()).collect();
    let logits = net.forward(preprocess.batch::<B>(&prepared, &Default::default()));
    let probs = burn::tensor::activation::softmax(logits, 1).to_data().to_vec::<f32>().unwrap();
    for (i, (file, class)) in cases.iter().enumerate() {
        let row = &probs[i * 1000..(i + 1) * 1000];
        let best = (0..1000).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        println!("{file}: top-1 class {best} (p = {:.2})", row[best]);
        assert_eq!(best, *class, "{file}");
    }
}
