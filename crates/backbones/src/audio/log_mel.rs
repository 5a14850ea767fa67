//! Whisper's log-mel spectrogram: 16 kHz audio, 25 ms Hann windows every 10 ms (`n_fft` 400,
//! hop 160, centred with reflection padding), power spectrum, 80 Slaney-scale mel filters up to
//! 8 kHz (librosa's `mel(norm="slaney")`), `log10` clamped to 8 below the maximum, then
//! `(x + 4) / 4`. Matches OpenAI's `log_mel_spectrogram` and transformers' `WhisperFeatureExtractor`.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Sample rate Whisper expects.
pub const SAMPLE_RATE: usize = 16_000;
/// Samples in Whisper's 30-second window.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;

/// A log-mel front end.
#[derive(Clone)]
pub struct LogMel {
    n_fft: usize,
    hop: usize,
    n_mels: usize,
    window: Vec<f32>,
    /// Mel filters, `[n_mels, n_fft / 2 + 1]` row-major.
    filters: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogMel {{ n_fft: {}, hop: {}, n_mels: {} }}", self.n_fft, self.hop, self.n_mels)
    }
}

/// Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let log_step = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz { min_log_mel + (hz / min_log_hz).ln() / log_step } else { hz / f_sp }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel { min_log_hz * (log_step * (mel - min_log_mel)).exp() } else { f_sp * mel }
}

/// Triangular Slaney-normalised mel filters `[n_mels, n_fft / 2 + 1]`, as `librosa.filters.mel`.
pub fn mel_filters(sample_rate: usize, n_fft: usize, n_mels: usize, f_max: f64) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|i| i as f64 * sample_rate as f64 / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(f_max));
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut filters = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[m]) / (mel_f[m + 1] - mel_f[m]);
            let upper = (mel_f[m + 2] - f) / (mel_f[m + 2] - mel_f[m + 1]);
            filters[m * bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    filters
}

impl LogMel {
    /// Whisper's front end: 80 mel bins.
    pub fn whisper() -> Self {
        Self::new(400, 160, 80)
    }

    /// A front end with `n_fft`, `hop` and `n_mels` at 16 kHz, filters up to 8 kHz.
    pub fn new(n_fft: usize, hop: usize, n_mels: usize) -> Self {
        let window = (0..n_fft).map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos()) as f32).collect();
        Self {
            n_fft,
            hop,
            n_mels,
            window,
            filters: mel_filters(SAMPLE_RATE, n_fft, n_mels, 8000.0),
            fft: FftPlanner::new().plan_fft_forward(n_fft),
        }
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames produced for `samples` samples: one per hop.
    pub fn frames(&self, samples: usize) -> usize {
        samples / self.hop
    }

    /// Log-mel spectrogram of 16 kHz `samples` (at least `n_fft / 2 + 1` of them).
    ///
    /// # Shapes
    /// - output: `[n_mels, samples / hop]`, row-major
    ///
    /// # Panics
    /// If there are too few samples for the reflection padding.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let half = self.n_fft / 2;
        assert!(samples.len() > half, "{} samples are too few for an STFT of {} points", samples.len(), self.n_fft);
        // Reflection padding, as torch.stft(center=True, pad_mode="reflect").
        let mut padded = Vec::with_capacity(samples.len() + 2 * half);
        padded.extend((1..=half).rev().map(|i| samples[i]));
        padded.extend_from_slice(samples);
        padded.extend((0..half).map(|i| samples[samples.len() - 2 - i]));
        let frames = self.frames(samples.len()); // the last STFT frame is dropped, as Whisper does
        let bins = self.n_fft / 2 + 1;
        let mut mel = vec![0f32; self.n_mels * frames];
        let mut buffer = vec![Complex::new(0f32, 0f32); self.n_fft];
        let mut power = vec![0f32; bins];
        for t in 0..frames {
            let start = t * self.hop;
            for (i, b) in buffer.iter_mut().enumerate() {
                *b = Complex::new(padded[start + i] * self.window[i], 0.0);
            }
            self.fft.process(&mut buffer);
            for (k, p) in power.iter_mut().enumerate() {
                *p = buffer[k].norm_sqr();
            }
            for m in 0..self.n_mels {
                let row = &self.filters[m * bins..(m + 1) * bins];
                mel[m * frames + t] = row.iter().zip(&power).map(|(f, p)| f * p).sum();
            }
        }
        let mut max = f32::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        for v in mel.iter_mut() {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        mel
    }
}

/// Pads with zeros or trims `samples` to exactly `len`.
pub fn pad_or_trim(samples: &[f32], len: usize) -> Vec<f32> {
    let mut out = samples[..samples.len().min(len)].to_vec();
    out.resize(len, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_is_linear_below_1khz() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn a_pure_tone_peaks_in_its_mel_band() {
        let front = LogMel::whisper();
        let tone: Vec<f32> = (0..16000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()).collect();
        let mel = front.compute(&tone);
        let frames = front.frames(tone.len());
        assert_eq!(frames, 100);
        let t = 50;
        let band = (0..80).max_by(|&a, &b| mel[a * frames + t].total_cmp(&mel[b * frames + t])).unwrap();
        // 1 kHz is 15 Slaney mels; bands are spaced (hz_to_mel(8000) / 81) apart.
        let expected = (15.0 / (hz_to_mel(8000.0) / 81.0)).round() as usize - 1;
        assert!((band as i64 - expected as i64).abs() <= 1, "peak in band {band}, expected about {expected}");
    }
}
