//! The only file that touches PyO3. Each function is a thin wrapper: convert
//! arguments, release the GIL (`py.detach`) around the Rust work, map errors once
//! through `to_py_err`. Exceptions are created here and re-exported by
//! `ladle.errors`, so Python and Rust failures share one family.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::error::LadleError;

create_exception!(_core, LadleCoreError, PyException, "Base class of every error raised by Ladle.");
create_exception!(_core, DataError, LadleCoreError, "Bad input data (malformed row, unknown role, wrong type).");
create_exception!(_core, TemplateError, LadleCoreError, "A chat template that cannot be rendered faithfully.");
create_exception!(_core, TokenizerError, LadleCoreError, "Tokenizer loading or encoding failed.");
create_exception!(_core, QuantError, LadleCoreError, "Quantization failed (bad dtype, checkpoint or block size).");

/// The one mapping from the Rust error enum to the Python exception family.
fn to_py_err(err: LadleError) -> PyErr {
    let msg = err.to_string();
    match err {
        LadleError::Data(_) => DataError::new_err(msg),
        LadleError::Template(_) => TemplateError::new_err(msg),
        LadleError::Tokenizer(_) => TokenizerError::new_err(msg),
        LadleError::Quant(_) => QuantError::new_err(msg),
        LadleError::Value(_) => pyo3::exceptions::PyValueError::new_err(msg),
        LadleError::Io { source, .. } => {
            pyo3::exceptions::PyOSError::new_err((source.raw_os_error().unwrap_or(0), msg))
        }
    }
}

// ---------------------------------------------------------------- hashing

/// Hex xxh3-128 fingerprint of the bytes of `paths` (length-prefixed, in order).
#[pyfunction]
fn fingerprint_files(py: Python<'_>, paths: Vec<String>) -> PyResult<String> {
    py.detach(|| crate::hashing::fingerprint_files(&paths))
        .map_err(to_py_err)
}

/// Hex xxh3-128 fingerprint of a byte string.
#[pyfunction]
fn fingerprint_bytes(data: &[u8]) -> String {
    crate::hashing::fingerprint_bytes(data)
}

// ---------------------------------------------------------------- module

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LadleCoreError", py.get_type::<LadleCoreError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("QuantError", py.get_type::<QuantError>())?;
    m.add_function(wrap_pyfunction!(fingerprint_files, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprint_bytes, m)?)?;
    // chat / tokenize / pack / dedup / nf4 bindings are added below by their issues.
    Ok(())
}
