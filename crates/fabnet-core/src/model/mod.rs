//! The FAb-Net model (Wiles, Koepke, Zisserman, BMVC 2018): configuration
//! and presets, encoder and decoders under the official state-dict keys,
//! multi-source fusion, the curriculum loss, seeded init and weights I/O.
//!
//! A training step looks like this:
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use fabnet_core::model::{curriculum_loss, per_sample_l1, FabNet, ModelConfig, Part};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ModelConfig::preset("tiny")?;
//! let device = Device::Cpu;
//! let (model, varmap) = FabNet::init(&config, 0, &device)?;
//! let target = Tensor::rand(0f32, 1f32, (4, 3, 32, 32), &device)?;
//! let source = Tensor::rand(0f32, 1f32, (4, 3, 32, 32), &device)?;
//! let out = model.reconstruct(&target, &[source], true)?;
//! let loss = curriculum_loss(&per_sample_l1(&out.fused, &target)?, 0.0, 0.5)?;
//! let grads = loss.backward()?;
//! let encoder_vars = Part::Encoder.trainable_vars(&varmap);
//! # let _ = (grads, encoder_vars);
//! # Ok(())
//! # }
//! ```

mod act;
mod autoencoder;
mod config;
mod conv;
mod decoder;
mod encoder;
mod fabnet;
mod init;
mod layers;
mod loss;
mod norm;
mod spec;
mod storage;
mod weights;

pub use act::leaky_relu;
pub use autoencoder::Autoencoder;
pub use config::{GammaInit, ModelConfig};
pub use conv::{conv2d, upsample_conv2d};
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use fabnet::{FabNet, Reconstruction};
pub use init::{init_specs, init_varmap};
pub use loss::{curriculum_loss, curriculum_window, per_sample_l1};
pub use norm::BatchNorm2d;
pub use spec::{ParamKind, ParamSpec, Part};
pub use weights::{
    check_state_dict, check_state_dict_specs, load_into_varmap, load_state_dict, read_state_dict,
    save_varmap, set_varmap, set_varmap_specs, ShapeMismatch, StateDict, StateDictReport,
};

use std::path::PathBuf;

/// Runs `f` with this thread's convolutions, BatchNorms and activations
/// computed by candle's generic tensor ops, as they are on a GPU, instead
/// of the fused CPU kernels (the warp ops keep their own kernels on every
/// device). The two paths agree to rounding; this lets the GPU path's
/// arithmetic be checked, and a suspected kernel bug be bisected, on a
/// machine without a GPU.
pub fn with_generic_ops<R>(f: impl FnOnce() -> R) -> R {
    storage::with_generic(f)
}

/// Errors of model construction, loss and weights I/O.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// A preset name that is not shipped.
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset {
        /// The requested name.
        name: String,
        /// The shipped names.
        known: String,
    },
    /// A config document that does not parse.
    #[error("cannot parse model config {origin}: {message}")]
    ConfigParse {
        /// The file or preset.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An input tensor of the wrong shape.
    #[error("{0}")]
    Shape(String),
    /// `reconstruct` was given no source.
    #[error("reconstruct needs at least one source image")]
    NoSources,
    /// A curriculum window that selects no sample.
    #[error("curriculum window [{lo}, {hi}) selects no sample of a batch of {batch}")]
    CurriculumWindow {
        /// Lower fraction.
        lo: f64,
        /// Upper fraction.
        hi: f64,
        /// Batch size.
        batch: usize,
    },
    /// A per-sample loss is NaN, so the samples cannot be sorted.
    #[error("per-sample loss of sample {sample} is nan")]
    NonFiniteLoss {
        /// Batch index of the first NaN.
        sample: usize,
    },
    /// A file could not be opened or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weights file could not be parsed.
    #[error("cannot read weights {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: candle_core::Error,
    },
    /// A weights file could not be written.
    #[error("cannot write weights {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: candle_core::Error,
    },
    /// A pre-1.6 (non-zip) torch pickle, which candle cannot read.
    #[error(
        "{} is a legacy torch pickle; convert it to safetensors with \
         `/usr/bin/python3 tests/goldens/convert_release.py IN.pth OUT.safetensors`",
        path.display()
    )]
    LegacyPickle {
        /// The file.
        path: PathBuf,
    },
    /// A weights file that does not fit the model; nothing was loaded.
    #[error("{} does not fit the model: {report}", path.display())]
    StateDictMismatch {
        /// The file.
        path: PathBuf,
        /// Every missing, unexpected and mis-shaped key.
        report: StateDictReport,
    },
    /// A varmap that does not hold the model's tensors; nothing was loaded.
    #[error("the varmap does not fit the model: {report}")]
    VarMapMismatch {
        /// Every missing, unexpected and mis-shaped key.
        report: StateDictReport,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
