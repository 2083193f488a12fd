//! One error enum for the whole core. `python/errors.rs` maps each variant to one class
//! of the Python exception family (`ladle.errors`), so the kind of failure survives the
//! language boundary instead of collapsing into a bare `Exception`.
//!
//! The enum is `Clone` (an I/O failure keeps its `io::ErrorKind` and message, not the
//! `io::Error`), because batch calls hand one error per failed row back to Python.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
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
    /// Invalid argument from the caller: a bad size, an out-of-range number, an option
    /// name that is not one of the choices.
    #[error("{0}")]
    Value(String),
    /// File system failure, with the path that failed.
    #[error("{path}: {message}")]
    Io {
        path: String,
        kind: std::io::ErrorKind,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, LadleError>;

impl LadleError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LadleError::Io {
            path: path.as_ref().display().to_string(),
            kind: source.kind(),
            message: source.to_string(),
        }
    }
}

/// The error every option parser (`FromStr` of a string-valued choice) returns, so a bad
/// choice is the same kind of error whichever option it was.
pub fn bad_choice(what: &str, got: &str, choices: &[&str]) -> LadleError {
    let quoted: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    LadleError::Value(format!(
        "unknown {what} {got:?}; expected one of {}",
        quoted.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_kind_and_clone() {
        let e = LadleError::io(
            "/no/such",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let copy = e.clone();
        assert_eq!(e, copy);
        match copy {
            LadleError::Io { kind, ref path, .. } => {
                assert_eq!(kind, std::io::ErrorKind::NotFound);
                assert_eq!(path, "/no/such");
            }
            other => panic!("not an Io error: {other:?}"),
        }
        assert!(e.to_string().starts_with("/no/such: "));
    }

    #[test]
    fn bad_choice_lists_the_choices() {
        let e = bad_choice("keep policy", "best", &["first", "longest"]);
        assert_eq!(
            e.to_string(),
            "unknown keep policy \"best\"; expected one of \"first\", \"longest\""
        );
        assert!(matches!(e, LadleError::Value(_)));
    }
}
