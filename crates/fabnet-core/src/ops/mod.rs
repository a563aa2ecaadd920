//! Differentiable warp ops that candle lacks: a bilinear grid sampler and
//! bilinear upsampling, each with a backward pass.
//!
//! Both follow PyTorch's definitions exactly (`F.grid_sample`,
//! `F.interpolate(mode="bilinear")`): the same unnormalisation of grid
//! coordinates, the same corner weights and the same padding. They are candle
//! [`CustomOp`](candle_core::CustomOp2)s, so `Tensor::backward` flows through
//! them in any graph, giving gradients to the sampled input and to the grid.
//!
//! The CPU kernels are parallel (rayon) over output rows and handle f32 and
//! f64; with the `cuda` feature the same ops run on CUDA devices through the
//! kernels in `kernels/warp.cu`. [`reference`] holds slow versions built only
//! from candle primitives, against which the fast ops are tested.

#[cfg(feature = "cuda")]
mod cuda;
mod grid_sample;
pub(crate) mod kernel;
pub mod reference;
pub(crate) mod upsample;

use candle_core::{DType, Tensor};

pub use grid_sample::grid_sample;
pub use upsample::upsample_bilinear2d;

/// How [`grid_sample`] interpolates between input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMode {
    /// Bilinear interpolation of the four neighbouring pixels; differentiable
    /// with respect to both the input and the grid.
    Bilinear,
    /// The nearest pixel, ties rounded to even as PyTorch does; the gradient
    /// with respect to the grid is zero.
    Nearest,
}

/// What [`grid_sample`] reads for sample positions outside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingMode {
    /// Pixels outside the input are zero.
    Zeros,
    /// Positions are clamped to the input's border pixels; the grid gradient
    /// is zero where the clamp is active (including exactly on the border, as
    /// in PyTorch).
    Border,
}

/// Semantics of [`grid_sample`]. There is deliberately no `Default`: PyTorch
/// changed its default `align_corners` in 1.3, and FAb-Net needs the old one
/// (`true`), so every caller states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridSampleOptions {
    /// Interpolation mode.
    pub mode: SampleMode,
    /// Padding for positions outside the input.
    pub padding: PaddingMode,
    /// `true`: -1 and 1 are the centres of the corner pixels, so
    /// x_pixel = (g + 1) / 2 · (W − 1). `false`: they are the outer edges of the
    /// corner pixels, so x_pixel = ((g + 1) · W − 1) / 2.
    pub align_corners: bool,
}

impl GridSampleOptions {
    /// Bilinear sampling with the given padding and corner alignment.
    pub fn bilinear(padding: PaddingMode, align_corners: bool) -> Self {
        Self {
            mode: SampleMode::Bilinear,
            padding,
            align_corners,
        }
    }
}

/// Misuse of a warp op, reported as a candle error (wrapped) by the ops.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A tensor has the wrong rank or a dimension does not fit.
    #[error("{op}: {what}")]
    Shape {
        /// Name of the op.
        op: &'static str,
        /// What is wrong, with the shapes involved.
        what: String,
    },
    /// An unsupported dtype, or two arguments with different dtypes.
    #[error(
        "{op}: unsupported dtype {what} (f32, or f64 on the cpu, and the same for all arguments)"
    )]
    DType {
        /// Name of the op.
        op: &'static str,
        /// The dtypes involved.
        what: String,
    },
    /// The arguments live on different devices.
    #[error("{op}: arguments on different devices ({what})")]
    Device {
        /// Name of the op.
        op: &'static str,
        /// The devices involved.
        what: String,
    },
}

impl From<OpError> for candle_core::Error {
    fn from(e: OpError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Checks that `t` holds a dtype the fast kernels handle.
fn check_float(op: &'static str, t: &Tensor, name: &str) -> Result<(), OpError> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(OpError::DType {
            op,
            what: format!("{other:?} for {name} of shape {:?}", t.dims()),
        }),
    }
}
