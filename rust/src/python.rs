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
#[path = "python_gguf.rs"]
mod python_gguf;

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
/// Flat int32 values and int64 row offsets.
type FlatRows<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>);

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
fn flatten<'py>(py: Python<'py>, rows: impl Iterator<Item = Vec<i32>>, n: usize) -> FlatRows<'py> {
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
    fn tokenize<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<FlatRows<'py>> {
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

// ---------------------------------------------------------------- dedup

use std::sync::Arc;

use numpy::PyArrayMethods;
use pyo3::types::{PyDict, PyString};

use crate::dedup;

/// Live counters of a running `dedup_run`, polled by the Python progress bar from
/// another thread while the GIL is released.
#[pyclass(module = "ladle._core", name = "DedupProgress", frozen)]
struct DedupProgress {
    inner: Arc<dedup::Progress>,
}

#[pymethods]
impl DedupProgress {
    #[new]
    fn new() -> Self {
        DedupProgress {
            inner: Arc::new(dedup::Progress::default()),
        }
    }

    /// `(stage, done, total)`.
    fn snapshot(&self) -> (&'static str, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let stage = self.inner.stage.load(Relaxed).min(dedup::STAGES.len() - 1);
        (
            dedup::STAGES[stage],
            self.inner.done.load(Relaxed),
            self.inner.total.load(Relaxed),
        )
    }
}

/// Borrow the UTF-8 of Python strings; the `Bound`s keep them alive while the GIL
/// is released, so no text is copied.
fn borrow_texts<'a>(texts: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    texts.iter().map(|t| t.to_str()).collect()
}

#[allow(clippy::fn_params_excessive_bools)]
fn norm_options(
    normalize: bool,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> Option<dedup::NormalizeOptions> {
    normalize.then_some(dedup::NormalizeOptions {
        nfkc,
        lowercase,
        strip_punctuation,
        collapse_whitespace,
        digits_to_zero,
    })
}

/// Normalised texts, exactly as the hashes see them.
#[pyfunction]
#[pyo3(signature = (texts, *, nfkc=true, lowercase=true, strip_punctuation=true, collapse_whitespace=true, digits_to_zero=false))]
fn dedup_normalize(
    py: Python<'_>,
    texts: Vec<Bound<'_, PyString>>,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> PyResult<Vec<String>> {
    let views = borrow_texts(&texts)?;
    let opts = dedup::NormalizeOptions {
        nfkc,
        lowercase,
        strip_punctuation,
        collapse_whitespace,
        digits_to_zero,
    };
    Ok(py.detach(|| {
        use rayon::prelude::*;
        views
            .par_iter()
            .map(|t| dedup::normalize(t, &opts))
            .collect()
    }))
}

/// Permutation parameters `(a, b)` of a scheme, as datasketch's `MinHash.permutations`.
#[pyfunction]
#[pyo3(signature = (num_perm=128, seed=1, scheme="datasketch"))]
fn dedup_permutations(num_perm: usize, seed: u32, scheme: &str) -> PyResult<(Vec<u64>, Vec<u64>)> {
    let params = dedup::MinHashParams {
        scheme: dedup::Scheme::parse(scheme).map_err(to_py_err)?,
        num_perm,
        ngram: 1,
        seed,
        normalize: None,
    };
    Ok(dedup::MinHasher::new(params)
        .map_err(to_py_err)?
        .permutations())
}

/// MinHash signatures, `len(texts) x num_perm` (uint32, or uint64 for the legacy scheme).
#[pyfunction]
#[pyo3(signature = (texts, *, num_perm=128, ngram=5, scheme="datasketch", seed=1, normalize=true, nfkc=true, lowercase=true, strip_punctuation=true, collapse_whitespace=true, digits_to_zero=false))]
#[allow(clippy::too_many_arguments)]
fn dedup_minhash<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    num_perm: usize,
    ngram: usize,
    scheme: &str,
    seed: u32,
    normalize: bool,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let params = dedup::MinHashParams {
        scheme: dedup::Scheme::parse(scheme).map_err(to_py_err)?,
        num_perm,
        ngram,
        seed,
        normalize: norm_options(
            normalize,
            nfkc,
            lowercase,
            strip_punctuation,
            collapse_whitespace,
            digits_to_zero,
        ),
    };
    let hasher = dedup::MinHasher::new(params).map_err(to_py_err)?;
    let views = borrow_texts(&texts)?;
    let n = views.len();
    Ok(match py.detach(|| dedup::signatures(&hasher, &views)) {
        dedup::Signatures::U32(v) => v.into_pyarray(py).reshape([n, num_perm])?.into_any(),
        dedup::Signatures::U64(v) => v.into_pyarray(py).reshape([n, num_perm])?.into_any(),
    })
}

/// `(bands, rows)` for a threshold, as datasketch's `_optimal_param`.
#[pyfunction]
#[pyo3(signature = (threshold, num_perm=128, fp_weight=0.5, fn_weight=0.5))]
fn dedup_optimal_params(
    py: Python<'_>,
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> PyResult<(usize, usize)> {
    py.detach(|| dedup::optimal_params(threshold, num_perm, fp_weight, fn_weight))
        .map_err(to_py_err)
}

fn pairs_to_dict<'py>(py: Python<'py>, pairs: &[dedup::Pair]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(
        "removed",
        pairs
            .iter()
            .map(|p| p.removed as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    d.set_item(
        "kept",
        pairs
            .iter()
            .map(|p| p.kept as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    d.set_item(
        "similarity",
        pairs
            .iter()
            .map(|p| p.similarity)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    Ok(d)
}

/// The whole dedup pass. Returns a dict of numpy arrays and counters; the typed
/// result object lives in `ladle.dedup`.
#[pyfunction]
#[pyo3(signature = (texts, *, threshold=0.8, num_perm=128, ngram=5, scheme="fast", seed=1, normalize=true, nfkc=true, lowercase=true, strip_punctuation=true, collapse_whitespace=true, digits_to_zero=false, exact=true, near=true, verify=true, keep="first", bands=None, lsh_weights=None, against=None, against_keys=None, lengths=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn dedup_run<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    threshold: f64,
    num_perm: usize,
    ngram: usize,
    scheme: &str,
    seed: u32,
    normalize: bool,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
    exact: bool,
    near: bool,
    verify: bool,
    keep: &str,
    bands: Option<(usize, usize)>,
    lsh_weights: Option<(f64, f64)>,
    against: Option<Vec<Bound<'py, PyString>>>,
    against_keys: Option<Vec<Bound<'py, PyString>>>,
    lengths: Option<Vec<u64>>,
    progress: Option<Bound<'py, DedupProgress>>,
) -> PyResult<Bound<'py, PyDict>> {
    let config = dedup::DedupConfig {
        threshold,
        minhash: dedup::MinHashParams {
            scheme: dedup::Scheme::parse(scheme).map_err(to_py_err)?,
            num_perm,
            ngram,
            seed,
            normalize: norm_options(
                normalize,
                nfkc,
                lowercase,
                strip_punctuation,
                collapse_whitespace,
                digits_to_zero,
            ),
        },
        exact,
        near,
        verify,
        keep: dedup::Keep::parse(keep).map_err(to_py_err)?,
        bands,
        weights: lsh_weights,
    };
    let views = borrow_texts(&texts)?;
    let eval_owned = against.unwrap_or_default();
    let eval = borrow_texts(&eval_owned)?;
    let keys_owned = against_keys.unwrap_or_default();
    let keys = borrow_texts(&keys_owned)?;
    let has_against = !eval_owned.is_empty() || !keys_owned.is_empty();
    let prog = progress.map_or_else(
        || Arc::new(dedup::Progress::default()),
        |p| p.get().inner.clone(),
    );
    let out = py
        .detach(|| {
            let against =
                has_against.then_some(((!keys.is_empty()).then_some(&keys[..]), &eval[..]));
            dedup::deduplicate(&views, &config, against, lengths.as_deref(), &prog)
        })
        .map_err(to_py_err)?;
    let d = PyDict::new(py);
    d.set_item("keep", out.keep.into_pyarray(py))?;
    d.set_item("cluster", out.cluster.into_pyarray(py))?;
    d.set_item("pairs", pairs_to_dict(py, &out.pairs)?)?;
    d.set_item("contaminated", pairs_to_dict(py, &out.contaminated)?)?;
    let s = &out.stats;
    let stats = PyDict::new(py);
    for (k, v) in [
        ("rows_in", s.rows_in),
        ("rows_out", s.rows_out),
        ("empty_rows", s.empty_rows),
        ("exact_removed", s.exact_removed),
        ("near_clusters", s.near_clusters),
        ("near_removed", s.near_removed),
        ("decontaminated", s.decontaminated),
        ("candidate_pairs", s.candidate_pairs),
        ("verified_pairs", s.verified_pairs),
        ("bands", s.bands),
        ("rows_per_band", s.rows_per_band),
    ] {
        stats.set_item(k, v)?;
    }
    d.set_item("stats", stats)?;
    Ok(d)
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
    // chat / tokenize
    m.add_class::<PyChatEncoder>()?;
    // ---- load + pack (data prep)
    m.add_function(wrap_pyfunction!(normalize_rows, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(assemble_packed, m)?)?;

    // ---- dedup
    m.add_class::<DedupProgress>()?;
    m.add_function(wrap_pyfunction!(dedup_normalize, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_permutations, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_minhash, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_optimal_params, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_run, m)?)?;

    // ---- nf4
    m.add_function(wrap_pyfunction!(nf4_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_tables, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_torch_sum, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_quant_state_json, m)?)?;
    m.add_function(wrap_pyfunction!(nf4_convert_checkpoint, m)?)?;
    python_gguf::register(m)?;
    Ok(())
}
