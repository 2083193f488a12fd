//! NF4/FP4 quantization: one tensor, the code tables, and whole checkpoints.

use std::collections::HashMap;
use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::errors::not_contiguous;
use super::Wrap;
use crate::error::LadleError;
use crate::nf4::{FloatDtype, QuantType};

/// Packed codes, float32 absmax and, with double quantization, (codes, nested absmax,
/// offset), as numpy arrays.
type Nf4Out<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<f32>>,
    Option<(Bound<'py, PyArray1<u8>>, Bound<'py, PyArray1<f32>>, f32)>,
);

/// torch's reduction shape: its float vector width (4 to 16 on real CPUs) and thread
/// count. The emulation allocates one slot per thread, so both are bounded here.
fn check_reduction(lanes: usize, threads: usize) -> crate::Result<()> {
    const MAX_LANES: usize = 1 << 10;
    const MAX_THREADS: usize = 1 << 16;
    if !(1..=MAX_LANES).contains(&lanes) || !(1..=MAX_THREADS).contains(&threads) {
        return Err(LadleError::Value(format!(
            "lanes must be in 1..={MAX_LANES} and threads in 1..={MAX_THREADS}, got \
             lanes={lanes}, threads={threads}"
        )));
    }
    Ok(())
}

/// Quantize the little-endian bytes of one tensor (`dtype`: float32/bfloat16/float16).
#[pyfunction]
#[pyo3(signature = (data, dtype, blocksize=64, quant_type=Wrap(QuantType::Nf4), double_quant=false, lanes=16, threads=1),
    text_signature = "(data, dtype, blocksize=64, quant_type='nf4', double_quant=False, \
    lanes=16, threads=1)")]
#[allow(clippy::too_many_arguments)]
pub fn nf4_quantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    dtype: Wrap<FloatDtype>,
    blocksize: usize,
    quant_type: Wrap<QuantType>,
    double_quant: bool,
    lanes: usize,
    threads: usize,
) -> PyResult<Nf4Out<'py>> {
    check_reduction(lanes, threads)?;
    let bytes = data.as_slice().map_err(|_| not_contiguous("data"))?;
    let q = py.detach(|| {
        crate::nf4::quantize_tensor(
            dtype.0,
            bytes,
            blocksize,
            quant_type.0,
            double_quant,
            lanes,
            threads,
        )
    })?;
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
pub fn nf4_torch_sum(xs: PyReadonlyArray1<'_, f32>, lanes: usize, threads: usize) -> PyResult<f32> {
    check_reduction(lanes, threads)?;
    let xs = xs.as_slice().map_err(|_| not_contiguous("xs"))?;
    Ok(crate::nf4::double::torch_sum(xs, lanes, threads))
}

/// The code tables compiled in (float32 values): `nf4`, `fp4`, `dynamic`.
#[pyfunction]
pub fn nf4_tables() -> HashMap<&'static str, Vec<f32>> {
    use crate::nf4::{dynamic_map, tables_f32};
    HashMap::from([
        ("nf4", tables_f32(QuantType::Nf4).to_vec()),
        ("fp4", tables_f32(QuantType::Fp4).to_vec()),
        ("dynamic", dynamic_map().to_vec()),
    ])
}

/// The quant_state JSON bytes bitsandbytes packs for one quantized weight.
#[pyfunction]
#[pyo3(signature = (quant_type, blocksize, dtype, shape, nested_offset=None))]
pub fn nf4_quant_state_json(
    quant_type: Wrap<QuantType>,
    blocksize: usize,
    dtype: Wrap<FloatDtype>,
    shape: Vec<usize>,
    nested_offset: Option<f32>,
) -> Vec<u8> {
    let meta = crate::nf4::QuantStateMeta {
        quant_type: quant_type.0,
        blocksize,
        dtype: dtype.0,
        shape,
        nested_offset,
    };
    meta.to_json_bytes()
}

/// Convert safetensors shards `jobs` [(src, dst)] to a bitsandbytes 4-bit checkpoint.
/// Returns [(dst, keys, data_bytes)]. `progress(done, total)` is called with source bytes.
#[pyfunction]
#[pyo3(signature = (jobs, quantize, transpose=Vec::new(), blocksize=64, quant_type=Wrap(QuantType::Nf4), double_quant=true, dtype=None, lanes=16, threads=1, progress=None),
    text_signature = "(jobs, quantize, transpose=[], blocksize=64, quant_type='nf4', \
    double_quant=True, dtype=None, lanes=16, threads=1, progress=None)")]
#[allow(clippy::too_many_arguments)]
pub fn nf4_convert_checkpoint(
    py: Python<'_>,
    jobs: Vec<(String, String)>,
    quantize: Vec<String>,
    transpose: Vec<String>,
    blocksize: usize,
    quant_type: Wrap<QuantType>,
    double_quant: bool,
    dtype: Option<Wrap<FloatDtype>>,
    lanes: usize,
    threads: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<(String, Vec<String>, u64)>> {
    check_reduction(lanes, threads)?;
    let opts = crate::nf4::ConvertOptions {
        blocksize,
        quant_type: quant_type.0,
        double_quant,
        dtype: dtype.map(|d| d.0),
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
    Ok(result?
        .into_iter()
        .map(|r| (r.path.display().to_string(), r.keys, r.data_bytes))
        .collect())
}
