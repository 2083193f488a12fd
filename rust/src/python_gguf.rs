//! PyO3 binding of the GGUF block quantizers (`crate::gguf`): one thin function,
//! GIL released, errors through the one mapping in `python.rs`.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::to_py_err;
use crate::gguf::{quantize, GgmlType};

/// Quantize a contiguous float32 vector (a tensor flattened row-major) into ggml
/// `qtype` blocks (`q8_0` or `q4_0`), in parallel; the bytes `gguf.quants.quantize`
/// returns for the same input.
#[pyfunction]
fn gguf_quantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, f32>,
    qtype: &str,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let ty = GgmlType::parse(qtype).map_err(to_py_err)?;
    let values = data
        .as_slice()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let out = py.detach(|| quantize(values, ty)).map_err(to_py_err)?;
    Ok(out.into_pyarray(py))
}

/// Add this area's functions to `_core`.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gguf_quantize, m)?)
}
