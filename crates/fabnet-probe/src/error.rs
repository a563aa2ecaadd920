//! The crate's error type: every variant names the file, line, row or value at fault.

use std::path::PathBuf;

/// Errors from readers, embedding I/O, probes, metrics and retrieval.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A malformed annotation or index file; `line` is 1-based.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line number of the offending text.
        line: usize,
        /// What is wrong, lowercase.
        msg: String,
    },
    /// An image named by an annotation file does not exist.
    #[error("missing image {0}")]
    MissingImage(PathBuf),
    /// A `.npy` or `.safetensors` file that is not a float32 N×D matrix.
    #[error("{path}: {msg}")]
    Format {
        /// The embeddings file.
        path: PathBuf,
        /// What is wrong, lowercase.
        msg: String,
    },
    /// Shapes or sizes that do not agree (rows vs index, features vs targets, ...).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A numerical failure, e.g. a matrix that is not positive definite.
    #[error("numerical error: {0}")]
    Numeric(String),
    /// An invalid argument or configuration value.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Failure to decode or encode an image file.
    #[error("{path}: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ProbeError>;

impl ProbeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProbeError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        ProbeError::Parse {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ProbeError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
