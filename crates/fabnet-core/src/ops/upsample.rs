//! Bilinear resizing as candle custom ops: a separable two-tap stencil
//! forward, and its transpose as the backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::kernel::{self, Real};
use super::{check_float, OpError};

const OP: &str = "upsample_bilinear2d";

/// Resizes `x` (N, C, H, W) to (N, C, out_h, out_w) by bilinear
/// interpolation, exactly as PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=…)`.
///
/// With `align_corners = true` the corner pixel centres of input and output
/// coincide; with `false` the pixel edges do. Works for up- and
/// downsampling to any size ≥ 1. Differentiable with respect to `x`. f32 and
/// f64 on the CPU; with the `cuda` feature also on CUDA devices.
///
/// Errors (never panics) on a rank other than 4, an empty input plane, a zero
/// output size or a dtype other than f32/f64.
pub fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> candle_core::Result<Tensor> {
    let d = x.dims();
    if d.len() != 4 || d[2] == 0 || d[3] == 0 || out_h == 0 || out_w == 0 {
        return Err(OpError::Shape {
            op: OP,
            what: format!(
                "expected a non-empty input (N, C, H, W) and an output size of at least 1x1, got input {d:?} and output size {out_h}x{out_w}"
            ),
        }
        .into());
    }
    check_float(OP, x, "input")?;
    let x = x.contiguous()?;
    x.apply_op1(Upsample {
        out_h,
        out_w,
        align_corners,
    })
}

/// The contiguous elements of a cpu tensor argument.
fn contiguous<'a, T: Real>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(OpError::Shape {
            op: OP,
            what: format!("input {:?} must be contiguous", l.dims()),
        }
        .into()),
    }
}

fn unsupported(dtype: candle_core::DType) -> candle_core::Error {
    OpError::DType {
        op: OP,
        what: format!("{dtype:?}"),
    }
    .into()
}

pub(crate) struct Upsample {
    pub out_h: usize,
    pub out_w: usize,
    pub align_corners: bool,
}

impl Upsample {
    fn cpu<T: Real>(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous::<T>(s, l)?;
        let out = kernel::upsample_fwd(
            x,
            n * c,
            (h, w),
            (self.out_h, self.out_w),
            self.align_corners,
        );
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((n, c, self.out_h, self.out_w)),
        ))
    }
}

impl CustomOp1 for Upsample {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.cpu::<f32>(s, l),
            CpuStorage::F64(_) => self.cpu::<f64>(s, l),
            _ => Err(unsupported(s.dtype())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::upsample_fwd(s, l, self)
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let grad = grad.contiguous()?;
        let g = grad.apply_op1_no_bwd(&UpsampleBackward {
            in_h: h,
            in_w: w,
            align_corners: self.align_corners,
        })?;
        Ok(Some(g))
    }
}

/// Gradient (N, C, out_h, out_w) -> (N, C, in_h, in_w) of [`Upsample`].
pub(crate) struct UpsampleBackward {
    pub in_h: usize,
    pub in_w: usize,
    pub align_corners: bool,
}

impl UpsampleBackward {
    fn cpu<T: Real>(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        let g = contiguous::<T>(s, l)?;
        let out = kernel::upsample_bwd(
            g,
            n * c,
            (self.in_h, self.in_w),
            (oh, ow),
            self.align_corners,
        );
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((n, c, self.in_h, self.in_w)),
        ))
    }
}

impl CustomOp1 for UpsampleBackward {
    fn name(&self) -> &'static str {
        "upsample_bilinear2d_backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.cpu::<f32>(s, l),
            CpuStorage::F64(_) => self.cpu::<f64>(s, l),
            _ => Err(unsupported(s.dtype())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::upsample_bwd(s, l, self)
    }
}
