//! The grid sampler as candle custom ops: a forward op on (input, grid) and a
//! fused backward op on (grad_out, input, grid) giving both gradients in one
//! pass.

use candle_core::backend::BackendStorage;
use std::sync::Mutex;

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};

use super::kernel::{self, GsDims, GsParams, Real};
use super::{check_float, GridSampleOptions, OpError};

const OP: &str = "grid_sample";

/// Samples `input` at the positions in `grid`, as PyTorch's `F.grid_sample`.
///
/// - `input`: (N, C, H, W).
/// - `grid`: (N, Ho, Wo, 2), the last axis x (width) first, then y; −1 and 1
///   are the input's extent as set by `options.align_corners`.
/// - Returns (N, C, Ho, Wo).
///
/// Differentiable with respect to both `input` and `grid` (the grid gradient
/// is zero in [`SampleMode::Nearest`](super::SampleMode::Nearest)). f32 and f64
/// on the CPU; with the `cuda` feature also on CUDA devices.
///
/// A grid point with a NaN or infinite coordinate samples nothing: its output
/// is 0 under every padding mode and it passes no gradient. (PyTorch's CUDA
/// path also gives 0 for NaN; its 1.13 CPU path returns NaN under zero padding
/// and can crash under border padding.) Finite points outside [−1, 1] read
/// zeros or the border pixels, per `options.padding`; under zero padding a
/// point so far out that its pixel coordinate overflows counts as non-finite.
///
/// Errors (never panics) on wrong ranks or shapes, mismatched batch sizes,
/// dtypes other than f32/f64 or differing between the two tensors, and
/// tensors on different devices.
pub fn grid_sample(
    input: &Tensor,
    grid: &Tensor,
    options: GridSampleOptions,
) -> candle_core::Result<Tensor> {
    validate(input, grid)?;
    let input = input.contiguous()?;
    let grid = grid.contiguous()?;
    input.apply_op2(&grid, GridSample { options })
}

pub(crate) fn validate(input: &Tensor, grid: &Tensor) -> Result<(), OpError> {
    let (i, g) = (input.dims(), grid.dims());
    let shape_err = |what: &str| {
        OpError::Shape {
        op: OP,
        what: format!(
            "{what}; expected input (N, C, H, W) and grid (N, Ho, Wo, 2), got input {i:?} and grid {g:?}"
        ),
    }
    };
    if i.len() != 4 || g.len() != 4 {
        return Err(shape_err("wrong rank"));
    }
    if g[3] != 2 {
        return Err(shape_err("the grid's last dimension must be 2"));
    }
    if i[0] != g[0] {
        return Err(shape_err("batch sizes differ"));
    }
    if i[2] == 0 || i[3] == 0 {
        return Err(shape_err("the input has an empty spatial dimension"));
    }
    // Plane offsets are i32 in the kernels.
    if (i[2] + 1).saturating_mul(i[3] + 1) >= i32::MAX as usize {
        return Err(shape_err(
            "the input plane is too large (H · W must stay below 2^31)",
        ));
    }
    check_float(OP, input, "input")?;
    check_float(OP, grid, "grid")?;
    if input.dtype() != grid.dtype() {
        return Err(OpError::DType {
            op: OP,
            what: format!(
                "input {:?} {i:?} and grid {:?} {g:?} differ",
                input.dtype(),
                grid.dtype()
            ),
        });
    }
    if !input.device().same_device(grid.device()) {
        return Err(OpError::Device {
            op: OP,
            what: format!(
                "input {i:?} on {:?}, grid {g:?} on {:?}",
                input.device().location(),
                grid.device().location()
            ),
        });
    }
    Ok(())
}

/// Sizes from the layouts of input (N, C, H, W) and grid (N, Ho, Wo, 2).
pub(crate) fn dims(l_in: &Layout, l_grid: &Layout) -> candle_core::Result<GsDims> {
    let (n, c, h, w) = l_in.shape().dims4()?;
    let (_, ho, wo, _) = l_grid.shape().dims4()?;
    Ok(GsDims { n, c, h, w, ho, wo })
}

pub(crate) fn params(o: GridSampleOptions) -> GsParams {
    GsParams {
        mode: o.mode,
        padding: o.padding,
        align_corners: o.align_corners,
    }
}

/// The contiguous elements of a cpu tensor argument.
fn contiguous<'a, T: Real>(
    s: &'a CpuStorage,
    l: &Layout,
    name: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(OpError::Shape {
            op: OP,
            what: format!("{name} {:?} must be contiguous", l.dims()),
        }
        .into()),
    }
}

struct GridSample {
    options: GridSampleOptions,
}

impl GridSample {
    fn cpu<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l1, l2)?;
        let input = contiguous::<T>(s1, l1, "input")?;
        let grid = contiguous::<T>(s2, l2, "grid")?;
        let out = kernel::grid_sample_fwd(input, grid, d, params(self.options));
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((d.n, d.c, d.ho, d.wo)),
        ))
    }
}

impl CustomOp2 for GridSample {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.cpu::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.cpu::<f64>(s1, l1, s2, l2),
            _ => Err(OpError::DType {
                op: OP,
                what: format!("{:?} and {:?}", s1.dtype(), s2.dtype()),
            }
            .into()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::grid_sample_fwd(s1, l1, s2, l2, self.options)
    }

    fn bwd(
        &self,
        input: &Tensor,
        grid: &Tensor,
        _res: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Only what the graph needs is computed: a source image that is data
        // skips the whole scatter into the input gradient.
        let want_input = input.track_op();
        let want_grid = grid.track_op();
        if !want_input && !want_grid {
            return Ok((None, None));
        }
        let grad_out = grad_out.contiguous()?;
        let op = GridSampleBackward {
            options: self.options,
            want_input,
            want_grid,
            side: Mutex::new(None),
        };
        let primary = grad_out.apply_op3_no_bwd(input, grid, &op)?;
        if !want_grid {
            return Ok((Some(primary), None));
        }
        let grad_input = if want_input {
            let side = op.side.lock().ok().and_then(|mut s| s.take());
            let storage = side.ok_or_else(|| {
                candle_core::Error::Msg("grid_sample_backward: missing input gradient".into())
            })?;
            Some(Tensor::from_storage(
                storage,
                input.shape(),
                BackpropOp::none(),
                false,
            ))
        } else {
            None
        };
        Ok((grad_input, Some(primary)))
    }
}

/// (grad_out, input, grid) -> the grid gradient (N, Ho, Wo, 2) if wanted,
/// else the input gradient (N, C, H, W). When both are wanted the input
/// gradient is handed over through `side`: one op computes both in a single
/// pass, and the two results stay separate allocations (a single
/// concatenated buffer would be large enough to be a fresh, page-faulting
/// mmap on every call).
pub(crate) struct GridSampleBackward {
    pub options: GridSampleOptions,
    pub want_input: bool,
    pub want_grid: bool,
    pub side: Mutex<Option<Storage>>,
}

impl GridSampleBackward {
    /// Shape of the op's own output.
    pub(crate) fn primary_shape(&self, d: GsDims) -> Shape {
        if self.want_grid {
            Shape::from((d.n, d.ho, d.wo, 2))
        } else {
            Shape::from((d.n, d.c, d.h, d.w))
        }
    }

    /// Stores the input gradient that goes beside the primary output.
    pub(crate) fn set_side(&self, s: Storage) -> candle_core::Result<()> {
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg("grid_sample_backward: poisoned lock".into()))?;
        *side = Some(s);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cpu<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = dims(l2, l3)?;
        let grad_out = contiguous::<T>(s1, l1, "grad_out")?;
        let input = contiguous::<T>(s2, l2, "input")?;
        let grid = contiguous::<T>(s3, l3, "grid")?;
        let (gi, gg) = kernel::grid_sample_bwd(
            grad_out,
            input,
            grid,
            d,
            params(self.options),
            self.want_input,
            self.want_grid,
        );
        let primary = if self.want_grid {
            if self.want_input {
                self.set_side(Storage::Cpu(T::to_cpu_storage_owned(gi)))?;
            }
            gg
        } else {
            gi
        };
        Ok((T::to_cpu_storage_owned(primary), self.primary_shape(d)))
    }
}

impl CustomOp3 for GridSampleBackward {
    fn name(&self) -> &'static str {
        "grid_sample_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                self.cpu::<f32>(s1, l1, s2, l2, s3, l3)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                self.cpu::<f64>(s1, l1, s2, l2, s3, l3)
            }
            _ => Err(OpError::DType {
                op: "grid_sample_backward",
                what: format!("{:?}, {:?} and {:?}", s1.dtype(), s2.dtype(), s3.dtype()),
            }
            .into()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::grid_sample_bwd(s1, l1, s2, l2, s3, l3, self)
    }
}
