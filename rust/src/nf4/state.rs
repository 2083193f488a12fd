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
                py_float_repr(offset as f64)
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

/// Python's `repr(float)` as `json.dumps` writes it.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's repr.
    let e_form = format!("{x:e}");
    let (mant, exp) = e_form
        .split_once('e')
        .expect("LowerExp always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_cases() {
        assert_eq!(py_float_repr(0.052454300224781036), "0.052454300224781036");
        assert_eq!(py_float_repr(1.0), "1.0");
        assert_eq!(py_float_repr(100.0), "100.0");
        assert_eq!(py_float_repr(0.0001), "0.0001");
        assert_eq!(py_float_repr(0.00001), "1e-05");
        assert_eq!(py_float_repr(-1.5e-7), "-1.5e-07");
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(py_float_repr(-0.0), "-0.0");
    }

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
