//! Parity of Whisper's log-mel front end with transformers' `WhisperFeatureExtractor`, of the
//! CTranslate2 reader and encoder with transformers' `WhisperEncoder` on a tiny random model
//! (fixture written in CTranslate2 format by `fixtures/make_fixtures.py`), and on the real
//! Whisper-base weights (run when `cargo xtask fetch-assets` has fetched them; CI does).

mod common;

use backbones::{LogMel, Pooling, WINDOW_SAMPLES, load_whisper_encoder, pad_or_trim};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::{fixtures, reference, relative_error, weights_dir};
use mope_core::{PromptableEncoder, forward_prompted};

type B = Flex;

/// A chirp from 200 Hz plus a 3 kHz tone, computed as the fixture script does.
fn formula_audio(seconds: f64) -> Vec<f32> {
    (0..(seconds * 16000.0) as usize)
        .map(|i| {
            let t = i as f64 / 16000.0;
            (0.5 * (2.0 * std::f64::consts::PI * (200.0 + 300.0 * t) * t).sin()
                + 0.1 * (2.0 * std::f64::consts::PI * 3000.0 * t).sin()) as f32
        })
        .collect()
}

fn mel_tensor(mel: Vec<f32>, frames: usize) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(mel, [1, 80, frames]), &Default::default())
}

#[test]
fn log_mel_matches_whisper_feature_extractor() {
    let (theirs, shape) = reference(&fixtures().join("tiny-whisper/expected.safetensors"), "mel");
    assert_eq!(shape, [80, 200]);
    let ours = LogMel::whisper().compute(&pad_or_trim(&formula_audio(1.5), 32_000));
    let err = relative_error(&ours, &theirs);
    println!("whisper_parity: log-mel relative error {err:.2e}");
    assert!(err < 1e-4, "log-mel relative error {err:e}");
}

#[test]
fn tiny_whisper_encoder_matches_transformers() {
    let dir = fixtures().join("tiny-whisper");
    let (encoder, report) = load_whisper_encoder::<B>(&dir.join("model.bin"), Pooling::Mean, &Default::default()).unwrap();
    assert_eq!(report.unused, ["encoder/num_heads"], "every weight is used");
    let expected = dir.join("expected.safetensors");
    let (mel, _) = reference(&expected, "mel");
    let out = forward_prompted(&encoder, encoder.embed(&mel_tensor(mel.iter().map(|&v| v as f32).collect(), 200)), &mut ());
    let hidden = encoder.final_norm.forward(out.tokens);
    let (theirs, shape) = reference(&expected, "last_hidden_state");
    assert_eq!(hidden.dims().to_vec(), shape);
    let err = relative_error(&hidden.to_data().to_vec::<f32>().unwrap(), &theirs);
    println!("whisper_parity: last hidden state relative error {err:.2e}");
    assert!(err < 1e-4, "last hidden state relative error {err:e}");
}

#[test]
fn truncated_ct2_file_is_refused_with_its_offset() {
    let bytes = std::fs::read(fixtures().join("tiny-whisper/model.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_whisper_encoder::<B>(&path, Pooling::Mean, &Default::default()).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("model.bin: truncated at byte"), "{err}");
}

#[test]
fn real_whisper_base_matches_transformers() {
    let path = weights_dir().join("whisper-base/model.bin");
    let encoder = match load_whisper_encoder::<B>(&path, Pooling::Mean, &Default::default()) {
        Ok((encoder, _)) => encoder,
        Err(e) => {
            eprintln!("SKIPPED real_whisper_base_matches_transformers: {e}");
            return;
        }
    };
    assert_eq!((encoder.d_model(), encoder.num_layers()), (512, 6));
    // The standard 30-second window, as transformers' feature extractor pads it.
    let mel = LogMel::whisper().compute(&pad_or_trim(&formula_audio(1.5), WINDOW_SAMPLES));
    let out = forward_prompted(&encoder, encoder.embed(&mel_tensor(mel, 3000)), &mut ());
    let expected = fixtures().join("whisper-base/expected.safetensors");
    let (mean, _) = reference(&expected, "mean");
    let err = relative_error(&out.pooled.to_data().to_vec::<f32>().unwrap(), &mean);
    println!("whisper_parity: mean-pooled relative error {err:.2e}");
    assert!(err < 1e-4, "mean-pooled relative error {err:e}");
    let (first, _) = reference(&expected, "first_frames");
    let hidden = encoder.final_norm.forward(out.tokens).narrow(1, 0, 8);
    let err = relative_error(&hidden.to_data().to_vec::<f32>().unwrap(), &first);
    println!("whisper_parity: first frames relative error {err:.2e}");
    assert!(err < 1e-4, "first frames relative error {err:e}");
}
