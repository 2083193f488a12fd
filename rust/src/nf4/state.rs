//! The `<m>.weight.quant_state.bitsandbytes__<type>` tensor: the UTF-8 bytes of Python's
//! `json.dumps(d)` (default separators `", "` and `": "`), with the keys in the order
//! `QuantState.as_dict` inserts them. The nested offset is a Python float, so it is
//! written with Python's `repr` rules (shortest round-trip digits, exponent form outside
//! 1e-4 <= |x| < 1e16), since transformers compares nothing but bnb parses it back and a
//! byte-for-byte equal checkpoint is the promise.

use super::quant::{FloatDtype, QuantType};

/// Non-tensor fields of a bitsandbytes 4-bit QuantState.
#[derive(Clone, Debug)]
pub struct QuantStateMeta {
    pub quant_type: QuantType,
    pub blocksize: usize,
    pub dtype: FloatDtype,
    pub shape: Vec<usize>,
    /// `Some(offset)` with double quantization.
    pub nested_offset: Option<f32>,
}

impl QuantStateMeta {
    /// `json.dumps` of the packed non-tensor dict, as bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let shape: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let mut s = format!(
            "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]",
            self.quant_type.name(),
            self.blocksize,
            self.dtype.torch_name(),
            shape.join(", ")
        );
        if let Some(offset) = self.nested_offset {
            s.push_str(&format!(
                ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
                super::double::NESTED_BLOCKSIZE,
                crate::pyfloat::json(offset as f64)
            ));
        }
        s.push('}');
        s.into_bytes()
    }

    /// Name of the packed state tensor, relative to the module (`weight.quant_state...`).
    pub fn key_suffix(&self) -> String {
        format!(
            "weight.quant_state.bitsandbytes__{}",
            self.quant_type.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_state_json_matches_bitsandbytes_layout() {
        let meta = QuantStateMeta {
            quant_type: QuantType::Nf4,
            blocksize: 64,
            dtype: FloatDtype::F32,
            shape: vec![64, 128],
            nested_offset: Some(0.052454300224781036f64 as f32),
        };
        let want = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \
                    \"shape\": [64, 128], \"nested_blocksize\": 256, \"nested_dtype\": \
                    \"float32\", \"nested_offset\": 0.052454300224781036}";
        assert_eq!(String::from_utf8(meta.to_json_bytes()).unwrap(), want);
    }
}
