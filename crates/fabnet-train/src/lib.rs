//! Training FAb-Net: the optimisers of the paper with their state as named
//! tensors, the sliding-window curriculum of §4, and checkpoints that a run
//! resumes from exactly. A library: the `fabnet train` command drives it.

pub mod checkpoint;
pub mod curriculum;
pub mod optim;
pub mod plot;

use std::path::{Path, PathBuf};

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint is unreadable or does not fit the run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The run's configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub use checkpoint::{load_checkpoint, Checkpoint, CheckpointDir, CheckpointMeta};
pub use curriculum::{window_positions, Curriculum, CurriculumConfig, ScheduleEvent};
pub use optim::{Optimizer, OptimizerConfig};
