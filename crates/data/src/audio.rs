//! Audio preparation: WAV files decoded (16-bit, 24/32-bit integer or 32-bit float PCM), mixed
//! down to mono and resampled to the 16 kHz that Whisper and wav2vec2 expect.
//!
//! Resampling is band-limited interpolation with a Lanczos-windowed sinc kernel (8 lobes); when
//! the rate goes down, the kernel is widened to low-pass below the new Nyquist frequency.

use std::path::Path;

use crate::error::DataError;

/// Sample rate of the encoders' front ends.
pub const TARGET_RATE: u32 = 16_000;

/// The sample rates a WAV file may have (telephone speech to studio masters); outside them a
/// header is damaged, and resampling would make 16,000 samples of each one, or read millions per
/// output sample.
pub const MIN_RATE: u32 = 1_000;
/// See [`MIN_RATE`].
pub const MAX_RATE: u32 = 384_000;

/// Decodes a WAV file to mono f32 in `[-1, 1]` and its sample rate (refused outside
/// [`MIN_RATE`]..=[`MAX_RATE`], or beyond 32 bits per sample).
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32), DataError> {
    let decode = |e: hound::Error| match e {
        hound::Error::IoError(io) => DataError::io(path, io),
        other => DataError::Decode { path: path.to_path_buf(), message: other.to_string() },
    };
    let mut reader = hound::WavReader::open(path).map_err(decode)?;
    let spec = reader.spec();
    let refuse = |message: String| DataError::Decode { path: path.to_path_buf(), message };
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(refuse(format!("sample rate {} Hz, expected {MIN_RATE} to {MAX_RATE}", spec.sample_rate)));
    }
    if !(1..=32).contains(&spec.bits_per_sample) {
        return Err(refuse(format!("{} bits per sample, expected 1 to 32", spec.bits_per_sample)));
    }
    let channels = spec.channels.max(1) as usize;
    // Pushed one by one: the sample count the header claims is not trusted with an allocation.
    let mut interleaved = Vec::new();
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for sample in reader.samples::<f32>() {
                interleaved.push(sample.map_err(decode)?);
            }
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            for sample in reader.samples::<i32>() {
                interleaved.push(sample.map_err(decode)? as f32 * scale);
            }
        }
    }
    let mono = interleaved.chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
    Ok((mono, spec.sample_rate))
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) }
}

/// Resamples `samples` from `from` Hz to `to` Hz.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    const LOBES: f64 = 8.0;
    let ratio = to as f64 / from as f64;
    let cutoff = ratio.min(1.0); // low-pass at the lower Nyquist frequency
    let half_width = LOBES / cutoff;
    let out_len = ((samples.len() as f64) * ratio).round() as usize;
    (0..out_len)
        .map(|n| {
            let x = n as f64 / ratio; // position in input samples
            let lo = (x - half_width).ceil().max(0.0) as usize;
            let hi = ((x + half_width).floor() as usize).min(samples.len() - 1);
            let mut acc = 0.0;
            for (k, &s) in samples.iter().enumerate().take(hi + 1).skip(lo) {
                let t = (x - k as f64) * cutoff;
                acc += s as f64 * cutoff * sinc(t) * sinc(t / LOBES);
            }
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize).map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32).collect()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    #[test]
    fn upsampling_keeps_pitch_and_amplitude() {
        let up = resample(&tone(440.0, 8000, 1.0), 8000, 16000);
        assert_eq!(up.len(), 16000);
        let inner = &up[1000..15000];
        // 440 Hz: 880 zero crossings per second.
        let crossings = zero_crossings(inner) as f64 / (inner.len() as f64 / 16000.0);
        assert!((crossings - 880.0).abs() < 4.0, "{crossings}");
        let peak = inner.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((peak - 1.0).abs() < 0.02, "{peak}");
        let reference = &tone(440.0, 16000, 1.0)[1000..15000];
        let err = inner.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 0.01, "band-limited interpolation of a band-limited tone is exact up to {err}");
    }

    #[test]
    fn downsampling_removes_what_cannot_be_represented() {
        // 7 kHz cannot exist at 8 kHz (Nyquist 4 kHz): it must be filtered out, not aliased.
        let down = resample(&tone(7000.0, 44100, 0.5), 44100, 8000);
        let inner = &down[200..down.len() - 200];
        let rms = (inner.iter().map(|v| v * v).sum::<f32>() / inner.len() as f32).sqrt();
        assert!(rms < 0.05, "alias energy {rms}");
    }

    #[test]
    fn reads_mustard_fixture_wav() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/mustard/utterances_final/1_60.wav");
        let (samples, rate) = read_wav(&path).unwrap();
        assert_eq!((samples.len(), rate), (4000, 16000));
        // 220 Hz at amplitude 8000/32768.
        let peak = samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((peak - 8000.0 / 32768.0).abs() < 1e-3, "{peak}");
        let err = read_wav(Path::new("/nonexistent.wav")).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent.wav:"), "{err}");
    }
}
