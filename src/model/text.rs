//! Text inputs: a text model's tokenizer (Hugging Face's `tokenizer.json`, read by the
//! `tokenizers` crate), truncation to the manifest's `max_length`, and what a tokenized input
//! carries to the runner (its ids, how many tokens the truncation dropped).

use crate::model::manifest::TextSpec;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("the input is empty (only white space)")]
    Empty,
    #[error("the input is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// A tokenized input: ids with the special tokens, at most the model's `max_length`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<i64>,
    /// Tokens cut off by the truncation (0 when the input fit).
    pub truncated: usize,
}

/// A text model's tokenizer, with its truncation set from the manifest.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    max_length: usize,
    /// The id padding positions get (masked out; `[PAD]`/`<pad>` where the vocabulary has one).
    pub pad_id: i64,
}

impl TextTokenizer {
    pub fn load(spec: &TextSpec) -> Result<TextTokenizer, TextError> {
        let path = &spec.tokenizer;
        let err = |msg: String| TextError::Tokenizer { path: path.clone(), msg };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner
            .with_truncation(Some(tokenizers::TruncationParams { max_length: spec.max_length, ..Default::default() }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        let pad_id = ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0) as i64;
        Ok(TextTokenizer { inner, max_length: spec.max_length, pad_id })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes `text` (special tokens added, truncated to `max_length`). Empty or
    /// white-space-only text is an error.
    pub fn encode(&self, text: &str) -> Result<Tokens, TextError> {
        if text.trim().is_empty() {
            return Err(TextError::Empty);
        }
        let enc = self.inner.encode(text, true).map_err(|e| TextError::Encode(e.to_string()))?;
        // Each overflowing piece repeats the special tokens around the tokens it holds.
        let truncated = enc
            .get_overflowing()
            .iter()
            .map(|o| o.get_ids().len() - o.get_special_tokens_mask().iter().filter(|&&m| m == 1).count())
            .sum();
        Ok(Tokens { ids: enc.get_ids().iter().map(|&i| i as i64).collect(), truncated })
    }
}

/// Reads `bytes` as one text input: UTF-8, a trailing line end and surrounding white space
/// removed.
pub fn text_of(bytes: &[u8]) -> Result<&str, TextError> {
    let s = std::str::from_utf8(bytes).map_err(|e| TextError::NotUtf8(e.valid_up_to()))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_takes_utf8_and_names_the_bad_byte() {
        assert_eq!(text_of(b"  a fine film .\n").unwrap(), "a fine film .");
        assert!(matches!(text_of(b" \r\n"), Err(TextError::Empty)));
        assert!(matches!(text_of(b"ok \xff no"), Err(TextError::NotUtf8(3))));
        assert_eq!(text_of("caf\u{e9}".as_bytes()).unwrap(), "caf\u{e9}");
    }
}
