//! Downstream evaluation of FAb-Net embeddings (reference §5), independent of the model: readers for
//! the probe benchmarks' annotation formats (MAFL/CelebA, 300-W `.pts`, dlib XML, pose and AU CSVs),
//! crop geometry and [-1, 1] landmark targets, the paper's BatchNorm1d → Linear probe and a closed-form
//! ridge baseline, the metrics (NME with a named normaliser, pose MAE, per-AU ROC-AUC), JSON/Markdown
//! reports, `.npy`/`.safetensors` embedding files with their `index.csv`, and exact chunked k-NN
//! retrieval with a PNG grid of the results.
//!
//! The crate does not depend on the model: callers embed images elsewhere and hand over the vectors.

pub mod bn_linear;
mod csv;
pub mod embeddings;
pub mod error;
pub mod fsutil;
pub mod geometry;
pub mod grid;
pub mod linalg;
pub mod metrics;
pub mod npy;
pub mod pca;
pub mod readers;
pub mod report;
pub mod retrieval;
pub mod ridge;
pub mod task;
#[cfg(test)]
mod testutil;

pub use bn_linear::{BnLinearConfig, BnLinearFit, BnLinearProbe, GammaInit, ProbeLoss};
pub use embeddings::{
    gather_rows, open_embeddings, open_with_index, read_embeddings, write_embeddings,
    EmbeddingIndex, Embeddings, RowSource, SafetensorsMmap,
};
pub use error::{ProbeError, Result};
pub use geometry::{crop_resize, CropBox, MaflCrop, PointsBox};
pub use grid::{draw_grid, draw_grid_files, GridStyle};
pub use linalg::Matrix;
pub use metrics::{au_auc, nme, pose_mae, roc_auc, Normaliser};
pub use npy::{read_npy, write_npy, NpyMmap, NpyWriter};
pub use pca::Pca;
pub use readers::{check_images, LandmarkSample, PixelOrigin};
pub use report::{ProbeMetrics, ProbeReport};
pub use retrieval::{knn, query_rows, Metric, Neighbour, SearchOptions};
pub use ridge::{RidgeConfig, RidgeProbe};
pub use task::{run_probe, ProbeData, ProbeKind, ProbeRun, Task};
