//! bitsandbytes-compatible 4-bit (NF4, FP4) quantization and streaming checkpoint
//! conversion.
//!
//! The promise is bit-exactness with bitsandbytes 0.50.2 on CPU, which is also what
//! transformers runs when it quantizes a model on load: the same packed bytes, the same
//! float32 absmax, the same double-quantized codes, the same quant_state JSON. That
//! makes a checkpoint written here indistinguishable from one saved by
//! `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))`
//! followed by `save_pretrained`, without ever holding the model in memory.
//!
//! - [`quant`]: blockwise 4-bit quantization (the torch ops bitsandbytes runs on CPU).
//! - [`double`]: double quantization of the absmax (torch's mean, bnb's C++ 8-bit path).
//! - [`state`]: the packed quant_state JSON.
//! - [`shard`]: a streaming safetensors writer.
//! - [`convert`]: shard-by-shard, tensor-by-tensor conversion of a checkpoint.
//! - [`tables`]: code tables dumped from the installed bitsandbytes.

pub mod convert;
pub mod double;
pub mod quant;
pub mod shard;
pub mod state;
pub mod tables;

pub use convert::{convert_checkpoint, ConvertOptions, ShardReport};
pub use double::{double_quantize, dynamic_map, Nested};
pub use quant::{quantize_4bit, FloatDtype, QuantType};
pub use state::QuantStateMeta;

/// The 16 code values of `qt` as float32 (the checkpoint's `quant_map`).
pub fn tables_f32(qt: QuantType) -> [f32; 16] {
    match qt {
        QuantType::Nf4 => tables::NF4_CODE_BITS.map(f32::from_bits),
        QuantType::Fp4 => tables::FP4_CODE_BITS.map(f32::from_bits),
    }
}

/// Everything `quantize_4bit` returns for one tensor.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub packed: Vec<u8>,
    /// float32 absmax per block (before double quantization).
    pub absmax: Vec<f32>,
    pub nested: Option<Nested>,
}

/// Quantize one tensor given as little-endian bytes of `dtype`.
pub fn quantize_tensor(
    dtype: FloatDtype,
    bytes: &[u8],
    blocksize: usize,
    qt: QuantType,
    double_quant: bool,
    lanes: usize,
    threads: usize,
) -> crate::Result<Quantized> {
    quant::check_blocksize(blocksize)?;
    let n = bytes.len() / dtype.size();
    let mut packed = vec![0u8; quant::packed_len(n)];
    let mut absmax = vec![0f32; quant::num_blocks(n, blocksize)];
    quantize_4bit(dtype, bytes, blocksize, qt, &mut packed, &mut absmax)?;
    let nested = double_quant.then(|| double_quantize(&absmax, lanes, threads));
    Ok(Quantized {
        packed,
        absmax,
        nested,
    })
}
