//! `tokenizer.json` through the `tokenizers` crate, plus streaming detokenisation.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `(start, end)` byte offsets of a token in its text.
pub type ByteSpan = (usize, usize);

/// A Hugging Face tokenizer loaded from `tokenizer.json`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path: path.into(),
                message: "file not found".into(),
            });
        }
        let inner = guarded(path, || tokenizers::Tokenizer::from_file(path))?.map_err(|e| {
            Error::Tokenizer {
                path: path.into(),
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            inner,
            path: path.into(),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text`; `add_special_tokens` adds what the post-processor adds (none for Qwen2).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(
            guarded(&self.path, || self.inner.encode(text, add_special_tokens))?
                .map_err(|e| self.fail(e))?
                .get_ids()
                .to_vec(),
        )
    }

    /// Token ids of `text` with each token's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteSpan>)> {
        let enc =
            guarded(&self.path, || self.inner.encode(text, false))?.map_err(|e| self.fail(e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        guarded(&self.path, || self.inner.decode(ids, skip_special_tokens))?
            .map_err(|e| self.fail(e))
    }

    /// The id of a token string (special tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Number of added (special) tokens.
    pub fn added_token_count(&self) -> usize {
        self.inner.get_added_tokens_decoder().len()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs a `tokenizers` call on a tokenizer read from an untrusted file, turning a panic inside
/// the library into an error naming the file. The crate panics on some malformed but parseable
/// files (e.g. a `continuing_subword_prefix` longer than a merge's token underflows a length in
/// its BPE builder, found by `tests/untrusted_inputs.rs`); a model folder must not crash us.
fn guarded<T>(path: &Path, call: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::Tokenizer {
            path: path.into(),
            message: format!("the file is malformed (the tokenizers library failed: {why})"),
        }
    })
}

/// Turns a growing list of token ids into text pieces as soon as they are complete UTF-8.
pub struct StreamDecoder<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that has emitted nothing yet.
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a token; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        // A trailing replacement character means a multi-byte character is still incomplete.
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}

/// Ids that end a generation: `eos` (from config.json) plus `<|im_end|>` / `<|endoftext|>` when
/// the tokenizer knows them; sorted, without duplicates.
pub fn stop_ids(eos: &[u32], tokenizer: Option<&TextTokenizer>) -> Vec<u32> {
    let mut ids = eos.to_vec();
    if let Some(tok) = tokenizer {
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tok.token_to_id(t) {
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}
