//! Training FAb-Net: the optimisers of the paper with their state as named
//! tensors, the sliding-window curriculum of §4, and checkpoints that a run
//! resumes from exactly. A library: the `fabnet train` command drives it.

pub mod checkpoint;
mod config;
pub mod curriculum;
pub mod optim;
pub mod plot;
mod trainer;
mod update;

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
    /// The model failed (shapes, weights).
    #[error(transparent)]
    Model(#[from] fabnet_core::ModelError),
    /// The data could not be indexed or loaded.
    #[error("data: {0}")]
    Data(String),
    /// The loss or the gradients became NaN or infinite.
    #[error("the {what} is not finite at step {step}; the last good checkpoint is {}", last_checkpoint.as_ref().map_or("none (no checkpoint yet)".to_string(), |p| p.display().to_string()))]
    NonFinite {
        /// What was not finite: `loss` or `gradient`.
        what: &'static str,
        /// The step whose loss or gradient was not finite.
        step: u64,
        /// The newest checkpoint written before it, if any.
        last_checkpoint: Option<PathBuf>,
    },
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
pub use config::{parse_device, Objective, TrainConfig};
pub use curriculum::{Curriculum, CurriculumConfig, ScheduleEvent};
pub use optim::{Optimizer, OptimizerConfig};
pub use trainer::{
    autoencoder_grid, batch_tensors, loss_curve, model_config, reconstruction_grid, train,
    trainable_params, validate, Network, Output, RunOptions, TrainSummary,
};
