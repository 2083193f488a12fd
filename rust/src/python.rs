//! The only file that touches PyO3. Each function is a thin wrapper: convert
//! arguments, release the GIL (`py.detach`) around the Rust work, map errors once
//! through `to_py_err`. Exceptions are created here and re-exported by
//! `ladle.errors`, so Python and Rust failures share one family.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use std::collections::{BTreeMap, HashMap};

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use rayon::prelude::*;

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

// ---------------------------------------------------------------- load

/// Convert a parsed JSON value into Python objects (dict/list/str/int/float/bool/None).
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::types::{PyDict, PyList};
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => pyo3::types::PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

type BadRow = (String, usize, String, String);
type NormalizeOut<'py> = (
    Bound<'py, PyAny>,
    Vec<usize>,
    BTreeMap<String, usize>,
    Vec<BadRow>,
);

/// Parse and normalise JSON rows into Ladle's internal conversation form.
///
/// Returns `(rows, lines, bad_counts, bad_first)` (rows as dicts, or as compact JSON text
/// with `as_json`); `bad_first` holds
/// `(reason, line, field, message)` for the first few bad rows of each reason.
#[pyfunction]
#[pyo3(signature = (data, format, *, columns=None, roles=None, system=None, strict=false,
    limit=None, source="<data>".to_string(), unit="line".to_string(), offset=0, json_array=false,
    as_json=false))]
#[allow(clippy::too_many_arguments)]
fn normalize_rows<'py>(
    py: Python<'py>,
    data: &[u8],
    format: &str,
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
    let opts = crate::load::Options {
        format: crate::load::Format::parse(format).map_err(to_py_err)?,
        columns: columns.unwrap_or_default(),
        roles: roles.unwrap_or_default(),
        system,
        strict,
        limit,
        source,
        unit,
        offset,
    };
    let loaded = py
        .detach(|| {
            if json_array {
                crate::load::normalize_json(data, &opts)
            } else {
                crate::load::normalize_jsonl(data, &opts)
            }
        })
        .map_err(to_py_err)?;
    let rows = pyo3::types::PyList::empty(py);
    if as_json {
        // Compact JSON text per row: a fraction of the memory of Python dicts, and what
        // the chat encoder parses anyway.
        let texts: Vec<String> = py.detach(|| {
            loaded
                .rows
                .par_iter()
                .map(|r| serde_json::to_string(r).unwrap_or_default())
                .collect()
        });
        for t in texts {
            rows.append(t)?;
        }
    } else {
        for row in &loaded.rows {
            rows.append(json_to_py(py, row)?)?;
        }
    }
    let counts = loaded
        .bad_counts
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let first = loaded
        .bad_first
        .into_iter()
        .map(|b| (b.reason.to_string(), b.line, b.field, b.message))
        .collect();
    Ok((rows.into_any(), loaded.lines, counts, first))
}

// ---------------------------------------------------------------- pack

/// Pack documents of the given lengths into bins of at most `capacity` tokens.
/// Returns the document indices of each bin; bins are shuffled by `seed`.
#[pyfunction]
#[pyo3(signature = (lengths, capacity, strategy="bfd", seed=0))]
fn pack(
    py: Python<'_>,
    lengths: PyReadonlyArray1<'_, i64>,
    capacity: u64,
    strategy: &str,
    seed: u64,
) -> PyResult<Vec<Vec<usize>>> {
    let strategy = crate::pack::Strategy::parse(strategy).map_err(to_py_err)?;
    let lengths = lengths
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(bad) = lengths.iter().find(|&&l| l < 0) {
        return Err(PyValueError::new_err(format!("negative length {bad}")));
    }
    let lengths: Vec<u64> = lengths.iter().map(|&l| l as u64).collect();
    py.detach(|| crate::pack::pack(&lengths, capacity, strategy, seed))
        .map_err(to_py_err)
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
fn assemble_packed<'py>(
    py: Python<'py>,
    ids: PyReadonlyArray1<'py, i32>,
    labels: PyReadonlyArray1<'py, i32>,
    offsets: PyReadonlyArray1<'py, i64>,
    bins: Vec<Vec<usize>>,
) -> PyResult<PackedArrays<'py>> {
    let err = |e: numpy::AsSliceError| PyValueError::new_err(e.to_string());
    let (ids, labels, offsets) = (
        ids.as_slice().map_err(err)?,
        labels.as_slice().map_err(err)?,
        offsets.as_slice().map_err(err)?,
    );
    let p = py
        .detach(|| crate::pack::assemble(ids, labels, offsets, &bins))
        .map_err(to_py_err)?;
    Ok((
        p.input_ids.into_pyarray(py),
        p.labels.into_pyarray(py),
        p.position_ids.into_pyarray(py),
        p.row_offsets.into_pyarray(py),
        p.seq_lengths.into_pyarray(py),
        p.seq_offsets.into_pyarray(py),
    ))
}

// ---------------------------------------------------------------- chat / tokenize

use crate::chat::{ChatTemplate, Conversation};
use crate::tokenize::mask::{ChatEncoder as CoreChatEncoder, Encoded, TrainOn};
use crate::tokenize::TextTokenizer;
use pyo3::types::PyAny;

/// Per-row outcome handed back to Python: the exception instance of a failed row, so
/// the wrapper can raise it (or count it) with its proper class.
type RowErrors = Vec<Option<Py<PyAny>>>;

fn row_errors<T>(py: Python<'_>, rows: &[crate::Result<T>]) -> RowErrors {
    rows.iter()
        .map(|r| match r {
            Ok(_) => None,
            Err(e) => Some(to_py_err(clone_err(e)).into_value(py).into_any()),
        })
        .collect()
}

fn clone_err(e: &LadleError) -> LadleError {
    let msg = e.to_string();
    match e {
        LadleError::Data(_) => LadleError::Data(msg),
        LadleError::Template(_) => LadleError::Template(msg),
        LadleError::Tokenizer(_) => LadleError::Tokenizer(msg),
        LadleError::Quant(_) => LadleError::Quant(msg),
        LadleError::Value(_) => LadleError::Value(msg),
        LadleError::Io { path, source } => LadleError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
    }
}

/// Flat int32 ids plus row offsets: the layout pyarrow's ListArray.from_arrays takes.
fn flatten<'py>(
    py: Python<'py>,
    rows: impl Iterator<Item = Vec<i32>>,
    n: usize,
) -> (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>) {
    let mut flat = Vec::new();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i64);
    for r in rows {
        flat.extend_from_slice(&r);
        offsets.push(flat.len() as i64);
    }
    (
        PyArray1::from_vec(py, flat),
        PyArray1::from_vec(py, offsets),
    )
}

/// A compiled chat template plus a tokenizer.json: renders, tokenizes and masks
/// conversations given as JSON strings, in parallel with the GIL released.
#[pyclass(name = "ChatEncoder", module = "ladle._core", frozen)]
struct PyChatEncoder {
    inner: CoreChatEncoder,
}

#[pymethods]
impl PyChatEncoder {
    #[new]
    #[pyo3(signature = (tokenizer_path, template, special_tokens, fast=true))]
    fn new(
        py: Python<'_>,
        tokenizer_path: String,
        template: String,
        special_tokens: Vec<(String, String)>,
        fast: bool,
    ) -> PyResult<Self> {
        py.detach(|| {
            let tok = TextTokenizer::from_file(&tokenizer_path)?;
            let tok = if fast { tok } else { tok.without_fast_path() };
            let tmpl = ChatTemplate::new(&template, &special_tokens)?;
            Ok(PyChatEncoder {
                inner: CoreChatEncoder::new(tmpl, tok),
            })
        })
        .map_err(to_py_err)
    }

    /// True when the byte-level BPE fast path encodes (False: the tokenizers crate).
    #[getter]
    fn is_fast(&self) -> bool {
        self.inner.tokenizer.is_fast()
    }

    /// True when the template has `{% generation %}` markers.
    #[getter]
    fn has_generation_markers(&self) -> bool {
        self.inner.template.has_generation_markers()
    }

    /// Renders JSON conversations; returns (texts, errors), None where a row failed.
    fn render(
        &self,
        py: Python<'_>,
        conversations: Vec<String>,
        add_generation_prompt: bool,
    ) -> (Vec<Option<String>>, RowErrors) {
        let rows = py.detach(|| {
            self.inner
                .render_batch_json(&conversations, add_generation_prompt)
        });
        let errors = row_errors(py, &rows);
        (rows.into_iter().map(|r| r.ok()).collect(), errors)
    }

    /// Renders, tokenizes and masks JSON conversations. Returns (input_ids, labels,
    /// offsets, n_trained, errors): flat int32 ids and labels (-100 untrained), int64 row
    /// offsets (len n+1), int64 trained-token counts; a failed row is empty with its
    /// exception in `errors`.
    #[allow(clippy::type_complexity)]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        conversations: Vec<String>,
        train_on: &str,
    ) -> PyResult<(
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        RowErrors,
    )> {
        let mode: TrainOn = train_on.parse().map_err(to_py_err)?;
        let rows = py.detach(|| self.inner.encode_batch_json(&conversations, mode));
        let errors = row_errors(py, &rows);
        let n = rows.len();
        let empty = Encoded {
            input_ids: Vec::new(),
            labels: Vec::new(),
            n_trained: 0,
        };
        let rows: Vec<Encoded> = rows
            .into_iter()
            .map(|r| r.unwrap_or_else(|_| empty.clone()))
            .collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.n_trained as i64).collect();
        let (ids, offsets) = flatten(
            py,
            rows.iter()
                .map(|r| r.input_ids.iter().map(|&i| i as i32).collect()),
            n,
        );
        let (labels, _) = flatten(py, rows.into_iter().map(|r| r.labels), n);
        Ok((ids, labels, offsets, PyArray1::from_vec(py, counts), errors))
    }

    /// The rendered text and trained spans (character offsets) of one conversation.
    fn trained_spans(
        &self,
        py: Python<'_>,
        conversation: String,
        train_on: &str,
    ) -> PyResult<(String, Vec<(usize, usize)>)> {
        let mode: TrainOn = train_on.parse().map_err(to_py_err)?;
        py.detach(|| -> crate::Result<_> {
            let conv = Conversation::from_json(&conversation)?;
            let (text, spans) = self.inner.trained_spans(&conv, mode)?;
            let char_at = |b: usize| text[..b].chars().count();
            let spans = spans
                .iter()
                .map(|&(s, e)| (char_at(s), char_at(e)))
                .collect();
            Ok((text, spans))
        })
        .map_err(to_py_err)
    }

    /// Tokenizes plain texts (no template, no special tokens added); returns flat int32
    /// ids and int64 row offsets.
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>)> {
        let rows = py
            .detach(|| self.inner.tokenize_batch(&texts))
            .map_err(to_py_err)?;
        let n = rows.len();
        Ok(flatten(
            py,
            rows.into_iter()
                .map(|r| r.into_iter().map(|i| i as i32).collect()),
            n,
        ))
    }

    /// Text of `ids`.
    #[pyo3(signature = (ids, skip_special_tokens=false))]
    fn decode(&self, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        self.inner
            .tokenizer
            .decode(&ids, skip_special_tokens)
            .map_err(to_py_err)
    }

    /// Id of a token string, None when unknown.
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.tokenizer.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.tokenizer.vocab_size()
    }
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
    // chat / tokenize
    m.add_class::<PyChatEncoder>()?;
    // load + pack (data prep)
    m.add_function(wrap_pyfunction!(normalize_rows, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(assemble_packed, m)?)?;
    // dedup / nf4 bindings are added below by their issues.
    Ok(())
}
