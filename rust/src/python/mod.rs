//! The only place that touches PyO3: the `ladle._core` extension module, one file per
//! area. Each function is a thin wrapper: convert arguments (string options parsed once
//! by [`Wrap`]), release the GIL (`py.detach`) around the Rust work, and let `?` turn a
//! core error into its exception class (`errors.rs`, the one mapping).

mod chat;
mod data;
mod dedup;
mod errors;
mod gguf;
mod nf4;

use std::str::FromStr;

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::LadleError;

/// A string option (`"bfd"`, `"nf4"`, `"first"` ...) parsed into its Rust enum by the
/// enum's `FromStr`, as polars' `Wrap<T>` does: every choice is checked in one place
/// and a bad one is always the same exception (`ArgumentError`).
pub struct Wrap<T>(pub T);

impl<'a, 'py, T: FromStr<Err = LadleError>> FromPyObject<'a, 'py> for Wrap<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let text = obj.cast::<PyString>().map_err(|_| {
            LadleError::Value(format!(
                "an option must be a string, got {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?;
        Ok(Wrap(text.to_str()?.parse()?))
    }
}

/// Ladle's Rust core: chat rendering, tokenization, packing, dedup, NF4 quantization.
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::errors::{DataError, LadleError, QuantError, TemplateError, TokenizerError};

    #[pymodule_export]
    use super::data::{
        assemble_packed, assemble_packed_files, fingerprint_bytes, fingerprint_files,
        normalize_rows, normalize_rows_flat, pack,
    };

    #[pymodule_export]
    use super::chat::PyChatEncoder;

    #[pymodule_export]
    use super::dedup::{
        dedup_minhash, dedup_normalize, dedup_optimal_params, dedup_permutations, dedup_run,
        DedupOutput, DedupPairs, DedupProgress,
    };

    #[pymodule_export]
    use crate::dedup::DedupStats;

    #[pymodule_export]
    use super::gguf::gguf_quantize;

    #[pymodule_export]
    use super::nf4::{
        nf4_convert_checkpoint, nf4_quant_state_json, nf4_quantize, nf4_tables, nf4_torch_sum,
    };

    /// Label of a token that carries no loss (PyTorch's `ignore_index`); the one
    /// definition Python uses too.
    #[pymodule_export]
    const IGNORE_INDEX: i32 = crate::tokenize::mask::IGNORE;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        super::errors::add_classes(m)
    }
}
