//! Text tokenisation for the BERT-family encoders, with the Hugging Face `tokenizers` library.
//!
//! Padding and truncation stored in `tokenizer.json` are replaced: some packaged tokenizers pad
//! every text to a fixed length (all-MiniLM-L6-v2 pads to 128), which would waste compute and,
//! without a mask, change the pooled features. Here a batch is padded to its longest text and
//! the mask marks the padding, which every encoder honours.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::BackboneError;
use crate::token_encoder::TokenBatch;

/// A tokenizer that produces [`TokenBatch`]es.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    source: PathBuf,
}

impl TextTokenizer {
    /// Loads the tokenizer of a Hugging Face snapshot directory: `tokenizer.json` if present,
    /// otherwise a WordPiece `vocab.txt` with BERT's uncased normalisation.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, BackboneError> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        if json.exists() {
            Self::from_file(&json, max_len)
        } else if vocab.exists() {
            Self::from_vocab(&vocab, max_len)
        } else {
            Err(BackboneError::MissingFile {
                path: json,
                hint: format!("Neither tokenizer.json nor {} exists.", vocab.display()),
            })
        }
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, BackboneError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| BackboneError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
        Self::configure(inner, path, max_len)
    }

    /// Builds an uncased BERT WordPiece tokenizer from a `vocab.txt`.
    pub fn from_vocab(path: &Path, max_len: usize) -> Result<Self, BackboneError> {
        let err = |message: String| BackboneError::Tokenizer { path: path.to_path_buf(), message };
        let file = path.to_str().ok_or_else(|| err("path is not UTF-8".into()))?;
        let model = WordPiece::from_file(file).unk_token("[UNK]".into()).build().map_err(|e| err(e.to_string()))?;
        let mut inner = Tokenizer::new(model);
        let id = |token: &str| inner.token_to_id(token).ok_or_else(|| err(format!("vocabulary has no `{token}` token")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner.with_normalizer(Some(BertNormalizer::default()));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::configure(inner, path, max_len)
    }

    fn configure(mut inner: Tokenizer, path: &Path, max_len: usize) -> Result<Self, BackboneError> {
        let err = |message: String| BackboneError::Tokenizer { path: path.to_path_buf(), message };
        let (pad_token, pad_id) = match inner.get_padding() {
            Some(p) => (p.pad_token.clone(), p.pad_id),
            None => ("[PAD]".to_string(), inner.token_to_id("[PAD]").ok_or_else(|| err("vocabulary has no `[PAD]` token".into()))?),
        };
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        inner
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { inner, max_len, source: path.to_path_buf() })
    }

    /// Longest sequence produced, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The same tokenizer truncating to `max_len` tokens (special tokens included), as
    /// Hugging Face tokenizers truncate.
    pub fn with_max_len(self, max_len: usize) -> Result<Self, BackboneError> {
        Self::configure(self.inner, &self.source, max_len)
    }

    /// Token ids of one text (special tokens included, no padding).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, BackboneError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| BackboneError::Tokenizer { path: self.source.clone(), message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenises a batch, padded to its longest text.
    ///
    /// # Shapes
    /// - output ids and mask: `[texts.len(), longest]`
    pub fn encode<B: Backend>(&self, texts: &[&str], device: &B::Device) -> Result<TokenBatch<B>, BackboneError> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| BackboneError::Tokenizer { path: self.source.clone(), message: e.to_string() })?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<i64> = encodings.iter().flat_map(|e| e.get_ids().iter().map(|&i| i as i64)).collect();
        let pad: Vec<bool> = encodings.iter().flat_map(|e| e.get_attention_mask().iter().map(|&m| m == 0)).collect();
        Ok(TokenBatch {
            ids: Tensor::from_data(TensorData::new(ids, [texts.len(), len]), device),
            mask_pad: Tensor::from_data(TensorData::new(pad, [texts.len(), len]), device),
        })
    }
}
