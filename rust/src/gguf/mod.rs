//! GGUF block quantization (the ggml formats llama.cpp and Ollama read).
//!
//! The promise is byte-identity with the reference quantizers of the `gguf` Python
//! package (`gguf.quants.quantize`), which themselves reproduce ggml's
//! `quantize_row_*_ref`: the same float32 arithmetic in the same order, the same
//! rounding helper, the same float16 scale. Writing the file (header, metadata,
//! tensor index) stays in Python with `gguf.GGUFWriter`; only the per-element work
//! lives here, where it runs on all cores without the GIL.
//!
//! - [`quant`]: Q8_0 and Q4_0, block by block, parallel over blocks.

pub mod quant;

pub use quant::{quantize, GgmlType};
