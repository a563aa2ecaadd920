//! FAb-Net core: the differentiable warp ops and the model built on them.
//!
//! [`ops`] holds a bilinear grid sampler and bilinear upsampling, both candle
//! custom ops with CPU (and, with the `cuda` feature, CUDA) forward passes and
//! backward passes, so `Tensor::backward` flows through them.
//!
//! [`model`] holds FAb-Net itself on top of them: configuration and presets,
//! encoder and decoders under the official state-dict keys, multi-source
//! fusion, the curriculum loss, seeded init and weights I/O.
//!
//! [`memory`] tunes the process for CPU training: glibc reuses freed
//! buffers instead of page-faulting fresh ones, and candle's thread pool
//! stops spinning on the cores our kernels use.

pub mod memory;
pub mod model;
pub mod ops;

pub use memory::{keep_freed_memory, shorten_candle_spin};
pub use model::{FabNet, ModelConfig, ModelError, Part, Reconstruction};
pub use ops::{grid_sample, upsample_bilinear2d, GridSampleOptions, PaddingMode, SampleMode};
