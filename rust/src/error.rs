//! One error enum for the whole core. `python.rs` maps each variant to one class of
//! the Python exception family (`ladle.errors`), so the kind of failure survives the
//! language boundary instead of collapsing into a bare `Exception`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LadleError {
    /// Bad input data: a malformed row, an unknown role, a field of the wrong type.
    #[error("{0}")]
    Data(String),
    /// A chat template that cannot be compiled or rendered faithfully.
    #[error("{0}")]
    Template(String),
    /// Tokenizer loading or encoding failure.
    #[error("{0}")]
    Tokenizer(String),
    /// Quantization: unsupported dtype, bad checkpoint, bad block size.
    #[error("{0}")]
    Quant(String),
    /// Invalid argument from the caller (bad size, out-of-range option).
    #[error("{0}")]
    Value(String),
    /// File system failure, with the path that failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, LadleError>;

impl LadleError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LadleError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
