//! GGUF block quantizers (`crate::gguf`): one thin function, GIL released.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::Wrap;
use crate::error::LadleError;
use crate::gguf::{quantize, GgmlType};

/// Quantize a contiguous float32 vector (a tensor flattened row-major) into ggml
/// `qtype` blocks (`q8_0`, `q4_0`, `q5_0`, `q4_k`, `q6_k`), in parallel; the bytes
/// llama.cpp's `quantize_row_*_ref` (and `gguf.quants.quantize`) write for the same input.
#[pyfunction]
#[pyo3(text_signature = "(data, qtype)")]
pub fn gguf_quantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, f32>,
    qtype: Wrap<GgmlType>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let values = data
        .as_slice()
        .map_err(|e| LadleError::Value(format!("data must be a contiguous array: {e}")))?;
    let out = py.detach(|| quantize(values, qtype.0))?;
    Ok(out.into_pyarray(py))
}
