//! The crate's error type: every variant names the file, identity or value at fault.

use std::path::PathBuf;

/// Errors from indexing, splitting, decoding and loading.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A filesystem operation failed on `path`.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The dataset root holds no track with at least one frame.
    #[error("dataset root {0} holds no non-empty IDENTITY/VIDEO/TRACK folder")]
    EmptyDataset(PathBuf),
    /// An image could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The index cache file could not be written or parsed.
    #[error("index cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An identity was assigned to two splits.
    #[error("identity {name} is listed in both the {first} and the {second} split")]
    SplitOverlap {
        /// The identity folder name.
        name: String,
        /// The first split it appears in.
        first: &'static str,
        /// The second split it appears in.
        second: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid {what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// More frames failed to decode than the [`crate::BadInputPolicy`] allows.
    #[error(
        "too many unreadable frames: {bad} of {reads} reads failed ({limit}); last bad files: {}",
        last.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    TooManyBadFrames {
        /// Failed reads so far in this loader.
        bad: u64,
        /// All frame reads so far in this loader.
        reads: u64,
        /// The limit that was exceeded, in words.
        limit: String,
        /// The most recent bad files, oldest first.
        last: Vec<PathBuf>,
    },
    /// One sample could not be assembled: every frame tried for its identity failed.
    #[error(
        "identity {identity}: no readable frame after {attempts} attempts; last bad file {last}"
    )]
    UnreadableSample {
        /// The identity folder name.
        identity: String,
        /// Decode attempts made for this sample.
        attempts: usize,
        /// The last file that failed.
        last: PathBuf,
    },
    /// A loader worker thread panicked.
    #[error("loader worker panicked while loading sample {sample}: {message}")]
    WorkerPanic {
        /// The sample index within the epoch.
        sample: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(what: &'static str, reason: impl Into<String>) -> Self {
        DataError::Config {
            what,
            reason: reason.into(),
        }
    }
}
