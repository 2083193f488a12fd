//! Ladle's Rust core.
//!
//! Pure Rust: nothing here knows about Python except `python/` (one file per area plus
//! the error mapping), which is compiled only with the `python` feature. The one
//! exception is `dedup::DedupStats`, which is also the Python class of the same name
//! (a `cfg_attr`, so its field list exists once). Each area is a module that
//! `cargo test` checks on its own.
//!
//! - [`error`]: the one error enum every module returns.
//! - [`chat`]: chat-template rendering (minijinja, transformers-compatible).
//! - [`tokenize`]: tokenization with loss masks.
//! - [`load`]: row parsing and normalisation of dataset formats.
//! - [`pack`]: sequence packing (best-fit / first-fit decreasing).
//! - [`dedup`]: exact and MinHash near-duplicate detection.
//! - [`nf4`]: bitsandbytes-compatible NF4 quantization and checkpoint streaming.
//! - [`hashing`]: content fingerprints used by the caches.
//! - [`pyfloat`]: Python's `repr` of a float (chat rendering and NF4 metadata).
//! - [`gguf`]: Q8_0 / Q4_0 / Q5_0 / Q4_K / Q6_K block quantization for GGUF export,
//!   byte-identical to llama.cpp's reference quantizers.

pub mod chat;
pub mod dedup;
pub mod error;
pub mod gguf;
pub mod hashing;
pub mod load;
pub mod nf4;
pub mod pack;
pub mod pyfloat;
pub mod tokenize;

#[cfg(feature = "python")]
mod python;

pub use error::{LadleError, Result};
