//! Chat rendering and tokenization: `ChatEncoder`.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyAny;

use super::Wrap;
use crate::chat::{ChatTemplate, Conversation};
use crate::error::LadleError;
use crate::tokenize::mask::{ChatEncoder as CoreChatEncoder, Encoded, MaskMethod, TrainOn};
use crate::tokenize::TextTokenizer;

/// Per-row outcome handed back to Python: the exception instance of a failed row, so
/// the wrapper can raise it (or count it) with its proper class.
type RowErrors = Vec<Option<Py<PyAny>>>;
/// Flat int32 values and int64 row offsets.
type FlatRows<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>);
/// `(input_ids, labels, offsets, n_trained, errors, methods)` of `ChatEncoder.encode`.
type EncodedRows<'py> = (
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    RowErrors,
    Vec<&'static str>,
);

fn row_errors<T>(py: Python<'_>, rows: &[crate::Result<T>]) -> RowErrors {
    rows.iter()
        .map(|r| match r {
            Ok(_) => None,
            Err(e) => Some(PyErr::from(e.clone()).into_value(py).into_any()),
        })
        .collect()
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

/// Encoded rows in the flat layout `ChatEncoder.encode` returns; a failed row is empty.
struct FlatEncoded {
    ids: Vec<i32>,
    labels: Vec<i32>,
    offsets: Vec<i64>,
    n_trained: Vec<i64>,
}

impl FlatEncoded {
    fn new(rows: &[crate::Result<Encoded>]) -> Self {
        let total = rows
            .iter()
            .map(|r| r.as_ref().map_or(0, |e| e.input_ids.len()))
            .sum();
        let mut out = FlatEncoded {
            ids: Vec::with_capacity(total),
            labels: Vec::with_capacity(total),
            offsets: Vec::with_capacity(rows.len() + 1),
            n_trained: Vec::with_capacity(rows.len()),
        };
        out.offsets.push(0);
        for r in rows {
            if let Ok(e) = r {
                // Token ids fit in i32: vocabularies are far below 2^31.
                out.ids.extend(e.input_ids.iter().map(|&i| i as i32));
                out.labels.extend_from_slice(&e.labels);
            }
            out.offsets.push(out.ids.len() as i64);
            out.n_trained
                .push(r.as_ref().map_or(0, |e| e.n_trained as i64));
        }
        out
    }
}

/// A compiled chat template plus a tokenizer.json: renders, tokenizes and masks
/// conversations given as JSON strings, in parallel with the GIL released.
#[pyclass(name = "ChatEncoder", module = "ladle._core", frozen)]
pub struct PyChatEncoder {
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
        Ok(py.detach(|| -> crate::Result<_> {
            let tok = TextTokenizer::from_file(&tokenizer_path)?;
            let tok = if fast { tok } else { tok.without_fast_path() };
            let tmpl = ChatTemplate::new(&template, &special_tokens)?;
            Ok(PyChatEncoder {
                inner: CoreChatEncoder::new(tmpl, tok),
            })
        })?)
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
    /// offsets, n_trained, errors, methods): flat int32 ids and labels (IGNORE_INDEX
    /// untrained), int64 row offsets (len n+1), int64 trained-token counts; a failed row
    /// is empty with its exception in `errors`; `methods[i]` says how row i's mask was
    /// located (`generation`, `prefix`, `turn`, `none`).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        conversations: Vec<String>,
        train_on: Wrap<TrainOn>,
    ) -> EncodedRows<'py> {
        // Encoding and flattening both run without the GIL; rows are copied once, into
        // arrays sized up front (no per-row intermediate vectors).
        let (rows, flat) = py.detach(|| {
            let rows = self.inner.encode_batch_json(&conversations, train_on.0);
            let flat = FlatEncoded::new(&rows);
            (rows, flat)
        });
        let errors = row_errors(py, &rows);
        let methods = rows
            .iter()
            .map(|r| r.as_ref().map_or(MaskMethod::None, |e| e.method).as_str())
            .collect();
        (
            PyArray1::from_vec(py, flat.ids),
            PyArray1::from_vec(py, flat.labels),
            PyArray1::from_vec(py, flat.offsets),
            PyArray1::from_vec(py, flat.n_trained),
            errors,
            methods,
        )
    }

    /// The rendered text and trained spans (character offsets) of one conversation.
    fn trained_spans(
        &self,
        py: Python<'_>,
        conversation: String,
        train_on: Wrap<TrainOn>,
    ) -> PyResult<(String, Vec<(usize, usize)>)> {
        Ok(py.detach(|| -> crate::Result<_> {
            let conv = Conversation::from_json(&conversation)?;
            let (text, spans) = self.inner.trained_spans(&conv, train_on.0)?;
            let char_at = |b: usize| {
                text.get(..b).map(|s| s.chars().count()).ok_or_else(|| {
                    LadleError::Template(format!("trained span ends inside a character ({b})"))
                })
            };
            let spans = spans
                .iter()
                .map(|&(s, e)| Ok((char_at(s)?, char_at(e)?)))
                .collect::<crate::Result<_>>()?;
            Ok((text, spans))
        })?)
    }

    /// Tokenizes plain texts (no template, no special tokens added); returns flat int32
    /// ids and int64 row offsets.
    fn tokenize<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<FlatRows<'py>> {
        let rows = py.detach(|| self.inner.tokenize_batch(&texts))?;
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
        Ok(self.inner.tokenizer.decode(&ids, skip_special_tokens)?)
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
