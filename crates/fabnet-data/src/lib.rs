//! FAb-Net's data pipeline, usable on its own: index an `IDENTITY/VIDEO/TRACK/frame*` tree
//! ([`DatasetIndex`], cached at the root), split it by identity ([`Split`]), sample one track per
//! identity and `num_views` frames from it exactly as the reference §1 describes
//! ([`plan_epoch`]), crop every frame with the paper's recipe ([`transform_frame`]), and load
//! batches of plain `f32` buffers on worker threads, deterministically given (seed, epoch)
//! ([`Loader`], [`Batch`]).
//! The optional `candle` feature converts batches to candle tensors; the crate never depends on
//! model code.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fabnet_data::{DatasetIndex, Loader, LoaderConfig, Split, SplitFractions};
//!
//! # fn main() -> fabnet_data::Result<()> {
//! let (index, _) = DatasetIndex::open("data/frames")?;
//! let split = Split::seeded(&index, 0, SplitFractions::default())?;
//! let config = LoaderConfig { image_size: 64, ..LoaderConfig::default() };
//! let loader = Loader::new(Arc::new(index), &split.train, config)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.target.len(), batch.target_shape().iter().product::<usize>());
//! }
//! # Ok(())
//! # }
//! ```

mod batch;
mod error;
mod index;
mod loader;
mod rng;
mod sampler;
mod split;
pub mod synthetic;
pub mod transform;

pub use batch::{Batch, LoadStats, SampleInfo};
pub use error::{DataError, Result};
pub use index::{
    frame_number, CacheStatus, DatasetIndex, Identity, Track, TrackId, Video, INDEX_FILE_NAME,
};
pub use loader::{BadInputPolicy, EpochIter, Loader, LoaderConfig, FRACTION_MIN_READS};
pub use sampler::{plan_epoch, EpochPlan, SamplePlan};
pub use split::{Split, SplitFractions, SplitPart};
pub use transform::{
    load_frame, transform_file, transform_frame, transform_frame_into, CropWindow, FrameIssues,
};
