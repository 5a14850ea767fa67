//! Parity of the ViT encoder with Hugging Face transformers' `ViTModel`, on a tiny random model
//! (fixture made by `fixtures/make_fixtures.py`), and its load errors.

mod common;

use backbones::{Pooling, load_vit};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::{fixtures, reference, relative_error};
use mope_core::{PromptableEncoder, forward_prompted};

type B = Flex;

#[test]
fn tiny_vit_matches_transformers() {
    let dir = fixtures().join("tiny-vit");
    let expected = dir.join("expected.safetensors");
    let device = Default::default();
    let (vit, report) = load_vit::<B>(&dir, Pooling::Cls, &device).unwrap();
    assert!(report.unused.is_empty(), "every tensor is used: {:?}", report.unused);
    let (pixels, shape) = reference(&expected, "pixel_values");
    let pixels = Tensor::<B, 4>::from_data(
        TensorData::new(pixels.iter().map(|&v| v as f32).collect::<Vec<_>>(), [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let out = forward_prompted(&vit, vit.embed(&pixels), &mut ());
    // transformers' last_hidden_state is after the final layer norm.
    let hidden = vit.final_norm.forward(out.tokens);
    let (theirs, theirs_shape) = reference(&expected, "last_hidden_state");
    assert_eq!(hidden.dims().to_vec(), theirs_shape);
    let err = relative_error(&hidden.to_data().to_vec::<f32>().unwrap(), &theirs);
    println!("vit_parity: last hidden state relative error {err:.2e}");
    assert!(err < 1e-4, "last hidden state relative error {err:e}");
    // Pooling: the normalised [CLS] token.
    let cls: Vec<f64> = (0..2).flat_map(|b| theirs[b * 17 * 32..b * 17 * 32 + 32].to_vec()).collect();
    let err = relative_error(&out.pooled.to_data().to_vec::<f32>().unwrap(), &cls);
    println!("vit_parity: pooled [CLS] relative error {err:.2e}");
    assert!(err < 1e-4, "pooled [CLS] relative error {err:e}");
}

#[test]
fn wrong_image_size_names_both_sizes() {
    let (vit, _) = load_vit::<B>(&fixtures().join("tiny-vit"), Pooling::Cls, &Default::default()).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vit.embed(&Tensor::zeros([1, 3, 48, 48], &Default::default()))));
    let msg = *result.unwrap_err().downcast::<String>().unwrap();
    assert_eq!(msg, "image is 48x48, the ViT expects 32x32");
}
