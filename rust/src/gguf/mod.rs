//! GGUF block quantization (the ggml formats llama.cpp and Ollama read).
//!
//! The promise is byte-identity with the reference quantizers: ggml's
//! `quantize_row_*_ref` in llama.cpp (which `llama-quantize` runs when it has no
//! importance matrix) and the `gguf` Python package's numpy copies of the 32-value
//! ones: the same float32 arithmetic in the same order, the same rounding helpers, the
//! same float16 scale. Writing the file (header, metadata, tensor index, which tensor
//! gets which type) stays in Python with `gguf.GGUFWriter`; only the per-element work
//! lives here, where it runs on all cores without the GIL.
//!
//! - [`quant`]: the block types, the parallel driver, Q8_0, Q4_0 and Q5_0.
//! - [`kquant`]: the 256-value super-blocks Q4_K and Q6_K (what Q4_K_M mixes).

pub mod kquant;
pub mod quant;

pub use quant::{quantize, GgmlType};
