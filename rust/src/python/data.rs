//! Data preparation: fingerprints, row normalisation, packing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::errors::not_contiguous;
use super::Wrap;
use crate::error::LadleError;
use crate::load::{Format, Loaded};
use crate::pack::Strategy;

/// Hex xxh3-128 fingerprint of the bytes of `paths` (length-prefixed, in order).
#[pyfunction]
pub fn fingerprint_files(py: Python<'_>, paths: Vec<String>) -> PyResult<String> {
    Ok(py.detach(|| crate::hashing::fingerprint_files(&paths))?)
}

/// Hex xxh3-128 fingerprint of a byte string.
#[pyfunction]
pub fn fingerprint_bytes(data: &[u8]) -> String {
    crate::hashing::fingerprint_bytes(data)
}

type BadRow = (String, usize, String, String);
type BadReports = (BTreeMap<String, usize>, Vec<BadRow>);
type NormalizeOut<'py> = (
    Bound<'py, PyAny>,
    Vec<usize>,
    BTreeMap<String, usize>,
    Vec<BadRow>,
);
type FlatOut<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    BTreeMap<String, usize>,
    Vec<BadRow>,
);

/// The two bindings' common part: options from the Python arguments, then the one
/// normaliser (`crate::load`), GIL released.
#[allow(clippy::too_many_arguments)]
fn normalize(
    py: Python<'_>,
    data: &[u8],
    format: Format,
    columns: Option<HashMap<String, String>>,
    roles: Option<HashMap<String, String>>,
    system: Option<String>,
    strict: bool,
    limit: Option<usize>,
    source: String,
    unit: String,
    offset: usize,
    json_array: bool,
) -> PyResult<Loaded> {
    let opts = crate::load::Options {
        format,
        columns: columns.unwrap_or_default(),
        roles: roles.unwrap_or_default(),
        system,
        strict,
        limit,
        source,
        unit,
        offset,
    };
    Ok(py.detach(|| {
        if json_array {
            crate::load::normalize_json(data, &opts)
        } else {
            crate::load::normalize_jsonl(data, &opts)
        }
    })?)
}

/// Counts per bad-row reason and `(reason, line, field, message)` of the first few.
fn bad_reports(loaded: &mut Loaded) -> BadReports {
    let counts = loaded
        .bad_counts
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let first = std::mem::take(&mut loaded.bad_first)
        .into_iter()
        .map(|b| (b.reason.to_string(), b.line, b.field, b.message))
        .collect();
    (counts, first)
}

/// Parse and normalise JSON rows into Ladle's internal conversation form.
///
/// Returns `(rows, lines, bad_counts, bad_first)` (rows as dicts, or as compact JSON text
/// with `as_json`); `bad_first` holds
/// `(reason, line, field, message)` for the first few bad rows of each reason.
#[pyfunction]
#[pyo3(signature = (data, format, *, columns=None, roles=None, system=None, strict=false,
    limit=None, source="<data>".to_string(), unit="line".to_string(), offset=0, json_array=false,
    as_json=false),
    text_signature = "(data, format, *, columns=None, roles=None, system=None, strict=False, \
    limit=None, source='<data>', unit='line', offset=0, json_array=False, as_json=False)")]
#[allow(clippy::too_many_arguments)]
pub fn normalize_rows<'py>(
    py: Python<'py>,
    data: &[u8],
    format: Wrap<Format>,
    columns: Option<HashMap<String, String>>,
    roles: Option<HashMap<String, String>>,
    system: Option<String>,
    strict: bool,
    limit: Option<usize>,
    source: String,
    unit: String,
    offset: usize,
    json_array: bool,
    as_json: bool,
) -> PyResult<NormalizeOut<'py>> {
    let mut loaded = normalize(
        py, data, format.0, columns, roles, system, strict, limit, source, unit, offset, json_array,
    )?;
    let rows = if as_json {
        // Compact JSON text per row: a fraction of the memory of Python dicts, and what
        // the chat encoder parses anyway.
        let texts = py.detach(|| loaded.json_texts());
        texts.into_pyobject(py)?.into_any()
    } else {
        pythonize::pythonize(py, &loaded.rows)?
    };
    let (counts, first) = bad_reports(&mut loaded);
    Ok((rows, loaded.lines, counts, first))
}

/// `normalize_rows` with the kept rows as one buffer of JSON lines, no Python object per
/// row: `(buffer, line_ends, lines, bad_counts, bad_first)`, row `k` being
/// `buffer[line_ends[k - 1]:line_ends[k]]` (its compact JSON and a `\n`).
#[pyfunction]
#[pyo3(signature = (data, format, *, columns=None, roles=None, system=None, strict=false,
    limit=None, source="<data>".to_string(), unit="line".to_string(), offset=0, json_array=false),
    text_signature = "(data, format, *, columns=None, roles=None, system=None, strict=False, \
    limit=None, source='<data>', unit='line', offset=0, json_array=False)")]
#[allow(clippy::too_many_arguments)]
pub fn normalize_rows_flat<'py>(
    py: Python<'py>,
    data: &[u8],
    format: Wrap<Format>,
    columns: Option<HashMap<String, String>>,
    roles: Option<HashMap<String, String>>,
    system: Option<String>,
    strict: bool,
    limit: Option<usize>,
    source: String,
    unit: String,
    offset: usize,
    json_array: bool,
) -> PyResult<FlatOut<'py>> {
    let mut loaded = normalize(
        py, data, format.0, columns, roles, system, strict, limit, source, unit, offset, json_array,
    )?;
    let (buf, ends) = py.detach(|| loaded.to_jsonl());
    let lines: Vec<i64> = loaded.lines.iter().map(|&l| l as i64).collect();
    let (counts, first) = bad_reports(&mut loaded);
    Ok((
        buf.into_pyarray(py),
        ends.into_pyarray(py),
        lines.into_pyarray(py),
        counts,
        first,
    ))
}

/// Pack documents of the given lengths into bins of at most `capacity` tokens.
/// Returns the document indices of each bin; bins are shuffled by `seed`.
#[pyfunction]
#[pyo3(signature = (lengths, capacity, strategy=Wrap(Strategy::BestFit), seed=0),
    text_signature = "(lengths, capacity, strategy='bfd', seed=0)")]
pub fn pack(
    py: Python<'_>,
    lengths: PyReadonlyArray1<'_, i64>,
    capacity: u64,
    strategy: Wrap<Strategy>,
    seed: u64,
) -> PyResult<Vec<Vec<usize>>> {
    let lengths = lengths.as_slice().map_err(|_| not_contiguous("lengths"))?;
    if let Some(bad) = lengths.iter().find(|&&l| l < 0) {
        return Err(LadleError::Value(format!("negative length {bad}")).into());
    }
    let lengths: Vec<u64> = lengths.iter().map(|&l| l as u64).collect();
    Ok(py.detach(|| crate::pack::pack(&lengths, capacity, strategy.0, seed))?)
}

type PackedArrays<'py> = (
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
);

/// Concatenate documents into packed rows. Returns flat arrays
/// `(input_ids, labels, position_ids, row_offsets, seq_lengths, seq_offsets)`.
#[pyfunction]
pub fn assemble_packed<'py>(
    py: Python<'py>,
    ids: PyReadonlyArray1<'py, i32>,
    labels: PyReadonlyArray1<'py, i32>,
    offsets: PyReadonlyArray1<'py, i64>,
    bins: Vec<Vec<usize>>,
) -> PyResult<PackedArrays<'py>> {
    let ids = ids.as_slice().map_err(|_| not_contiguous("ids"))?;
    let labels = labels.as_slice().map_err(|_| not_contiguous("labels"))?;
    let offsets = offsets.as_slice().map_err(|_| not_contiguous("offsets"))?;
    let p = py.detach(|| crate::pack::assemble(ids, labels, offsets, &bins))?;
    Ok(packed_arrays(py, p))
}

/// `assemble_packed` with the tokens read from two files of native-endian int32 (the
/// token files `ladle prep` spills while encoding), document by document, instead of
/// from arrays in memory.
#[pyfunction]
pub fn assemble_packed_files<'py>(
    py: Python<'py>,
    ids_path: PathBuf,
    labels_path: PathBuf,
    offsets: PyReadonlyArray1<'py, i64>,
    bins: Vec<Vec<usize>>,
) -> PyResult<PackedArrays<'py>> {
    let offsets = offsets.as_slice().map_err(|_| not_contiguous("offsets"))?;
    let p = py.detach(|| crate::pack::assemble_files(&ids_path, &labels_path, offsets, &bins))?;
    Ok(packed_arrays(py, p))
}

fn packed_arrays(py: Python<'_>, p: crate::pack::Packed) -> PackedArrays<'_> {
    (
        p.input_ids.into_pyarray(py),
        p.labels.into_pyarray(py),
        p.position_ids.into_pyarray(py),
        p.row_offsets.into_pyarray(py),
        p.seq_lengths.into_pyarray(py),
        p.seq_offsets.into_pyarray(py),
    )
}
