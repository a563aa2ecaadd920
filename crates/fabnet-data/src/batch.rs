//! Batches as plain `f32` buffers with shapes, and their provenance.
//!
//! With the `candle` feature, [`Batch`] also converts to candle tensors.

use std::ops::AddAssign;
use std::path::PathBuf;

use crate::index::TrackId;
use crate::transform::CropWindow;

/// Counts of frame reads and of the fixes they needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Frame files read (successfully or not).
    pub reads: u64,
    /// Reads that failed (corrupt, truncated or missing files); each was replaced.
    pub bad: u64,
    /// Grayscale frames expanded to RGB.
    pub grayscale: u64,
    /// Frames that were not 8-bit RGB and were converted (includes grayscale).
    pub converted: u64,
    /// Non-square frames, whose aspect ratio the first resize changed.
    pub non_square: u64,
}

impl AddAssign for LoadStats {
    fn add_assign(&mut self, rhs: LoadStats) {
        self.reads += rhs.reads;
        self.bad += rhs.bad;
        self.grayscale += rhs.grayscale;
        self.converted += rhs.converted;
        self.non_square += rhs.non_square;
    }
}

/// Where one sample of a batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleInfo {
    /// Position of the sample in its epoch.
    pub sample: usize,
    /// Identity folder name.
    pub identity: String,
    /// The track all frames come from.
    pub track: TrackId,
    /// `IDENTITY/VIDEO/TRACK`, relative to the dataset root.
    pub track_name: String,
    /// The frame files used, target first, then the sources in order.
    pub frame_paths: Vec<PathBuf>,
    /// Crop of each frame, aligned with `frame_paths`.
    pub windows: Vec<CropWindow>,
    /// Unreadable frames met (and replaced) while assembling this sample.
    pub bad_frames: Vec<PathBuf>,
}

/// One batch: B targets and, for each of V−1 source slots, B sources; RGB in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The epoch the batch belongs to.
    pub epoch: u64,
    /// Position of the batch in its epoch.
    pub index: usize,
    /// Jitter crop side c of the epoch, pixels (170 without jitter).
    pub crop_size: u32,
    /// B, the number of samples (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// V−1, the number of sources per sample.
    pub num_sources: usize,
    /// S, the side of every image, pixels.
    pub image_size: usize,
    /// Targets, shape (B, 3, S, S), row-major.
    pub target: Vec<f32>,
    /// Sources, shape (V−1, B, 3, S, S), row-major: source slot k is a contiguous
    /// (B, 3, S, S) block, see [`Batch::source`].
    pub sources: Vec<f32>,
    /// Provenance of each sample, in batch order.
    pub samples: Vec<SampleInfo>,
    /// Reads and fixes made for this batch.
    pub stats: LoadStats,
}

impl Batch {
    /// Values in one (3, S, S) image.
    pub fn image_len(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    /// Shape of [`Batch::target`]: (B, 3, S, S).
    pub fn target_shape(&self) -> [usize; 4] {
        [self.batch_size, 3, self.image_size, self.image_size]
    }

    /// Shape of [`Batch::sources`]: (V−1, B, 3, S, S).
    pub fn sources_shape(&self) -> [usize; 5] {
        [
            self.num_sources,
            self.batch_size,
            3,
            self.image_size,
            self.image_size,
        ]
    }

    /// Source slot `k` (0-based) as a (B, 3, S, S) buffer, or `None` if k ≥ V−1.
    pub fn source(&self, k: usize) -> Option<&[f32]> {
        let len = self.batch_size * self.image_len();
        self.sources.get(k * len..(k + 1) * len)
    }

    /// Target of sample `b` as a (3, S, S) buffer, or `None` if b ≥ B.
    pub fn target_image(&self, b: usize) -> Option<&[f32]> {
        let len = self.image_len();
        self.target.get(b * len..(b + 1) * len)
    }
}

#[cfg(feature = "candle")]
mod candle_tensors {
    use candle_core::{Device, Result, Tensor};

    use super::Batch;

    impl Batch {
        /// Targets as a (B, 3, S, S) f32 tensor on `device`.
        pub fn target_tensor(&self, device: &Device) -> Result<Tensor> {
            Tensor::from_slice(&self.target, &self.target_shape(), device)
        }

        /// Source slot `k` as a (B, 3, S, S) f32 tensor on `device`.
        pub fn source_tensor(&self, k: usize, device: &Device) -> Result<Tensor> {
            let data = self.source(k).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "source slot {k} out of range for {} sources",
                    self.num_sources
                ))
            })?;
            Tensor::from_slice(data, &self.target_shape(), device)
        }

        /// Every source slot, each a (B, 3, S, S) f32 tensor on `device`.
        pub fn source_tensors(&self, device: &Device) -> Result<Vec<Tensor>> {
            (0..self.num_sources)
                .map(|k| self.source_tensor(k, device))
                .collect()
        }

        /// All sources as one (V−1, B, 3, S, S) f32 tensor on `device`.
        pub fn sources_tensor(&self, device: &Device) -> Result<Tensor> {
            Tensor::from_slice(&self.sources, &self.sources_shape(), device)
        }
    }
}
