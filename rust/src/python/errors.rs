//! The one mapping from the Rust error enum to the Python exception family.
//!
//! `LadleError` is the base of every exception Ladle raises on purpose, in Rust or in
//! Python (`ladle.errors` re-exports these classes and adds the Python-only ones). Bad
//! arguments and file failures are members of the family too, and also derive from
//! `ValueError` / `OSError` so that code catching the builtin classes keeps working.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::LadleError as Error;

create_exception!(
    ladle._core,
    LadleError,
    PyException,
    "Base class of every error raised by Ladle."
);
create_exception!(
    ladle._core,
    DataError,
    LadleError,
    "Bad input data (malformed row, unknown role, wrong type)."
);
create_exception!(
    ladle._core,
    TemplateError,
    LadleError,
    "A chat template that cannot be rendered faithfully."
);
create_exception!(
    ladle._core,
    TokenizerError,
    LadleError,
    "Tokenizer loading or encoding failed."
);
create_exception!(
    ladle._core,
    QuantError,
    LadleError,
    "Quantization failed (bad dtype, checkpoint or block size)."
);

// `create_exception!` takes one base class; these two need two, so they are built once
// with `type(name, bases, namespace)`, exactly as a `class` statement would.
static ARGUMENT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FILE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn two_base_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    builtin: Bound<'py, PyType>,
    doc: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "ladle._core")?;
        namespace.set_item("__doc__", doc)?;
        let bases = PyTuple::new(py, [py.get_type::<LadleError>(), builtin])?;
        let class = py
            .get_type::<PyType>()
            .call1((name, bases, namespace))?
            .cast_into::<PyType>()?;
        Ok(class.unbind())
    })
    .map(|class| class.bind(py))
}

/// `ArgumentError(LadleError, ValueError)`: a bad argument or option value.
pub fn argument_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    two_base_class(
        py,
        &ARGUMENT_ERROR,
        "ArgumentError",
        py.get_type::<PyValueError>(),
        "A bad argument or option value (out of range, not one of the choices).",
    )
}

/// `FileError(LadleError, OSError)`: a file that could not be read or written.
pub fn file_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    two_base_class(
        py,
        &FILE_ERROR,
        "FileError",
        py.get_type::<PyOSError>(),
        "A file or folder that could not be read or written.",
    )
}

/// Add the classes built at run time (the others are exported declaratively).
pub fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ArgumentError", argument_error(py)?)?;
    m.add("FileError", file_error(py)?)
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::Data(_) => DataError::new_err(msg),
            Error::Template(_) => TemplateError::new_err(msg),
            Error::Tokenizer(_) => TokenizerError::new_err(msg),
            Error::Quant(_) => QuantError::new_err(msg),
            Error::Value(_) | Error::Io { .. } => Python::attach(|py| {
                let class = match err {
                    Error::Value(_) => argument_error(py),
                    _ => file_error(py),
                };
                match class {
                    Ok(class) => PyErr::from_type(class.clone(), msg),
                    Err(e) => e,
                }
            }),
        }
    }
}

/// A numpy array that is not contiguous cannot be borrowed as a slice.
pub fn not_contiguous(name: &str) -> Error {
    Error::Value(format!("{name} must be a contiguous numpy array"))
}
