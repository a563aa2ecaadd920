//! CUDA paths of the warp ops: launch the kernels of `kernels/warp.cu`
//! (built to PTX by build.rs) on candle's device stream through cudarc.
//!
//! Unverified here: the development machine has no GPU and no nvcc, so this
//! file has only been written against the candle 0.11 / cudarc 0.19 APIs.
//! `kernels/check_gpu.py` checks the same kernels against PyTorch on a GPU.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage};

use super::grid_sample::{dims, GridSampleBackward};
use super::kernel::GsDims;
use super::upsample::{Upsample, UpsampleBackward};
use super::{GridSampleOptions, OpError, PaddingMode, SampleMode};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/warp.ptx"));
const MODULE: &str = "fabnet_warp";

/// Float types with kernels, and their kernel-name suffix.
trait Float: CudaDType + DeviceRepr + ValidAsZeroBits {
    const SUFFIX: &'static str;
}
impl Float for f32 {
    const SUFFIX: &'static str = "f32";
}
impl Float for f64 {
    const SUFFIX: &'static str = "f64";
}

fn view<'a, T: Float>(s: &'a CudaStorage, l: &Layout, op: &'static str) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => Err(OpError::Shape {
            op,
            what: format!("argument {:?} must be contiguous", l.dims()),
        }
        .into()),
    }
}

fn int(v: usize, op: &'static str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        OpError::Shape {
            op,
            what: format!("dimension {v} does not fit the kernels' 32-bit sizes"),
        }
        .into()
    })
}

/// Grid-stride kernels: enough blocks to fill the GPU, capped.
fn config(elements: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(elements.clamp(1, 1 << 24) as u32)
}

fn options_args(o: GridSampleOptions) -> (i32, i32, i32) {
    let padding = match o.padding {
        PaddingMode::Zeros => 0,
        PaddingMode::Border => 1,
    };
    let mode = match o.mode {
        SampleMode::Bilinear => 0,
        SampleMode::Nearest => 1,
    };
    (padding, o.align_corners as i32, mode)
}

fn dims_args(d: GsDims, op: &'static str) -> Result<[i32; 6]> {
    Ok([
        int(d.n, op)?,
        int(d.c, op)?,
        int(d.h, op)?,
        int(d.w, op)?,
        int(d.ho, op)?,
        int(d.wo, op)?,
    ])
}

fn unsupported(op: &'static str, dt: DType) -> candle_core::Error {
    OpError::DType {
        op,
        what: format!("{dt:?} on cuda"),
    }
    .into()
}

pub(crate) fn grid_sample_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    o: GridSampleOptions,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: Float>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        o: GridSampleOptions,
    ) -> Result<(CudaStorage, Shape)> {
        const OP: &str = "grid_sample";
        let dev = s1.device();
        let d = dims(l1, l2)?;
        let input = view::<T>(s1, l1, OP)?;
        let grid = view::<T>(s2, l2, OP)?;
        let out: CudaSlice<T> = dev.alloc_zeros::<T>((d.n * d.c * d.ho * d.wo).max(1))?;
        let func =
            dev.get_or_load_custom_func(&format!("grid_sample_fwd_{}", T::SUFFIX), MODULE, PTX)?;
        let [n, c, h, w, ho, wo] = dims_args(d, OP)?;
        let (padding, align, mode) = options_args(o);
        let mut b = func.builder();
        b.arg(&input);
        b.arg(&grid);
        b.arg(&out);
        candle_core::builder_arg!(b, n, c, h, w, ho, wo, padding, align, mode);
        // SAFETY: the kernel reads N·C·H·W input and N·Ho·Wo·2 grid elements
        // and writes N·C·Ho·Wo outputs, the sizes of the buffers passed.
        unsafe { b.launch(config(d.n * d.ho * d.wo)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((d.n, d.c, d.ho, d.wo)),
        ))
    }
    match (s1.dtype(), s2.dtype()) {
        (DType::F32, DType::F32) => run::<f32>(s1, l1, s2, l2, o),
        (DType::F64, DType::F64) => run::<f64>(s1, l1, s2, l2, o),
        (dt, _) => Err(unsupported("grid_sample", dt)),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn grid_sample_bwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    op: &GridSampleBackward,
) -> Result<(CudaStorage, Shape)> {
    #[allow(clippy::too_many_arguments)]
    fn run<T: Float>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
        op: &GridSampleBackward,
    ) -> Result<(CudaStorage, Shape)> {
        const OP: &str = "grid_sample_backward";
        let dev: &CudaDevice = s1.device();
        let d = dims(l2, l3)?;
        let grad_out = view::<T>(s1, l1, OP)?;
        let input = view::<T>(s2, l2, OP)?;
        let grid = view::<T>(s3, l3, OP)?;
        let gi = if op.want_input {
            Some(dev.alloc_zeros::<T>((d.n * d.c * d.h * d.w).max(1))?)
        } else {
            None
        };
        let gg = if op.want_grid {
            Some(dev.alloc_zeros::<T>((d.n * d.ho * d.wo * 2).max(1))?)
        } else {
            None
        };
        let func =
            dev.get_or_load_custom_func(&format!("grid_sample_bwd_{}", T::SUFFIX), MODULE, PTX)?;
        let [n, c, h, w, ho, wo] = dims_args(d, OP)?;
        let (padding, align, mode) = options_args(op.options);
        let null: u64 = 0;
        let mut b = func.builder();
        b.arg(&grad_out);
        b.arg(&input);
        b.arg(&grid);
        match &gi {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        match &gg {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        candle_core::builder_arg!(b, n, c, h, w, ho, wo, padding, align, mode);
        // SAFETY: buffer sizes match the dimensions passed; a gradient that
        // is not wanted is a null pointer, which the kernel skips.
        unsafe { b.launch(config(d.n * d.ho * d.wo)) }.w()?;
        let wrap = |s: CudaSlice<T>| CudaStorage::wrap_cuda_slice(s, dev.clone());
        match (gi, gg) {
            (Some(gi), Some(gg)) => {
                op.set_side(Storage::Cuda(wrap(gi)))?;
                Ok((wrap(gg), op.primary_shape(d)))
            }
            (Some(s), None) | (None, Some(s)) => Ok((wrap(s), op.primary_shape(d))),
            (None, None) => Err(OpError::Shape {
                op: OP,
                what: "no gradient requested".to_string(),
            }
            .into()),
        }
    }
    match (s1.dtype(), s2.dtype(), s3.dtype()) {
        (DType::F32, DType::F32, DType::F32) => run::<f32>(s1, l1, s2, l2, s3, l3, op),
        (DType::F64, DType::F64, DType::F64) => run::<f64>(s1, l1, s2, l2, s3, l3, op),
        (dt, _, _) => Err(unsupported("grid_sample_backward", dt)),
    }
}

/// Launches an upsample kernel from `(planes, h, w)` to `(planes, oh, ow)`
/// over `src`, writing a zeroed buffer of `out_len` elements.
#[allow(clippy::too_many_arguments)]
fn upsample_launch<T: Float>(
    s: &CudaStorage,
    l: &Layout,
    name: &str,
    op: &'static str,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
    out_len: usize,
    threads: usize,
) -> Result<CudaStorage> {
    let dev = s.device();
    let src = view::<T>(s, l, op)?;
    let out = dev.alloc_zeros::<T>(out_len.max(1))?;
    let func = dev.get_or_load_custom_func(&format!("{name}_{}", T::SUFFIX), MODULE, PTX)?;
    let args = [
        int(planes, op)?,
        int(h, op)?,
        int(w, op)?,
        int(oh, op)?,
        int(ow, op)?,
        align_corners as i32,
    ];
    let mut b = func.builder();
    b.arg(&src);
    b.arg(&out);
    for a in &args {
        b.arg(a);
    }
    // SAFETY: the kernel touches planes·h·w and planes·oh·ow elements, the
    // sizes of the two buffers.
    unsafe { b.launch(config(threads)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

pub(crate) fn upsample_fwd(
    s: &CudaStorage,
    l: &Layout,
    op: &Upsample,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "upsample_bilinear2d";
    let (n, c, h, w) = l.shape().dims4()?;
    let (oh, ow) = (op.out_h, op.out_w);
    let len = n * c * oh * ow;
    let args = (n * c, (h, w), (oh, ow), op.align_corners, len, len);
    let out = match s.dtype() {
        DType::F32 => upsample_launch::<f32>(
            s,
            l,
            "upsample_bilinear2d_fwd",
            OP,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
        )?,
        DType::F64 => upsample_launch::<f64>(
            s,
            l,
            "upsample_bilinear2d_fwd",
            OP,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
        )?,
        dt => return Err(unsupported(OP, dt)),
    };
    Ok((out, Shape::from((n, c, oh, ow))))
}

pub(crate) fn upsample_bwd(
    s: &CudaStorage,
    l: &Layout,
    op: &UpsampleBackward,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "upsample_bilinear2d_backward";
    let (n, c, oh, ow) = l.shape().dims4()?;
    let (h, w) = (op.in_h, op.in_w);
    let args = (
        n * c,
        (h, w),
        (oh, ow),
        op.align_corners,
        n * c * h * w,
        n * c * oh * ow,
    );
    let out = match s.dtype() {
        DType::F32 => upsample_launch::<f32>(
            s,
            l,
            "upsample_bilinear2d_bwd",
            OP,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
        )?,
        DType::F64 => upsample_launch::<f64>(
            s,
            l,
            "upsample_bilinear2d_bwd",
            OP,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
        )?,
        dt => return Err(unsupported(OP, dt)),
    };
    Ok((out, Shape::from((n, c, h, w))))
}
