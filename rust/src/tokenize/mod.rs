//! Tokenization with loss masks.
//!
//! [`TextTokenizer`] loads a Hugging Face `tokenizer.json` and encodes text the way the
//! Python tokenizer does inside `apply_chat_template` (`add_special_tokens=False`, one
//! call over the whole rendered chat). Byte-level BPE tokenizers (GPT-2 family, SmolLM2,
//! Qwen, Llama-3) take a hand-written fast path ([`bytelevel`]) whose ids are proven
//! equal to the crate's; every other tokenizer goes through the `tokenizers` crate.
//!
//! [`mask::ChatEncoder`] renders a conversation, finds the character spans to train on
//! and turns them into per-token labels.

pub mod bytelevel;
pub mod mask;

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{LadleError, Result};

/// Token ids with the byte range of each token in the encoded text.
pub struct WithOffsets {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A tokenizer.json, with the byte-level BPE fast path when the tokenizer allows it.
pub struct TextTokenizer {
    inner: Tokenizer,
    fast: Option<bytelevel::ByteLevelBpe>,
}

fn tok_err(e: impl std::fmt::Display) -> LadleError {
    LadleError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LadleError::io(path, e))?;
        Self::from_bytes(&bytes)
            .map_err(|e| LadleError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        // apply_chat_template never truncates nor pads unless asked; neither do we.
        inner.with_truncation(None).map_err(tok_err)?;
        inner.with_padding(None);
        let fast = bytelevel::ByteLevelBpe::from_tokenizer(&inner, bytes);
        Ok(TextTokenizer { inner, fast })
    }

    /// The same tokenizer without the fast path (the reference the fast path is tested
    /// against).
    pub fn without_fast_path(mut self) -> Self {
        self.fast = None;
        self
    }

    /// True when encoding goes through the hand-written byte-level BPE path.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Ids of `text` without added special tokens (BOS/EOS), like
    /// `tokenizer(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(f) = &self.fast {
            return Ok(f.encode(text));
        }
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids and byte offsets of each token in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<WithOffsets> {
        if let Some(f) = &self.fast {
            return Ok(f.encode_with_offsets(text));
        }
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(WithOffsets {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Text of `ids` (the crate's decoder).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// Id of a token string (vocabulary or added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
