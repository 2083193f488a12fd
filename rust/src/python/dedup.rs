//! Exact and near-duplicate removal: `dedup_*` functions and their result classes.

use std::sync::Arc;

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rayon::prelude::*;
use serde::Deserialize;

use super::Wrap;
use crate::dedup::{self, DedupStats, Keep, NormalizeOptions, Scheme};
use crate::error::LadleError;

/// Live counters of a running `dedup_run`, polled by the Python progress bar from
/// another thread while the GIL is released.
#[pyclass(module = "ladle._core", frozen)]
pub struct DedupProgress {
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
        let (stage, done, total) = self.inner.snapshot();
        (stage.name(), done, total)
    }
}

#[pymethods]
impl DedupStats {
    /// Counters built in Python: a pass that compared nothing (dedup switched off:
    /// `rows_out` defaults to `rows_in`), or one assembled from partial passes (Ray).
    #[new]
    #[pyo3(signature = (
        *, rows_in = 0, rows_out = None, empty_rows = 0, exact_removed = 0, near_clusters = 0,
        near_removed = 0, decontaminated = 0, candidate_pairs = 0, verified_pairs = 0,
        bands = 0, rows_per_band = 0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rows_in: usize,
        rows_out: Option<usize>,
        empty_rows: usize,
        exact_removed: usize,
        near_clusters: usize,
        near_removed: usize,
        decontaminated: usize,
        candidate_pairs: usize,
        verified_pairs: usize,
        bands: usize,
        rows_per_band: usize,
    ) -> Self {
        DedupStats {
            rows_in,
            rows_out: rows_out.unwrap_or(rows_in),
            empty_rows,
            exact_removed,
            near_clusters,
            near_removed,
            decontaminated,
            candidate_pairs,
            verified_pairs,
            bands,
            rows_per_band,
        }
    }

    /// The counters as a plain dict (for JSON reports).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, self)?)
    }
}

/// Removed rows and the rows that explain them, as parallel arrays.
#[pyclass(module = "ladle._core", frozen, get_all)]
pub struct DedupPairs {
    /// int64: the removed row.
    removed: Py<PyArray1<i64>>,
    /// int64: the kept training row (or, for contamination, the eval row).
    kept: Py<PyArray1<i64>>,
    /// float64: true shingle Jaccard (1.0 for exact copies).
    similarity: Py<PyArray1<f64>>,
}

impl DedupPairs {
    fn new(py: Python<'_>, pairs: &[dedup::Pair]) -> Self {
        let column = |f: fn(&dedup::Pair) -> i64| -> Py<PyArray1<i64>> {
            pairs
                .iter()
                .map(f)
                .collect::<Vec<_>>()
                .into_pyarray(py)
                .unbind()
        };
        DedupPairs {
            removed: column(|p| p.removed as i64),
            kept: column(|p| p.kept as i64),
            similarity: pairs
                .iter()
                .map(|p| p.similarity)
                .collect::<Vec<_>>()
                .into_pyarray(py)
                .unbind(),
        }
    }
}

/// The result of `dedup_run`.
#[pyclass(module = "ladle._core", frozen, get_all)]
pub struct DedupOutput {
    /// bool per row: survives dedup and decontamination.
    keep: Py<PyArray1<bool>>,
    /// int64 per row: the kept row of its cluster (itself if unique), -1 if removed by
    /// decontamination.
    cluster: Py<PyArray1<i64>>,
    /// Every row removed as a duplicate.
    pairs: Py<DedupPairs>,
    /// Every training row removed as a copy of an eval row.
    contaminated: Py<DedupPairs>,
    stats: Py<DedupStats>,
}

/// Borrow the UTF-8 of Python strings; the `Bound`s keep them alive while the GIL
/// is released, so no text is copied.
fn borrow_texts<'a>(texts: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    texts.iter().map(|t| t.to_str()).collect()
}

/// Serde reads each string option through its `FromStr`, like [`Wrap`]'s
/// `FromPyObject`, so a bad choice reads the same from either path.
impl<'de, T: std::str::FromStr<Err = LadleError>> Deserialize<'de> for Wrap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Wrap).map_err(serde::de::Error::custom)
    }
}

/// The options dict of `dedup_run`. Every key is optional (missing keys take the
/// defaults below) and an unknown key is an error, so a typo never falls back silently.
/// Read with serde (`pythonize`) rather than `#[derive(FromPyObject)]`: PyO3 0.30
/// refuses to derive for a struct whose fields all have defaults, and ignores extra keys.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DedupOptions {
    threshold: f64,
    num_perm: usize,
    ngram: usize,
    scheme: Wrap<Scheme>,
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
    keep: Wrap<Keep>,
    bands: Option<(usize, usize)>,
    lsh_weights: Option<(f64, f64)>,
}

impl Default for DedupOptions {
    fn default() -> Self {
        let norm = NormalizeOptions::default();
        DedupOptions {
            threshold: 0.8,
            num_perm: 128,
            ngram: 5,
            scheme: Wrap(Scheme::Fast),
            seed: 1,
            normalize: true,
            nfkc: norm.nfkc,
            lowercase: norm.lowercase,
            strip_punctuation: norm.strip_punctuation,
            collapse_whitespace: norm.collapse_whitespace,
            digits_to_zero: norm.digits_to_zero,
            exact: true,
            near: true,
            verify: true,
            keep: Wrap(Keep::First),
            bands: None,
            lsh_weights: None,
        }
    }
}

impl DedupOptions {
    fn into_config(self) -> dedup::DedupConfig {
        dedup::DedupConfig {
            threshold: self.threshold,
            minhash: dedup::MinHashParams {
                scheme: self.scheme.0,
                num_perm: self.num_perm,
                ngram: self.ngram,
                seed: self.seed,
                normalize: self.normalize.then_some(NormalizeOptions {
                    nfkc: self.nfkc,
                    lowercase: self.lowercase,
                    strip_punctuation: self.strip_punctuation,
                    collapse_whitespace: self.collapse_whitespace,
                    digits_to_zero: self.digits_to_zero,
                }),
            },
            exact: self.exact,
            near: self.near,
            verify: self.verify,
            keep: self.keep.0,
            bands: self.bands,
            weights: self.lsh_weights,
        }
    }
}

/// Normalisation keyword arguments shared by `dedup_normalize` and `dedup_minhash`.
#[allow(clippy::fn_params_excessive_bools)]
fn norm_options(
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> NormalizeOptions {
    NormalizeOptions {
        nfkc,
        lowercase,
        strip_punctuation,
        collapse_whitespace,
        digits_to_zero,
    }
}

/// Normalised texts, exactly as the hashes see them.
#[pyfunction]
#[pyo3(signature = (texts, *, nfkc=true, lowercase=true, strip_punctuation=true, collapse_whitespace=true, digits_to_zero=false))]
pub fn dedup_normalize(
    py: Python<'_>,
    texts: Vec<Bound<'_, PyString>>,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> PyResult<Vec<String>> {
    let views = borrow_texts(&texts)?;
    let opts = norm_options(
        nfkc,
        lowercase,
        strip_punctuation,
        collapse_whitespace,
        digits_to_zero,
    );
    Ok(py.detach(|| {
        views
            .par_iter()
            .map(|t| dedup::normalize(t, &opts))
            .collect()
    }))
}

/// Permutation parameters `(a, b)` of a scheme, as datasketch's `MinHash.permutations`.
#[pyfunction]
#[pyo3(signature = (num_perm=128, seed=1, scheme=Wrap(Scheme::Datasketch)),
    text_signature = "(num_perm=128, seed=1, scheme='datasketch')")]
pub fn dedup_permutations(
    num_perm: usize,
    seed: u32,
    scheme: Wrap<Scheme>,
) -> PyResult<(Vec<u64>, Vec<u64>)> {
    let params = dedup::MinHashParams {
        scheme: scheme.0,
        num_perm,
        ngram: 1,
        seed,
        normalize: None,
    };
    Ok(dedup::MinHasher::new(params)?.permutations())
}

/// MinHash signatures, `len(texts) x num_perm` (uint32, or uint64 for the legacy scheme).
#[pyfunction]
#[pyo3(signature = (texts, *, num_perm=128, ngram=5, scheme=Wrap(Scheme::Datasketch), seed=1, normalize=true, nfkc=true, lowercase=true, strip_punctuation=true, collapse_whitespace=true, digits_to_zero=false),
    text_signature = "(texts, *, num_perm=128, ngram=5, scheme='datasketch', seed=1, \
    normalize=True, nfkc=True, lowercase=True, strip_punctuation=True, \
    collapse_whitespace=True, digits_to_zero=False)")]
#[allow(clippy::too_many_arguments)]
pub fn dedup_minhash<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    num_perm: usize,
    ngram: usize,
    scheme: Wrap<Scheme>,
    seed: u32,
    normalize: bool,
    nfkc: bool,
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
    digits_to_zero: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let params = dedup::MinHashParams {
        scheme: scheme.0,
        num_perm,
        ngram,
        seed,
        normalize: normalize.then(|| {
            norm_options(
                nfkc,
                lowercase,
                strip_punctuation,
                collapse_whitespace,
                digits_to_zero,
            )
        }),
    };
    let hasher = dedup::MinHasher::new(params)?;
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
pub fn dedup_optimal_params(
    py: Python<'_>,
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> PyResult<(usize, usize)> {
    Ok(py.detach(|| dedup::optimal_params(threshold, num_perm, fp_weight, fn_weight))?)
}

/// The whole dedup pass over `texts`, with the settings in the `options` dict (keys as
/// `DedupOptions`' fields); `against` (eval texts, compared with `against_keys` when
/// given) turns on decontamination.
#[pyfunction]
#[pyo3(signature = (texts, options, *, against=None, against_keys=None, lengths=None, progress=None))]
pub fn dedup_run<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    options: &Bound<'py, PyDict>,
    against: Option<Vec<Bound<'py, PyString>>>,
    against_keys: Option<Vec<Bound<'py, PyString>>>,
    lengths: Option<Vec<u64>>,
    progress: Option<Bound<'py, DedupProgress>>,
) -> PyResult<DedupOutput> {
    let config = pythonize::depythonize::<DedupOptions>(options)
        .map_err(|e| LadleError::Value(format!("dedup options: {e}")))?
        .into_config();
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
    let out = py.detach(|| {
        let against = has_against.then_some(((!keys.is_empty()).then_some(&keys[..]), &eval[..]));
        dedup::deduplicate(&views, &config, against, lengths.as_deref(), &prog)
    })?;
    Ok(DedupOutput {
        keep: out.keep.into_pyarray(py).unbind(),
        cluster: out.cluster.into_pyarray(py).unbind(),
        pairs: Py::new(py, DedupPairs::new(py, &out.pairs))?,
        contaminated: Py::new(py, DedupPairs::new(py, &out.contaminated))?,
        stats: Py::new(py, out.stats)?,
    })
}
