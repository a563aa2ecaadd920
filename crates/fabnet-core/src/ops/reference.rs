//! Slow reference versions of the warp ops, built only from candle primitives
//! (arithmetic, comparisons, gather, matmul), so that candle's own autograd
//! differentiates them. They exist to check the fast ops against an
//! independent formulation; they allocate many intermediate tensors.

use candle_core::{DType, Device, Tensor, D};

use super::grid_sample::validate;
use super::{GridSampleOptions, OpError, PaddingMode, SampleMode};

/// Reference for [`super::grid_sample`], same shapes and semantics for finite
/// grids: input (N, C, H, W), grid (N, Ho, Wo, 2) x first -> (N, C, Ho, Wo).
///
/// Bilinear mode only; [`SampleMode::Nearest`] is an error. Non-finite grid
/// values are not handled specially here.
pub fn grid_sample(
    input: &Tensor,
    grid: &Tensor,
    options: GridSampleOptions,
) -> candle_core::Result<Tensor> {
    validate(input, grid)?;
    if options.mode != SampleMode::Bilinear {
        return Err(OpError::Shape {
            op: "reference::grid_sample",
            what: "only bilinear mode is implemented".to_string(),
        }
        .into());
    }
    let (n, c, h, w) = input.dims4()?;
    let (_, ho, wo, _) = grid.dims4()?;
    let ix = pixel_coord(
        &grid.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?,
        w,
        options,
    )?;
    let iy = pixel_coord(
        &grid.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?,
        h,
        options,
    )?;
    // Integer corner positions carry no gradient; the weights carry it.
    let x0 = ix.detach().floor()?;
    let y0 = iy.detach().floor()?;
    let x1 = (&x0 + 1.0)?;
    let y1 = (&y0 + 1.0)?;
    let wx0 = (&x1 - &ix)?;
    let wx1 = (&ix - &x0)?;
    let wy0 = (&y1 - &iy)?;
    let wy1 = (&iy - &y0)?;
    let flat = input.reshape((n, c, h * w))?;
    let corners = [
        (&x0, &y0, (&wx0 * &wy0)?),
        (&x1, &y0, (&wx1 * &wy0)?),
        (&x0, &y1, (&wx0 * &wy1)?),
        (&x1, &y1, (&wx1 * &wy1)?),
    ];
    let mut out = Tensor::zeros((n, c, ho * wo), input.dtype(), input.device())?;
    for (x, y, weight) in corners {
        let valid = (inside(x, w)? * inside(y, h)?)?;
        let idx = ((y.clamp(0.0, (h - 1) as f64)? * w as f64)? + x.clamp(0.0, (w - 1) as f64)?)?
            .to_dtype(DType::U32)?
            .reshape((n, 1, ho * wo))?
            .broadcast_as((n, c, ho * wo))?
            .contiguous()?;
        let vals = flat.gather(&idx, 2)?;
        let weight = (weight * valid)?.reshape((n, 1, ho * wo))?;
        out = (out + vals.broadcast_mul(&weight)?)?;
    }
    out.reshape((n, c, ho, wo))
}

/// 1 where integer position `x` lies in [0, size), else 0 (no gradient).
fn inside(x: &Tensor, size: usize) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    x.ge(0.0)?.to_dtype(dt)? * x.le((size - 1) as f64)?.to_dtype(dt)?
}

/// Pixel coordinates of grid coordinates `g` (any shape) along an axis of
/// `size` pixels, clamped for border padding with a zero gradient on and
/// beyond the border.
fn pixel_coord(g: &Tensor, size: usize, o: GridSampleOptions) -> candle_core::Result<Tensor> {
    let s = size as f64;
    // The same operations as PyTorch's unnormalisation, so that points on
    // pixel boundaries round to the same cell.
    let g1 = g.affine(1.0, 1.0)?;
    let x = if o.align_corners {
        g1.affine((s - 1.0) * 0.5, 0.0)?
    } else {
        g1.affine(s, -1.0)?.affine(0.5, 0.0)?
    };
    match o.padding {
        PaddingMode::Zeros => Ok(x),
        PaddingMode::Border => {
            let dt = x.dtype();
            let xd = x.detach();
            let keep = (xd.gt(0.0)?.to_dtype(dt)? * xd.lt(s - 1.0)?.to_dtype(dt)?)?;
            let clamped = xd.clamp(0.0, s - 1.0)?;
            (x * &keep)? + (clamped * (1.0 - keep)?)?
        }
    }
}

/// Reference for [`super::upsample_bilinear2d`]: x (N, C, H, W) ->
/// (N, C, out_h, out_w) as two matrix products with interpolation matrices.
pub fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(OpError::Shape {
            op: "reference::upsample_bilinear2d",
            what: format!("empty input {:?} or output {out_h}x{out_w}", x.dims()),
        }
        .into());
    }
    let ah = interp_matrix(h, out_h, align_corners, x.dtype(), x.device())?;
    let aw = interp_matrix(w, out_w, align_corners, x.dtype(), x.device())?;
    let rows = x.reshape((n * c * h, w))?.matmul(&aw.t()?)?;
    let rows = rows.reshape((n * c, h, out_w))?;
    ah.broadcast_left(n * c)?
        .matmul(&rows)?
        .reshape((n, c, out_h, out_w))
}

/// The (output, input) matrix of one axis of a bilinear resize.
fn interp_matrix(
    input: usize,
    output: usize,
    align_corners: bool,
    dtype: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let (i, o) = (input as f64, output as f64);
    let dst = Tensor::arange(0u32, output as u32, dev)?.to_dtype(dtype)?;
    let src = if align_corners {
        let scale = if output > 1 {
            (i - 1.0) / (o - 1.0)
        } else {
            0.0
        };
        (dst * scale)?
    } else {
        dst.affine(i / o, 0.5 * i / o - 0.5)?.relu()?
    };
    let i0 = src.floor()?.clamp(0.0, i - 1.0)?;
    let l1 = (&src - &i0)?.clamp(0.0, 1.0)?;
    let l0 = (1.0 - &l1)?;
    let i1 = (&i0 + 1.0)?.clamp(0.0, i - 1.0)?;
    let cols = Tensor::arange(0u32, input as u32, dev)?
        .to_dtype(dtype)?
        .reshape((1, input))?;
    let pick = |idx: &Tensor, weight: &Tensor| -> candle_core::Result<Tensor> {
        let hit = cols
            .broadcast_eq(&idx.reshape((output, 1))?)?
            .to_dtype(dtype)?;
        hit.broadcast_mul(&weight.reshape((output, 1))?)
    };
    pick(&i0, &l0)? + pick(&i1, &l1)?
}
