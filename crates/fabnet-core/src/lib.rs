//! FAb-Net core: the differentiable warp ops the model is built from.
//!
//! [`ops`] holds a bilinear grid sampler and bilinear upsampling, both candle
//! custom ops with CPU (and, with the `cuda` feature, CUDA) forward passes and
//! backward passes, so `Tensor::backward` flows through them.

pub mod ops;

pub use ops::{grid_sample, upsample_bilinear2d, GridSampleOptions, PaddingMode, SampleMode};
