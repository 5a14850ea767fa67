//! Shapes and arithmetic shared by the benchmarks and their PyTorch reference
//! (`benches/reference/mope_step.py` reads the same shapes from [`StepShape::to_json`]).
//!
//! The training step measured: a frozen ViT (random weights: the timing does not depend on
//! their values) prompted at every layer with MoPE's prompts (static, routed experts, mapped),
//! routed by a cached complementary feature; a linear head on `[CLS]`; cross-entropy plus the
//! importance loss; backward to the prompts, routers, mapper and head; one AdamW step. The
//! [`TEXT`] shape runs the same step on a post-norm text encoder (MiniLM's shape) over padded
//! token batches with their attention mask, its head on the mean of the text tokens.

use serde::Serialize;

/// The shapes of one benchmarked training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepShape {
    /// Name in tables.
    pub name: &'static str,
    /// Samples per step.
    pub batch: usize,
    /// Image side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Token width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Transformer layers (all prompted).
    pub num_layers: usize,
    /// Width of the cached complementary feature (BERT-base: 768).
    pub d_complementary: usize,
    /// Static prompt tokens per layer.
    pub static_len: usize,
    /// Prompt experts per layer.
    pub num_experts: usize,
    /// Tokens per expert.
    pub expert_len: usize,
    /// Mapped prompt tokens.
    pub mapped_len: usize,
    /// Classes of the head.
    pub num_classes: usize,
    /// Text shapes: each sample's token count (`[CLS]` and `[SEP]` included), the batch padded
    /// to the longest with an attention mask; empty for image shapes (a ViT on pixels).
    pub lengths: &'static [usize],
    /// Text shapes: the vocabulary of the token ids.
    pub vocab_size: usize,
}

/// A small configuration (ViT-S/16 at 112 px: 50 tokens, 384 wide, 6 layers), batch 32.
pub const SMALL: StepShape = StepShape {
    name: "small",
    batch: 32,
    image_size: 112,
    patch_size: 16,
    d_model: 384,
    n_heads: 6,
    d_ff: 1536,
    num_layers: 6,
    d_complementary: 768,
    static_len: 6,
    num_experts: 4,
    expert_len: 6,
    mapped_len: 1,
    num_classes: 101,
    lengths: &[],
    vocab_size: 0,
};

/// The paper's shapes: ViT-B/16 at 224 px (197 tokens, 768 wide, 12 layers), batch 8 (on a
/// CPU); patches, prompts, routing feature and classes as [`SMALL`]: 16-pixel patches, MoPE's
/// official prompt sizes, a BERT-base (768-wide) routing feature, 101 classes.
pub const VIT_B: StepShape = StepShape {
    name: "vit-b",
    batch: 8,
    image_size: 224,
    d_model: 768,
    n_heads: 12,
    d_ff: 3072,
    num_layers: 12,
    ..SMALL
};

/// A MiniLM-sized text step (all-MiniLM-L6-v2: 6 post-norm layers, 384 wide, 12 heads), batch
/// 32 of short texts padded to the longest (38 tokens; 15.6 on average, as the emoji keywords),
/// routed by a 1280-wide (MobileNetV2) image feature, 9 classes: the emoji job's step on random
/// weights and ids.
pub const TEXT: StepShape = StepShape {
    name: "text",
    batch: 32,
    image_size: 0,
    patch_size: 0,
    d_model: 384,
    n_heads: 12,
    d_ff: 1536,
    num_layers: 6,
    d_complementary: 1280,
    num_classes: 9,
    lengths: &[38, 9, 12, 15, 21, 11, 14, 17, 10, 13, 16, 25, 9, 12, 18, 14, 11, 20, 13, 16, 10, 30, 12, 15, 17, 9, 14, 22, 11, 13, 16, 16],
    vocab_size: 30522,
    ..SMALL
};

impl StepShape {
    /// The shape called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        [SMALL, VIT_B, TEXT].into_iter().find(|s| s.name == name)
    }

    /// Whether the step is on text (token ids with a padding mask) rather than pixels.
    pub fn is_text(&self) -> bool {
        !self.lengths.is_empty()
    }

    /// Prompt tokens inserted at each layer.
    pub fn prompts_per_layer(&self) -> usize {
        self.static_len + self.expert_len + self.mapped_len
    }

    /// Tokens per sample inside the encoder, padding included: `[CLS]`, the prompts, the patches;
    /// or the prompts and the longest text.
    pub fn tokens(&self) -> usize {
        match self.lengths.iter().max() {
            Some(longest) => self.prompts_per_layer() + longest,
            None => 1 + self.prompts_per_layer() + (self.image_size / self.patch_size).pow(2),
        }
    }

    /// Each sample's real tokens inside the encoder (padding left out).
    fn sample_tokens(&self) -> Vec<f64> {
        match self.is_text() {
            true => self.lengths.iter().map(|&l| (l + self.prompts_per_layer()) as f64).collect(),
            false => vec![self.tokens() as f64],
        }
    }

    /// Multiply-adds ×2 of the frozen encoder's forward pass per sample (averaged over the
    /// batch's real tokens for text): per layer, the four attention projections `8·n·d²`, the
    /// feed-forward block `4·n·d·d_ff`, and the attention scores and mixing `4·n²·d`; plus the
    /// patch embedding. Prompt-side work (routers, expert mixing, mapper, head) is under 0.1% of
    /// it and left out.
    pub fn forward_flops(&self) -> f64 {
        let layers = self.mean_over_samples(|n, d, ff| 8.0 * n * d * d + 4.0 * n * d * ff + 4.0 * n * n * d);
        let patches = if self.is_text() { 0.0 } else { (self.image_size / self.patch_size).pow(2) as f64 };
        patches * 2.0 * (3 * self.patch_size * self.patch_size) as f64 * self.d_model as f64 + layers
    }

    /// The least arithmetic of one training step for one sample: the forward pass, then the
    /// backward pass to the *inputs* of every frozen layer (the prompts sit at layer 0, so it
    /// reaches the bottom), which costs one more pass of the linear layers (no weight gradients:
    /// the weights are frozen) and two of the attention products (gradients of both operands of
    /// each); the embeddings need no backward.
    pub fn step_flops(&self) -> f64 {
        self.forward_flops() + self.mean_over_samples(|n, d, ff| 8.0 * n * d * d + 4.0 * n * d * ff + 8.0 * n * n * d)
    }

    /// `per_layer(tokens, d_model, d_ff)` summed over the layers, averaged over the samples.
    fn mean_over_samples(&self, per_layer: impl Fn(f64, f64, f64) -> f64) -> f64 {
        let (d, ff) = (self.d_model as f64, self.d_ff as f64);
        let tokens = self.sample_tokens();
        self.num_layers as f64 * tokens.iter().map(|&n| per_layer(n, d, ff)).sum::<f64>() / tokens.len() as f64
    }

    /// The shape as JSON, for the reference script.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a shape serialises")
    }
}

/// Runs the PyTorch reference `script` (a file of `benches/reference/`) with `python` and parses
/// the JSON line it prints last.
pub fn run_reference<T: serde::de::DeserializeOwned>(python: &str, script: &str, args: &[&str]) -> anyhow::Result<T> {
    use anyhow::Context;
    // Where this crate was built; a binary carried to another machine finds the script from the
    // repository's root instead.
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference").join(script);
    let script = if built.exists() { built } else { std::path::Path::new("benches/reference").join(script) };
    let output = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{python}` (set MOPE_TORCH_PYTHON to a Python with torch)"))?;
    measurement_of(output, &format!("{python} {}", script.display()))
}

/// The JSON line a measuring child process (`what`) printed last, or its failure with its stderr.
pub fn measurement_of<T: serde::de::DeserializeOwned>(output: std::process::Output, what: &str) -> anyhow::Result<T> {
    use anyhow::Context;
    if !output.status.success() {
        anyhow::bail!("{what} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("{what} printed `{last}`, not a measurement"))
}

/// Bytes in MiB for tables, `n/a` when unknown.
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
}

/// Peak resident memory of this process so far, in bytes (`VmHWM`), where `/proc` has it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_and_flops_by_hand() {
        // ViT-B/16 at 224: 196 patches + [CLS] + 13 prompts.
        assert_eq!(VIT_B.tokens(), 210);
        // One layer of a toy shape: n = 1 + 13 + 4 = 18 tokens, d = 8, d_ff = 16, 2×2 patches of 4 px.
        let toy = StepShape { image_size: 8, patch_size: 4, d_model: 8, d_ff: 16, num_layers: 1, ..VIT_B };
        assert_eq!(toy.tokens(), 18);
        let layer = 8.0 * 18.0 * 64.0 + 4.0 * 18.0 * 8.0 * 16.0 + 4.0 * 324.0 * 8.0; // 9216 + 9216 + 10368
        let embed = 4.0 * 2.0 * 48.0 * 8.0; // 3072
        assert_eq!(toy.forward_flops(), layer + embed);
        assert_eq!(toy.step_flops(), layer + embed + 9216.0 + 9216.0 + 2.0 * 10368.0);
        // ViT-B: 37.5 GFLOP forward per sample (its usual 17.6 GMAC at 197 tokens, 13 tokens more).
        assert!((VIT_B.forward_flops() / 1e9 - 37.53).abs() < 0.01, "{}", VIT_B.forward_flops() / 1e9);
        // Text: two samples of 3 and 5 tokens, 2 prompt tokens, padded to 7; no embedding term.
        let text = StepShape { lengths: &[3, 5], static_len: 1, expert_len: 0, mapped_len: 1, d_model: 8, d_ff: 16, num_layers: 1, ..TEXT };
        assert_eq!(text.tokens(), 7);
        let layer = |n: f64| 8.0 * n * 64.0 + 4.0 * n * 8.0 * 16.0 + 4.0 * n * n * 8.0;
        assert_eq!(text.forward_flops(), (layer(5.0) + layer(7.0)) / 2.0);
        let backward = |n: f64| 8.0 * n * 64.0 + 4.0 * n * 8.0 * 16.0 + 8.0 * n * n * 8.0;
        assert_eq!(text.step_flops(), (layer(5.0) + layer(7.0) + backward(5.0) + backward(7.0)) / 2.0);
        assert!((TEXT.lengths.iter().sum::<usize>() as f64 / 32.0 - 15.6).abs() < 0.1);
    }

    #[test]
    fn shapes_are_found_by_name_and_serialise() {
        assert_eq!(StepShape::by_name("small"), Some(SMALL));
        assert!(StepShape::by_name("huge").is_none());
        let json: serde_json::Value = serde_json::from_str(&VIT_B.to_json()).unwrap();
        assert_eq!((json["d_model"].as_u64(), json["num_layers"].as_u64()), (Some(768), Some(12)));
    }

    #[test]
    fn peak_memory_is_read_from_proc() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }
}
