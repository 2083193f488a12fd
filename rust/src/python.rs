//! The only file that touches PyO3. Each function is a thin wrapper: convert
//! arguments, release the GIL (`py.detach`) around the Rust work, map errors once
//! through `to_py_err`. Exceptions are created here and re-exported by
//! `ladle.errors`, so Python and Rust failures share one family.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::error::LadleError;

create_exception!(
    _core,
    LadleCoreError,
    PyException,
    "Base class of every error raised by Ladle."
);
create_exception!(
    _core,
    DataError,
    LadleCoreError,
    "Bad input data (malformed row, unknown role, wrong type)."
);
create_exception!(
    _core,
    TemplateError,
    LadleCoreError,
    "A chat template that cannot be rendered faithfully."
);
create_exception!(
    _core,
    TokenizerError,
    LadleCoreError,
    "Tokenizer loading or encoding failed."
);
create_exception!(
    _core,
    QuantError,
    LadleCoreError,
    "Quantization failed (bad dtype, checkpoint or block size)."
);

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

// ---------------------------------------------------------------- nf4

/// Packed codes, float32 absmax and, with double quantization, (codes, nested absmax,
/// offset), as numpy arrays.
type Nf4Out<'py> = (
    Bound<'py, numpy::PyArray1<u8>>,
    Bound<'py, numpy::PyArray1<f32>>,
    Option<(
        Bound<'py, numpy::PyArray1<u8>>,
        Bound<'py, numpy::PyArray1<f32>>,
        f32,
    )>,
);

/// Quantize the little-endian bytes of one tensor (`dtype`: float32/bfloat16/float16).
#[pyfunction]
#[pyo3(signature = (data, dtype, blocksize=64, quant_type="nf4", double_quant=false, lanes=16, threads=1))]
#[allow(clippy::too_many_arguments)]
fn nf4_quantize<'py>(
    py: Python<'py>,
    data: numpy::PyReadonlyArray1<'py, u8>,
    dtype: &str,
    blocksize: usize,
    quant_type: &str,
    double_quant: bool,
    lanes: usize,
    threads: usize,
) -> PyResult<Nf4Out<'py>> {
    use numpy::IntoPyArray;
    let dtype = crate::nf4::FloatDtype::parse(dtype).map_err(to_py_err)?;
    let qt = crate::nf4::QuantType::parse(quant_type).map_err(to_py_err)?;
    let bytes = data
        .as_slice()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let q = py
        .detach(|| {
            crate::nf4::quantize_tensor(dtype, bytes, blocksize, qt, double_quant, lanes, threads)
        })
        .map_err(to_py_err)?;
    let nested = q.nested.map(|n| {
        (
            n.codes.into_pyarray(py),
            n.absmax2.into_pyarray(py),
            n.offset,
        )
    });
    Ok((q.packed.into_pyarray(py), q.absmax.into_pyarray(py), nested))
}

/// torch's CPU `sum` of a float32 vector, emulated for `lanes`-wide vectors and
/// `threads` threads (used to calibrate against the running torch).
#[pyfunction]
fn nf4_torch_sum(
    xs: numpy::PyReadonlyArray1<'_, f32>,
    lanes: usize,
    threads: usize,
) -> PyResult<f32> {
    let xs = xs
        .as_slice()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    if lanes == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "lanes must be positive",
        ));
    }
    Ok(crate::nf4::double::torch_sum(xs, lanes, threads))
}

/// The code tables compiled in (float32 values): `nf4`, `fp4`, `dynamic`.
#[pyfunction]
fn nf4_tables() -> std::collections::HashMap<&'static str, Vec<f32>> {
    use crate::nf4::{dynamic_map, tables_f32, QuantType};
    std::collections::HashMap::from([
        ("nf4", tables_f32(QuantType::Nf4).to_vec()),
        ("fp4", tables_f32(QuantType::Fp4).to_vec()),
        ("dynamic", dynamic_map().to_vec()),
    ])
}

/// The quant_state JSON bytes bitsandbytes packs for one quantized weight.
#[pyfunction]
#[pyo3(signature = (quant_type, blocksize, dtype, shape, nested_offset=None))]
fn nf4_quant_state_json(
    quant_type: &str,
    blocksize: usize,
    dtype: &str,
    shape: Vec<usize>,
    nested_offset: Option<f32>,
) -> PyResult<Vec<u8>> {
    let meta = crate::nf4::QuantStateMeta {
        quant_type: crate::nf4::QuantType::parse(quant_type).map_err(to_py_err)?,
        blocksize,
        dtype: crate::nf4::FloatDtype::parse(dtype).map_err(to_py_err)?,
        shape,
        nested_offset,
    };
    Ok(meta.to_json_bytes())
}

/// Convert safetensors shards `jobs` [(src, dst)] to a bitsandbytes 4-bit checkpoint.
/// Returns [(dst, keys, data_bytes)]. `progress(done, total)` is called with source bytes.
#[pyfunction]
#[pyo3(signature = (jobs, quantize, transpose=Vec::new(), blocksize=64, quant_type="nf4", double_quant=true, dtype=None, lanes=16, threads=1, progress=None))]
#[allow(clippy::too_many_arguments)]
fn nf4_convert_checkpoint(
    py: Python<'_>,
    jobs: Vec<(String, String)>,
    quantize: Vec<String>,
    transpose: Vec<String>,
    blocksize: usize,
    quant_type: &str,
    double_quant: bool,
    dtype: Option<&str>,
    lanes: usize,
    threads: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<(String, Vec<String>, u64)>> {
    use std::path::PathBuf;
    let opts = crate::nf4::ConvertOptions {
        blocksize,
        quant_type: crate::nf4::QuantType::parse(quant_type).map_err(to_py_err)?,
        double_quant,
        dtype: dtype
            .map(crate::nf4::FloatDtype::parse)
            .transpose()
            .map_err(to_py_err)?,
        lanes,
        threads,
    };
    let jobs: Vec<(PathBuf, PathBuf)> = jobs
        .into_iter()
        .map(|(s, d)| (s.into(), d.into()))
        .collect();
    let quantize = quantize.into_iter().collect();
    let transpose = transpose.into_iter().collect();
    let mut callback_err: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report = |done: u64, total: u64| -> bool {
            let Some(cb) = &progress else { return true };
            Python::attach(|py| match cb.call1(py, (done, total)) {
                Ok(_) => true,
                Err(e) => {
                    callback_err = Some(e);
                    false
                }
            })
        };
        crate::nf4::convert_checkpoint(&jobs, &quantize, &transpose, &opts, &mut report)
    });
    if let Some(e) = callback_err {
        return Err(e);
    }
    let reports = result.map_err(to_py_err)?;
    Ok(reports
        .into_iter()
        .map(|r| (r.path.display().to_string(), r.keys, r.data_bytes))
        .collect())
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
    // nf4
    m.add_function(wrap_pyfunction!(nf4_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_tables, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_torch_sum, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_quant_state_json, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_convert_checkpoint, m)?)?;
    Ok(())
}
