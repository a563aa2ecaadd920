//! Errors of corpus generation.

use std::path::PathBuf;

/// Everything that can go wrong while writing a synthetic corpus.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A file or folder could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file could not be read.
    #[error("cannot read config {path}: {source}")]
    ReadConfig {
        /// The config path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file is not valid TOML for [`crate::SynthConfig`].
    #[error("cannot parse config {path}: {message}")]
    ParseConfig {
        /// The config path (or `<string>`).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A config value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Video encoding failed.
    #[error("cannot encode video {path}: {message}")]
    Encode {
        /// The video being written.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
    /// PNG encoding failed.
    #[error("cannot encode image {path}: {message}")]
    Image {
        /// The image being written.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
}

/// Result with a [`SynthError`].
pub type Result<T> = std::result::Result<T, SynthError>;
