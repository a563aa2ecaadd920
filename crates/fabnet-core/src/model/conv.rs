//! 2-D convolution on the CPU as im2col + GEMM (the `gemm` crate candle
//! itself uses) over small tiles, with a hand-written backward of two GEMMs
//! and a col2im, so that no column matrix outlives the call.
//!
//! candle's CPU conv backward is a direct `conv_transpose2d` loop that
//! dominated the training step. Here, for a tile of output pixels at a
//! time, `cols = im2col(x)` is `(C·k·k, pixels)` with rows ordered
//! (c, ky, kx) so that the weight `(C_out, C_in, k, k)` is already the
//! `(C_out, C_in·k·k)` left operand; the forward is `W @ cols` plus bias,
//! scattered to `(N, C_out, H_out, W_out)`. The backward is
//! `dW = Σ dY @ colsᵀ` (the columns recomputed tile by tile instead of
//! kept alive) and `dx = col2im(Wᵀ @ dY)`. A tile's column buffer holds at
//! most [`TILE_BUDGET`] elements, so it is still in the core's cache when
//! the GEMM reads it, and each core runs its own tiles' GEMMs, whose
//! buffers are per-thread scratch reused from call to call. Layers with
//! very few output channels run as direct loops instead ([`direct`]).
//! Other devices use candle's conv2d.

use super::storage::{
    dispatch2, dispatch3, give_scratch, min_items, sum_of_plane_sums, take_scratch, Kernel2,
    Kernel3,
};
use crate::memory::zeros;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::any::TypeId;

mod shifted;
mod upsampled;
mod winograd;
mod winograd4;

pub use upsampled::upsample_conv2d;

/// `s` as f32, when `T` is f32.
fn as_f32<T: WithDType>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32, checked by its type id.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// `s` as mutable f32, when `T` is f32.
fn as_f32_mut<T: WithDType>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32, checked by its type id.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

/// Lanes `0..n` (at most 16) of a 16-float vector.
#[cfg(target_arch = "x86_64")]
fn first_lanes(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

/// A pointer the parallel tasks of one kernel share, each writing elements
/// of the buffer no other task touches (every caller says which).
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: the tasks write disjoint elements through it (see the callers).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Most elements of one tile's column buffer (1 MiB of f32): small enough
/// that im2col's output is still in the core's L2 cache when the GEMM reads
/// it. A sweep over 2^14..2^20 on the `small` model's layers put the best
/// step time at 2^18–2^20, with 2^14 and 2^16 up to 1.5× slower on the deep
/// layers (too few pixels per GEMM).
const TILE_BUDGET: usize = 1 << 18;

/// Tasks a batch is at least cut into, when it has that many samples, so
/// that the cores share the work evenly.
const MIN_TASKS: usize = 8;

/// Output pixels per sample up to which a layer counts as deep: its batch
/// is one tile (if the columns fit [`DEEP_BUDGET`]) and its GEMMs are
/// split across cores by rows, because tiles of a few samples would give
/// GEMMs a handful of columns each. At 8×8 outputs the encoder's layer
/// (64 → 128 channels, batch 32) ran as fast this way as in tiles.
const DEEP_PIXELS: usize = 64;

/// Narrowest output rows for which [`Path::Fastest`] takes the [`shifted`]
/// kernel: at 8 pixels a third of its grid is padding, and the `small`
/// model's two 8-pixel layers ran 1.2–1.4× faster fwd and bwd through the
/// GEMM path (alternating runs of both builds); at 16 pixels and above the
/// shifted kernel is faster.
const SHIFTED_MIN_WIDTH: usize = 16;

/// Most column elements of a deep layer's whole-batch tile (16 MiB of f32).
const DEEP_BUDGET: usize = 1 << 22;

/// Fewest input and output channels for which [`Path::Fastest`] takes
/// [`winograd`]: its 16 GEMMs have that many rows and inner terms.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Fewest pixels per image for which [`Path::Fastest`] takes [`winograd`]:
/// on the `small` model's decoder, 8×8 to 32×32 outputs ran their forward
/// and input gradient 5–20 % faster than through the other paths
/// (alternating builds), and 4×4 outputs (4 tiles an image, so GEMMs of a
/// few columns per task) 1.7× slower.
const WINOGRAD_MIN_PIXELS: usize = 64;

/// Output pixels per image for which [`Path::Fastest`] takes [`winograd4`].
const WINOGRAD4_PIXELS: std::ops::RangeInclusive<usize> = 16..=256;

/// Output pixels per image for which [`Path::Fastest`] takes [`winograd4`]
/// for the weight gradient of a stride-1 conv.
const WINOGRAD4_WEIGHT_GRAD_PIXELS: std::ops::RangeInclusive<usize> = 16..=1024;

/// Output pixels per image for which [`Path::Fastest`] takes [`winograd4`]
/// for a stride-2 conv.
const WINOGRAD4_STRIDED_PIXELS: std::ops::RangeInclusive<usize> = 64..=256;

/// Output channels up to which a layer runs as direct loops ([`direct`]).
const DIRECT_MAX_OUT: usize = 4;

/// Output pixels summed in f32 by one weight-gradient GEMM before its
/// partial result is added in f64.
const SUM_BLOCK: usize = 512;

/// Geometry of a square-kernel convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    /// Most elements of one tile's column buffer ([`TILE_BUDGET`] outside
    /// tests).
    budget: usize,
    /// Direct loops instead of im2col + GEMM.
    direct: bool,
    /// The forward and input gradient through [`shifted`] (f32 only).
    shifted: bool,
    /// The forward and the input gradient by [`winograd`] (f32 only).
    winograd: bool,
    /// The forward and the input gradient by [`winograd4`] (f32 only).
    winograd4: bool,
    /// The weight gradient by [`winograd4`] (f32 only).
    winograd4_weight_grad: bool,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.k) / self.stride + 1
    }

    fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.k) / self.stride + 1
    }

    /// Rows of the column matrix, `C·k·k`.
    fn depth(&self) -> usize {
        self.c * self.k * self.k
    }

    /// The output positions `o` along an axis of `len` input pixels whose
    /// tap `t` falls inside the input, as a range `lo..hi`.
    fn valid(&self, t: usize, len: usize, out_len: usize) -> (usize, usize) {
        // o·stride + t − padding ∈ [0, len)
        let lo = self.padding.saturating_sub(t).div_ceil(self.stride);
        let hi = if len + self.padding > t {
            ((len + self.padding - t - 1) / self.stride + 1).min(out_len)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Convolution of `x` `(N, C_in, H, W)` with a square kernel `weight`
/// `(C_out, C_in, k, k)` and `bias` `(C_out,)`, zero padding `padding`,
/// giving `(N, C_out, H_out, W_out)`, as PyTorch's `F.conv2d`;
/// differentiable in all three. f32 and f64.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    conv2d_with(x, weight, bias, stride, padding, TILE_BUDGET, Path::Fastest)
}

/// Which CPU implementation runs a convolution (the tests force each).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Path {
    /// [`shifted`] where it applies to f32 and rows are at least
    /// [`SHIFTED_MIN_WIDTH`] wide, else [`direct`] for at most
    /// [`DIRECT_MAX_OUT`] output channels, else im2col + GEMM.
    Fastest,
    /// [`shifted`] wherever it applies, else as `Gemm`.
    Shifted,
    /// [`winograd`] for the forward and the input gradient wherever it
    /// applies, [`shifted`] or the GEMM for the weight gradient.
    Winograd,
    /// [`winograd4`] for the forward and both gradients wherever it
    /// applies, else as `Fastest`.
    Winograd4,
    /// [`direct`] always.
    Direct,
    /// im2col + GEMM always.
    Gemm,
}

/// [`conv2d`] through `path`, GEMM tiles of at most `budget` column
/// elements.
fn conv2d_with(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    budget: usize,
    path: Path,
) -> candle_core::Result<Tensor> {
    if !super::storage::fused_cpu(x) {
        let cout = weight.dims4()?.0;
        return x
            .conv2d(weight, padding, stride, 1, 1)?
            .broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    let g = geometry(x.dims4()?, weight, bias, (stride, padding), budget, path)?;
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Conv(g))
}

/// The geometry and paths of a conv of an input of `dims` through `path`
/// (see [`conv2d_with`]), or an error naming the mismatch.
fn geometry(
    (n, c, h, w): (usize, usize, usize, usize),
    weight: &Tensor,
    bias: &Tensor,
    (stride, padding): (usize, usize),
    budget: usize,
    path: Path,
) -> candle_core::Result<Geometry> {
    let (cout, cin, kh, kw) = weight.dims4()?;
    if c != cin
        || kh != kw
        || h + 2 * padding < kh
        || w + 2 * padding < kw
        || stride == 0
        || bias.dims() != [cout]
    {
        candle_core::bail!(
            "conv2d: input {:?} does not fit kernel {:?} and bias {:?} with stride {stride} and padding {padding}",
            [n, c, h, w],
            weight.dims(),
            bias.dims()
        );
    }
    let g = Geometry {
        n,
        c,
        h,
        w,
        c_out: cout,
        k: kh,
        stride,
        padding,
        budget,
        direct: match path {
            Path::Fastest | Path::Winograd4 => cout <= DIRECT_MAX_OUT,
            Path::Direct => true,
            Path::Gemm | Path::Shifted | Path::Winograd => false,
        },
        shifted: false,
        winograd: false,
        winograd4: false,
        winograd4_weight_grad: false,
    };
    let fast4 = |[plain, strided]: [&std::ops::RangeInclusive<usize>; 2]| {
        winograd4::applies(&g)
            && g.c.min(g.c_out) >= WINOGRAD_MIN_CHANNELS
            && if g.stride == 1 { plain } else { strided }.contains(&(g.out_h() * g.out_w()))
    };
    let g = Geometry {
        shifted: match path {
            Path::Fastest | Path::Winograd4 => {
                shifted::applies(&g) && g.out_w() >= SHIFTED_MIN_WIDTH
            }
            Path::Shifted => shifted::applies(&g),
            Path::Direct | Path::Gemm | Path::Winograd => false,
        },
        winograd: match path {
            Path::Fastest | Path::Winograd4 => {
                winograd::applies(&g)
                    && g.c.min(g.c_out) >= WINOGRAD_MIN_CHANNELS
                    && g.h * g.w >= WINOGRAD_MIN_PIXELS
            }
            Path::Winograd => winograd::applies(&g),
            Path::Direct | Path::Gemm | Path::Shifted => false,
        },
        winograd4: match path {
            Path::Fastest => fast4([&WINOGRAD4_PIXELS, &WINOGRAD4_STRIDED_PIXELS]),
            Path::Winograd4 => winograd4::applies(&g),
            Path::Direct | Path::Gemm | Path::Shifted | Path::Winograd => false,
        },
        winograd4_weight_grad: match path {
            Path::Fastest => fast4([&WINOGRAD4_WEIGHT_GRAD_PIXELS, &WINOGRAD4_STRIDED_PIXELS]),
            Path::Winograd4 => winograd4::applies(&g),
            Path::Direct | Path::Gemm | Path::Shifted | Path::Winograd => false,
        },
        ..g
    };
    Ok(g)
}

/// `dst (m×n, row-major, row stride dst_rs) = [dst +] lhs (m×k) @ rhs (k×n)`
/// where each operand is given by its (row, column) strides, on the
/// calling thread (the tiles are the parallel work).
///
/// # Safety
/// Every strided index of the three operands must lie inside its slice; the
/// callers below pass whole, exactly sized matrices.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: WithDType>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    (m, k, n): (usize, usize, usize),
) {
    debug_assert!(m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len());
    debug_assert!(m == 0 || k == 0 || (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len());
    debug_assert!(k == 0 || n == 0 || (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len());
    // SAFETY: the caller guarantees the strided extents are in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `dst[i] = src[i · stride]`. Stride 2 (the encoder) reads pairs, which
/// the compiler turns into vector shuffles where `step_by` stayed scalar.
fn gather_strided<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            for (o, pair) in dst.iter_mut().zip(src.chunks(2)) {
                *o = pair[0];
            }
        }
        _ => {
            for (o, v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *o = *v;
            }
        }
    }
}

/// `dst[i · stride] += src[i]`, the adjoint of [`gather_strided`].
fn scatter_add_strided<T: WithDType>(dst: &mut [T], src: &[T], stride: usize) {
    match stride {
        1 => {
            for (o, v) in dst[..src.len()].iter_mut().zip(src) {
                *o += *v;
            }
        }
        2 => {
            for (pair, v) in dst.chunks_mut(2).zip(src) {
                pair[0] += *v;
            }
        }
        _ => {
            for (o, v) in dst.iter_mut().step_by(stride).zip(src) {
                *o += *v;
            }
        }
    }
}

/// Samples `b0..b1` of the batch, one parallel task, and the tiles they are
/// computed in: ranges `r0..r1` of global output rows (`sample · H_out +
/// row`), several whole samples or a band of one sample's rows.
struct Task {
    b0: usize,
    b1: usize,
    tiles: Vec<(usize, usize)>,
}

impl Geometry {
    /// The batch cut into tasks whose tiles' column buffers hold at most
    /// `budget` elements. The cut depends on the geometry alone, never on the
    /// number of threads, so results do not either.
    fn tasks(&self) -> Vec<Task> {
        let (ho, wo) = (self.out_h(), self.out_w());
        let per_sample = self.depth() * ho * wo;
        if per_sample <= self.budget {
            let nb = (self.budget / per_sample)
                .min(self.n.div_ceil(MIN_TASKS))
                .max(1);
            (0..self.n)
                .step_by(nb)
                .map(|b0| {
                    let b1 = (b0 + nb).min(self.n);
                    Task {
                        b0,
                        b1,
                        tiles: vec![(b0 * ho, b1 * ho)],
                    }
                })
                .collect()
        } else {
            let rows = (self.budget / (self.depth() * wo)).clamp(1, ho);
            (0..self.n)
                .map(|b| Task {
                    b0: b,
                    b1: b + 1,
                    tiles: (0..ho)
                        .step_by(rows)
                        .map(|r| (b * ho + r, b * ho + (r + rows).min(ho)))
                        .collect(),
                })
                .collect()
        }
    }

    /// Whether im2col and col2im take the rows `r0..r1` through the tap
    /// table: whole samples of at most [`SMALL_IMAGE`] output pixels.
    fn small_tile(&self, (r0, r1): (usize, usize)) -> bool {
        let ho = self.out_h();
        ho * self.out_w() <= SMALL_IMAGE && r0 % ho == 0 && r1 % ho == 0
    }

    /// Whether the batch is one tile whose GEMMs split by rows (see
    /// [`DEEP_PIXELS`]); tests with a small `budget` shrink the limit.
    fn deep(&self) -> bool {
        let p = self.out_h() * self.out_w();
        p <= DEEP_PIXELS
            && self.depth() * self.n * p <= DEEP_BUDGET.min(self.budget.saturating_mul(16))
    }

    /// Output pixels of the widest tile.
    fn widest(tasks: &[Task], wo: usize) -> usize {
        tasks
            .iter()
            .flat_map(|t| &t.tiles)
            .map(|(r0, r1)| (r1 - r0) * wo)
            .max()
            .unwrap_or(0)
    }
}

/// `data`, `per_sample` elements per sample, cut into the tasks' samples.
fn split_by_task<'a, T>(
    mut data: &'a mut [T],
    tasks: &[Task],
    per_sample: usize,
) -> Vec<&'a mut [T]> {
    tasks
        .iter()
        .map(|t| {
            let (head, rest) = std::mem::take(&mut data).split_at_mut((t.b1 - t.b0) * per_sample);
            data = rest;
            head
        })
        .collect()
}

/// Fills `cols` `((c1 − c0)·k·k, width)` with the patches of channels
/// `c0..c1` at the tile's output pixels, zeros in the padding.
fn im2col<T: WithDType>(
    x: &[T],
    g: Geometry,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    cols: &mut [T],
) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let width = (r1 - r0) * wo;
    let kk = g.k * g.k;
    let zero = T::zero();
    if g.small_tile((r0, r1)) {
        im2col_small(x, g, (r0 / ho, r1 / ho), (c0, c1), cols);
        return;
    }
    for (d, out) in cols[..(c1 - c0) * kk * width]
        .chunks_exact_mut(width)
        .enumerate()
    {
        let (c, tap) = (c0 + d / kk, d % kk);
        let (ky, kx) = (tap / g.k, tap % g.k);
        let (ylo, yhi) = g.valid(ky, g.h, ho);
        let (xlo, xhi) = g.valid(kx, g.w, wo);
        for (r, dst) in (r0..r1).zip(out.chunks_exact_mut(wo)) {
            let (b, oy) = (r / ho, r % ho);
            if oy < ylo || oy >= yhi || xlo >= xhi {
                dst.fill(zero);
                continue;
            }
            let y = oy * g.stride + ky - g.padding;
            let src = &x[((b * g.c + c) * g.h + y) * g.w..][..g.w];
            dst[..xlo].fill(zero);
            dst[xhi..].fill(zero);
            let first = xlo * g.stride + kx - g.padding;
            gather_strided(&mut dst[xlo..xhi], &src[first..], g.stride);
        }
    }
}

/// Output pixels per image up to which [`im2col`] copies whole samples
/// through a table of source pixels: rows of 1–8 pixels made the row-wise
/// copy mostly loop overhead.
const SMALL_IMAGE: usize = 64;

/// Per tap and output pixel `(tap, q)`, the input pixel the tap reads
/// (its offset within the plane), or `usize::MAX` in the padding.
fn tap_table(g: Geometry) -> Vec<usize> {
    let p = g.out_h() * g.out_w();
    (0..g.k * g.k * p)
        .map(|i| {
            let (tap, q) = (i / p, i % p);
            let (ky, kx) = (tap / g.k, tap % g.k);
            let (oy, ox) = (q / g.out_w(), q % g.out_w());
            let y = (oy * g.stride + ky)
                .checked_sub(g.padding)
                .filter(|&y| y < g.h);
            let x = (ox * g.stride + kx)
                .checked_sub(g.padding)
                .filter(|&x| x < g.w);
            match (y, x) {
                (Some(y), Some(x)) => y * g.w + x,
                _ => usize::MAX,
            }
        })
        .collect()
}

/// [`im2col`] for samples `b0..b1` of a layer with small images: per tap, a
/// table maps each output pixel to its input pixel (or to the padding), and
/// each (channel, tap) row copies every sample's pixels through it.
fn im2col_small<T: WithDType>(
    x: &[T],
    g: Geometry,
    (b0, b1): (usize, usize),
    (c0, c1): (usize, usize),
    cols: &mut [T],
) {
    let p = g.out_h() * g.out_w();
    let kk = g.k * g.k;
    let plane = g.h * g.w;
    let table = tap_table(g);
    let width = (b1 - b0) * p;
    for (d, out) in cols[..(c1 - c0) * kk * width]
        .chunks_exact_mut(width)
        .enumerate()
    {
        let (c, tap) = (c0 + d / kk, d % kk);
        let map = &table[tap * p..][..p];
        for (b, dst) in (b0..b1).zip(out.chunks_exact_mut(p)) {
            let src = &x[(b * g.c + c) * plane..][..plane];
            for (d, &at) in dst.iter_mut().zip(map) {
                *d = if at == usize::MAX { T::zero() } else { src[at] };
            }
        }
    }
}

/// Adds `cols` `(C·k·k, width)` of a tile back onto `dx`, the input
/// gradient of samples from `b0` on (im2col's adjoint), channels in
/// parallel: each owns its planes of every sample.
fn col2im<T: WithDType>(
    cols: &[T],
    g: Geometry,
    (r0, r1): (usize, usize),
    b0: usize,
    dx: &mut [T],
) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let width = (r1 - r0) * wo;
    let kk = g.k * g.k;
    let mut planes: Vec<Vec<&mut [T]>> = (0..g.c).map(|_| Vec::new()).collect();
    for (i, plane) in dx.chunks_exact_mut(g.h * g.w).enumerate() {
        planes[i % g.c].push(plane);
    }
    if g.small_tile((r0, r1)) {
        // As im2col_small: whole samples through the tap table, taps in
        // the same order as below, so each element's sum is too.
        let p = ho * wo;
        let table = tap_table(g);
        planes
            .par_iter_mut()
            .enumerate()
            .with_min_len(min_items(kk * width))
            .for_each(|(c, ps)| {
                for tap in 0..kk {
                    let map = &table[tap * p..][..p];
                    let src = &cols[(c * kk + tap) * width..][..width];
                    for (plane, s) in ps.iter_mut().skip(r0 / ho - b0).zip(src.chunks_exact(p)) {
                        for (&at, v) in map.iter().zip(s) {
                            if at != usize::MAX {
                                plane[at] += *v;
                            }
                        }
                    }
                }
            });
        return;
    }
    planes
        .par_iter_mut()
        .enumerate()
        .with_min_len(min_items(kk * width))
        .for_each(|(c, ps)| {
            for tap in 0..kk {
                let (ky, kx) = (tap / g.k, tap % g.k);
                let (ylo, yhi) = g.valid(ky, g.h, ho);
                let (xlo, xhi) = g.valid(kx, g.w, wo);
                if xlo >= xhi {
                    continue;
                }
                let src = &cols[(c * kk + tap) * width..][..width];
                for (r, s) in (r0..r1).zip(src.chunks_exact(wo)) {
                    let (b, oy) = (r / ho, r % ho);
                    if oy < ylo || oy >= yhi {
                        continue;
                    }
                    let y = oy * g.stride + ky - g.padding;
                    let first = xlo * g.stride + kx - g.padding;
                    scatter_add_strided(
                        &mut ps[b - b0][y * g.w + first..(y + 1) * g.w],
                        &s[xlo..xhi],
                        g.stride,
                    );
                }
            }
        });
}

/// Gathers a tile's pixels of `dy` `(N, C_out, P)` into `(C_out, width)`,
/// output channels in parallel.
fn gather_grad<T: WithDType>(dy: &[T], g: Geometry, (r0, r1): (usize, usize), dst: &mut [T]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let width = (r1 - r0) * wo;
    dst[..g.c_out * width]
        .par_chunks_mut(width)
        .enumerate()
        .with_min_len(min_items(width))
        .for_each(|(o, row)| {
            for (r, d) in (r0..r1).zip(row.chunks_exact_mut(wo)) {
                let (b, oy) = (r / ho, r % ho);
                d.copy_from_slice(&dy[(b * g.c_out + o) * ho * wo + oy * wo..][..wo]);
            }
        });
}

/// Calls `f(first_row, rows_of_dst)` on blocks of the `m` rows (`len`
/// elements each) of `dst`, in parallel. The blocks depend on `m` alone,
/// never on the thread count.
fn par_row_blocks<T: Send>(
    dst: &mut [T],
    m: usize,
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let per = m.div_ceil(8).next_multiple_of(16).min(m).max(1);
    dst[..m * len]
        .par_chunks_mut(per * len)
        .enumerate()
        .for_each(|(i, rows)| f(i * per, rows));
}

/// im2col of the whole batch into `cols` `(C·k·k, N·P)`, channels in
/// parallel.
fn im2col_batch<T: WithDType>(x: &[T], g: Geometry, cols: &mut [T]) {
    let rows = (0, g.n * g.out_h());
    let per_channel = g.k * g.k * g.n * g.out_h() * g.out_w();
    cols[..g.c * per_channel]
        .par_chunks_mut(per_channel)
        .enumerate()
        .with_min_len(min_items(per_channel))
        .for_each(|(c, chunk)| im2col(x, g, rows, (c, c + 1), chunk));
}

/// The forward of a deep layer (see [`Geometry::deep`]).
fn forward_deep<T: WithDType>(x: &[T], weight: &[T], bias: &[T], g: Geometry, out: &mut [T]) {
    let p = g.out_h() * g.out_w();
    let width = g.n * p;
    let mut cols = take_scratch::<T>(g.depth() * width);
    let mut prod = take_scratch::<T>(g.c_out * width);
    im2col_batch(x, g, &mut cols);
    let cols_ref = &cols[..];
    par_row_blocks(&mut prod, g.c_out, width, |o0, rows| {
        // SAFETY: weight rows o0.. are (rows, depth); cols (depth, width);
        // rows (rows, width).
        unsafe {
            matmul(
                rows,
                width,
                false,
                &weight[o0 * g.depth()..],
                (g.depth(), 1),
                cols_ref,
                (width, 1),
                (rows.len() / width, g.depth(), width),
            );
        }
    });
    let prod_ref = &prod[..];
    out.par_chunks_mut(p)
        .enumerate()
        .with_min_len(min_items(p))
        .for_each(|(i, dst)| {
            let (b, o) = (i / g.c_out, i % g.c_out);
            for (d, v) in dst.iter_mut().zip(&prod_ref[o * width + b * p..]) {
                *d = *v + bias[o];
            }
        });
    give_scratch(cols);
    give_scratch(prod);
}

/// The input gradient of a deep layer (see [`Geometry::deep`]).
fn input_grad_deep<T: WithDType>(dy: &[T], weight: &[T], g: Geometry, dx: &mut [T]) {
    let p = g.out_h() * g.out_w();
    let width = g.n * p;
    let mut dyc = take_scratch::<T>(g.c_out * width);
    let mut cols = take_scratch::<T>(g.depth() * width);
    gather_grad(dy, g, (0, g.n * g.out_h()), &mut dyc);
    let dyc_ref = &dyc[..];
    par_row_blocks(&mut cols, g.depth(), width, |r0, rows| {
        // SAFETY: Wᵀ rows r0.. are (rows, C_out) read from (C_out, depth);
        // dyc is (C_out, width); rows (rows, width).
        unsafe {
            matmul(
                rows,
                width,
                false,
                &weight[r0..],
                (1, g.depth()),
                dyc_ref,
                (width, 1),
                (rows.len() / width, g.c_out, width),
            );
        }
    });
    col2im(&cols, g, (0, g.n * g.out_h()), 0, dx);
    give_scratch(dyc);
    give_scratch(cols);
}

/// The forward op over (x, weight, bias).
struct Conv(Geometry);

fn forward<T: WithDType>(x: &[T], weight: &[T], bias: &[T], g: Geometry) -> Vec<T> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let p = ho * wo;
    let mut out = zeros(g.n * g.c_out * p, T::zero());
    if g.winograd4 {
        if let (Some(x), Some(w), Some(b), Some(o)) = (
            as_f32(x),
            as_f32(weight),
            as_f32(bias),
            as_f32_mut(&mut out),
        ) {
            winograd4::forward(x, w, b, g, o);
            return out;
        }
    }
    if g.winograd {
        if let (Some(x), Some(w), Some(b), Some(o)) = (
            as_f32(x),
            as_f32(weight),
            as_f32(bias),
            as_f32_mut(&mut out),
        ) {
            winograd::forward(x, w, b, g, o);
            return out;
        }
    }
    if g.shifted {
        if let (Some(x), Some(w), Some(b), Some(o)) = (
            as_f32(x),
            as_f32(weight),
            as_f32(bias),
            as_f32_mut(&mut out),
        ) {
            shifted::forward(x, w, b, g, o);
            return out;
        }
    }
    if g.direct {
        direct::forward(x, weight, bias, g, &mut out);
        return out;
    }
    if g.deep() {
        forward_deep(x, weight, bias, g, &mut out);
        return out;
    }
    let tasks = g.tasks();
    let widest = Geometry::widest(&tasks, wo);
    let outs = split_by_task(&mut out, &tasks, g.c_out * p);
    tasks.par_iter().zip(outs).for_each(|(task, out)| {
        // Scratch: im2col and the GEMM write every element they later read.
        let mut cols = take_scratch::<T>(g.depth() * widest);
        let mut prod = take_scratch::<T>(g.c_out * widest);
        for &(r0, r1) in &task.tiles {
            let width = (r1 - r0) * wo;
            im2col(x, g, (r0, r1), (0, g.c), &mut cols);
            // SAFETY: weight is (C_out, depth), cols (depth, width), prod
            // (C_out, width).
            unsafe {
                matmul(
                    &mut prod,
                    width,
                    false,
                    weight,
                    (g.depth(), 1),
                    &cols,
                    (width, 1),
                    (g.c_out, g.depth(), width),
                );
            }
            // (C_out, width) -> the task's (nb, C_out, P), adding the bias.
            for (o, src) in prod[..g.c_out * width].chunks_exact(width).enumerate() {
                let b = bias[o];
                for (r, s) in (r0..r1).zip(src.chunks_exact(wo)) {
                    let (bi, oy) = (r / ho - task.b0, r % ho);
                    let dst = &mut out[(bi * g.c_out + o) * p + oy * wo..][..wo];
                    for (d, v) in dst.iter_mut().zip(s) {
                        *d = *v + b;
                    }
                }
            }
        }
        give_scratch(cols);
        give_scratch(prod);
    });
    out
}

impl Kernel3 for Conv {
    const NAME: &'static str = "conv2d";

    fn run<T: WithDType>(&self, x: &[T], weight: &[T], bias: &[T]) -> Vec<T> {
        forward(x, weight, bias, self.0)
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        Self::NAME
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
        let g = self.0;
        let out = dispatch3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((g.n, g.c_out, g.out_h(), g.out_w()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Gradients nobody asked for are not computed: the input images of
        // the first layer, and the parameters of a frozen decoder.
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &InputGrad(self.0))?)
        } else {
            None
        };
        if !weight.track_op() && !bias.track_op() {
            return Ok((dx, None, None));
        }
        let g = self.0;
        let (dw, db) = unpack_weight_grad(&x.apply_op2_no_bwd(&grad, &WeightGrad(g))?, &g)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `(dW (C_out, C, k, k), db (C_out))` from a weight-gradient op's packed
/// `[dW, db]`.
fn unpack_weight_grad(packed: &Tensor, g: &Geometry) -> candle_core::Result<(Tensor, Tensor)> {
    let dw = packed
        .narrow(0, 0, g.c_out * g.depth())?
        .reshape((g.c_out, g.c, g.k, g.k))?;
    let db = packed.narrow(0, g.c_out * g.depth(), g.c_out)?;
    Ok((dw, db))
}

/// `dx` from (upstream gradient, weight): `col2im(Wᵀ @ dY)` tile by tile.
struct InputGrad(Geometry);

fn input_grad<T: WithDType>(dy: &[T], weight: &[T], g: Geometry) -> Vec<T> {
    let wo = g.out_w();
    let mut dx = zeros(g.n * g.c * g.h * g.w, T::zero());
    if g.winograd4 {
        if let (Some(dy), Some(w), Some(d)) = (as_f32(dy), as_f32(weight), as_f32_mut(&mut dx)) {
            winograd4::input_grad(dy, w, g, d);
            return dx;
        }
    }
    if g.winograd {
        if let (Some(dy), Some(w), Some(d)) = (as_f32(dy), as_f32(weight), as_f32_mut(&mut dx)) {
            winograd::input_grad(dy, w, g, d);
            return dx;
        }
    }
    if g.shifted {
        if let (Some(dy), Some(w), Some(d)) = (as_f32(dy), as_f32(weight), as_f32_mut(&mut dx)) {
            shifted::input_grad(dy, w, g, d);
            return dx;
        }
    }
    if g.direct {
        direct::input_grad(dy, weight, g, &mut dx);
        return dx;
    }
    if g.deep() {
        input_grad_deep(dy, weight, g, &mut dx);
        return dx;
    }
    let tasks = g.tasks();
    let widest = Geometry::widest(&tasks, wo);
    // A task owns its samples' input gradient: neighbouring bands of one
    // sample overlap in the input rows they add to.
    let dxs = split_by_task(&mut dx, &tasks, g.c * g.h * g.w);
    tasks.par_iter().zip(dxs).for_each(|(task, dx)| {
        let mut cols = take_scratch::<T>(g.depth() * widest);
        let mut dyc = take_scratch::<T>(g.c_out * widest);
        for &tile in &task.tiles {
            let width = (tile.1 - tile.0) * wo;
            gather_grad(dy, g, tile, &mut dyc);
            // SAFETY: Wᵀ is (depth, C_out) read from (C_out, depth); dyc is
            // (C_out, width); cols (depth, width).
            unsafe {
                matmul(
                    &mut cols,
                    width,
                    false,
                    weight,
                    (1, g.depth()),
                    &dyc,
                    (width, 1),
                    (g.depth(), g.c_out, width),
                );
            }
            col2im(&cols, g, tile, task.b0, dx);
        }
        give_scratch(cols);
        give_scratch(dyc);
    });
    dx
}

impl Kernel2 for InputGrad {
    const NAME: &'static str = "conv2d-input-grad";

    fn run<T: WithDType>(&self, dy: &[T], weight: &[T]) -> Vec<T> {
        input_grad(dy, weight, self.0)
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch2(self, (s1, l1), (s2, l2))?;
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

/// `[dW, db]` from (input, upstream gradient), packed flat. `dW = Σ dY @
/// colsᵀ` is computed as its transpose `cols @ dYᵀ` `(C·k·k, C_out)`,
/// which `gemm` runs 2–6× faster for the model's shapes (few output
/// channels, long sums), then transposed. The cores split the input
/// channels, i.e. the rows of `cols`, so that each element's sum runs over
/// the same tiles in the same order whatever the number of threads.
struct WeightGrad(Geometry);

fn weight_grad<T: WithDType>(x: &[T], dy: &[T], g: Geometry) -> Vec<T> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let p = ho * wo;
    // [dW (C_out, depth), db (C_out)]
    let mut out = zeros(g.c_out * g.depth() + g.c_out, T::zero());
    let (dw, db) = out.split_at_mut(g.c_out * g.depth());
    let winograd = g.winograd && winograd::weight_grad_fits(&g);
    let f32_kernel = if g.winograd4_weight_grad || winograd || g.shifted {
        (as_f32(x), as_f32(dy), as_f32_mut(dw))
    } else {
        (None, None, None)
    };
    if let (Some(x), Some(dy), Some(dw)) = f32_kernel {
        if g.winograd4_weight_grad {
            winograd4::weight_grad(x, dy, g, dw);
        } else if winograd {
            winograd::weight_grad(x, dy, g, dw);
        } else {
            shifted::weight_grad(x, dy, g, dw);
        }
    } else if g.direct {
        direct::weight_grad(x, dy, g, dw);
    } else {
        // A deep layer's lanes each take the whole batch at once.
        let tasks = if g.deep() {
            vec![Task {
                b0: 0,
                b1: g.n,
                tiles: vec![(0, g.n * ho)],
            }]
        } else {
            g.tasks()
        };
        let widest = Geometry::widest(&tasks, wo);
        let tiles: Vec<(usize, usize)> = tasks.into_iter().flat_map(|t| t.tiles).collect();
        // Sums over thousands of output pixels lose precision in f32, so
        // GEMMs accumulate at most SUM_BLOCK pixels before their partial
        // result is added in f64. When the whole batch is one block (the
        // deep layers' few pixels), the f32 result is the sum itself.
        let one_block = g.n * p <= SUM_BLOCK;
        let kk = g.k * g.k;
        let lanes = (2 * rayon::current_num_threads()).clamp(1, g.c);
        let per_lane = g.c.div_ceil(lanes);
        // With one tile (the deep layers) every lane needs the same gathered
        // gradient: gather it once, with all cores, instead of once a lane.
        let shared_dyc = (tiles.len() == 1).then(|| {
            let mut d = zeros(g.c_out * widest, T::zero());
            gather_grad(dy, g, tiles[0], &mut d);
            d
        });
        let mut transposed = zeros(g.depth() * g.c_out, T::zero());
        transposed
            .par_chunks_mut(per_lane * kk * g.c_out)
            .enumerate()
            .for_each(|(lane, dst)| {
                let c0 = lane * per_lane;
                let rows = dst.len() / g.c_out;
                let c1 = c0 + rows / kk;
                let mut cols = take_scratch::<T>(rows * widest);
                let own_dyc = if shared_dyc.is_some() {
                    0
                } else {
                    g.c_out * widest
                };
                let mut dyc = take_scratch::<T>(own_dyc);
                let mut part = take_scratch::<T>(rows * g.c_out);
                let mut sum = if one_block {
                    Vec::new()
                } else {
                    vec![0f64; rows * g.c_out]
                };
                let flush = |sum: &mut Vec<f64>, part: &[T]| {
                    for (s, v) in sum.iter_mut().zip(part) {
                        *s += v.to_f64();
                    }
                };
                // Pixels summed into `part` since it was last flushed.
                let mut summed = 0;
                for &tile in &tiles {
                    let width = (tile.1 - tile.0) * wo;
                    im2col(x, g, tile, (c0, c1), &mut cols);
                    let dyc: &[T] = match &shared_dyc {
                        Some(shared) => shared,
                        None => {
                            gather_grad(dy, g, tile, &mut dyc);
                            &dyc
                        }
                    };
                    for k0 in (0..width).step_by(SUM_BLOCK) {
                        let kb = SUM_BLOCK.min(width - k0);
                        if summed > 0 && summed + kb > SUM_BLOCK {
                            flush(&mut sum, &part);
                            summed = 0;
                        }
                        // SAFETY: cols[.., k0..k0 + kb] is (rows, kb) with
                        // row stride width; dYᵀ is (kb, C_out) read from dyc
                        // (C_out, width) at column k0; part is (rows, C_out).
                        unsafe {
                            matmul(
                                &mut part,
                                g.c_out,
                                summed > 0,
                                &cols[k0..],
                                (width, 1),
                                &dyc[k0..],
                                (1, width),
                                (rows, kb, g.c_out),
                            );
                        }
                        summed += kb;
                    }
                }
                if one_block {
                    dst.copy_from_slice(&part[..rows * g.c_out]);
                } else {
                    if summed > 0 {
                        flush(&mut sum, &part);
                    }
                    for (d, s) in dst.iter_mut().zip(&sum) {
                        *d = T::from_f64(*s);
                    }
                }
                give_scratch(cols);
                give_scratch(dyc);
                give_scratch(part);
            });
        transpose_into(dw, &transposed, g);
    }
    bias_grad(dy, p, db);
    out
}

/// `db[o]`: the sum in f64 of the upstream gradient's planes `(·, o)`, each
/// of `pixels` elements, for the `db.len()` output channels.
fn bias_grad<T: WithDType>(dy: &[T], pixels: usize, db: &mut [T]) {
    let c_out = db.len();
    db.par_iter_mut()
        .enumerate()
        .with_min_len(min_items(dy.len() / c_out.max(1)))
        .for_each(|(o, d)| {
            let planes: Vec<&[T]> = dy.chunks_exact(pixels).skip(o).step_by(c_out).collect();
            *d = T::from_f64(sum_of_plane_sums(&planes, |v| v.to_f64()));
        });
}

/// `dw` (C_out, depth) from `sum` (depth, C_out), in bands of TILE output
/// channels (one task each), each band in TILE × TILE blocks so that reads
/// and writes both stay within a few cache lines.
fn transpose_into<T: WithDType>(dw: &mut [T], sum: &[T], g: Geometry) {
    const TILE: usize = 16;
    let depth = g.depth();
    dw.par_chunks_mut(TILE * depth)
        .enumerate()
        .with_min_len(min_items(TILE * depth))
        .for_each(|(t, rows)| {
            let o0 = t * TILE;
            let n_o = rows.len() / depth;
            for r0 in (0..depth).step_by(TILE) {
                let r1 = (r0 + TILE).min(depth);
                for (i, row) in rows.chunks_exact_mut(depth).enumerate().take(n_o) {
                    for (r, d) in (r0..r1).zip(&mut row[r0..r1]) {
                        *d = sum[r * g.c_out + o0 + i];
                    }
                }
            }
        });
}

impl Kernel2 for WeightGrad {
    const NAME: &'static str = "conv2d-weight-grad";

    fn run<T: WithDType>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        weight_grad(x, dy, self.0)
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch2(self, (s1, l1), (s2, l2))?;
        Ok((out, Shape::from(g.c_out * g.depth() + g.c_out)))
    }
}

/// Layers with at most [`DIRECT_MAX_OUT`] output channels (the decoders'
/// last, with 1 or 2), computed straight on the planes: as a GEMM they have
/// one or two rows and ran at a few GFLOP/s. Every loop reads and writes
/// whole rows, which the compiler vectorises for stride 1.
mod direct {
    use super::{min_items, Geometry};
    use candle_core::WithDType;
    use rayon::prelude::*;

    /// `d[i] += a · s[i · stride]`.
    fn axpy_gather<T: WithDType>(d: &mut [T], s: &[T], a: T, stride: usize) {
        if stride == 1 {
            for (d, s) in d.iter_mut().zip(s) {
                *d += a * *s;
            }
        } else {
            for (d, s) in d.iter_mut().zip(s.iter().step_by(stride)) {
                *d += a * *s;
            }
        }
    }

    /// `d[i · stride] += a · s[i]`.
    fn axpy_scatter<T: WithDType>(d: &mut [T], s: &[T], a: T, stride: usize) {
        if stride == 1 {
            for (d, s) in d.iter_mut().zip(s) {
                *d += a * *s;
            }
        } else {
            for (d, s) in d.iter_mut().step_by(stride).zip(s) {
                *d += a * *s;
            }
        }
    }

    /// `Σ a[i] · b[i · stride]` in eight f32 (or f64) lanes, returned in f64.
    fn dot<T: WithDType>(a: &[T], b: &[T], stride: usize) -> f64 {
        let mut lanes = [T::zero(); 8];
        if stride == 1 {
            let (a8, b8) = (a.chunks_exact(8), b[..a.len()].chunks_exact(8));
            let tail: f64 = a8
                .remainder()
                .iter()
                .zip(b8.remainder())
                .map(|(x, y)| (*x * *y).to_f64())
                .sum();
            for (x, y) in a8.zip(b8) {
                for i in 0..8 {
                    lanes[i] += x[i] * y[i];
                }
            }
            lanes.iter().map(|v| v.to_f64()).sum::<f64>() + tail
        } else {
            a.iter()
                .zip(b.iter().step_by(stride))
                .map(|(x, y)| (*x * *y).to_f64())
                .sum()
        }
    }

    /// Calls `f(tap, ky, (ylo, yhi), (xlo, xhi), first_x)` for the taps
    /// that reach the input, with the output rows and columns they reach and
    /// the input column of output column `xlo`.
    fn for_each_tap(
        g: Geometry,
        mut f: impl FnMut(usize, usize, (usize, usize), (usize, usize), usize),
    ) {
        let (ho, wo) = (g.out_h(), g.out_w());
        for tap in 0..g.k * g.k {
            let (ky, kx) = (tap / g.k, tap % g.k);
            let (ylo, yhi) = g.valid(ky, g.h, ho);
            let (xlo, xhi) = g.valid(kx, g.w, wo);
            if ylo < yhi && xlo < xhi {
                f(
                    tap,
                    ky,
                    (ylo, yhi),
                    (xlo, xhi),
                    xlo * g.stride + kx - g.padding,
                );
            }
        }
    }

    /// Each output plane is its bias plus, per input channel and tap, the
    /// shifted input plane times one weight.
    pub(super) fn forward<T: WithDType>(
        x: &[T],
        weight: &[T],
        bias: &[T],
        g: Geometry,
        out: &mut [T],
    ) {
        let (ho, wo) = (g.out_h(), g.out_w());
        let (kk, plane_in) = (g.k * g.k, g.h * g.w);
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .with_min_len(min_items(g.c * kk * ho * wo))
            .for_each(|(i, plane)| {
                let (b, o) = (i / g.c_out, i % g.c_out);
                plane.fill(bias[o]);
                for c in 0..g.c {
                    let src = &x[(b * g.c + c) * plane_in..][..plane_in];
                    for_each_tap(g, |tap, ky, (ylo, yhi), (xlo, xhi), first| {
                        let a = weight[(o * g.c + c) * kk + tap];
                        for oy in ylo..yhi {
                            let y = oy * g.stride + ky - g.padding;
                            axpy_gather(
                                &mut plane[oy * wo + xlo..oy * wo + xhi],
                                &src[y * g.w + first..(y + 1) * g.w],
                                a,
                                g.stride,
                            );
                        }
                    });
                }
            });
    }

    /// Each input-gradient plane gathers, per output channel and tap, the
    /// upstream gradient times one weight at the positions the tap read.
    pub(super) fn input_grad<T: WithDType>(dy: &[T], weight: &[T], g: Geometry, dx: &mut [T]) {
        let (ho, wo) = (g.out_h(), g.out_w());
        let kk = g.k * g.k;
        dx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .with_min_len(min_items(g.c_out * kk * ho * wo))
            .for_each(|(i, plane)| {
                let (b, c) = (i / g.c, i % g.c);
                for o in 0..g.c_out {
                    let src = &dy[(b * g.c_out + o) * ho * wo..][..ho * wo];
                    for_each_tap(g, |tap, ky, (ylo, yhi), (xlo, xhi), first| {
                        let a = weight[(o * g.c + c) * kk + tap];
                        for oy in ylo..yhi {
                            let y = oy * g.stride + ky - g.padding;
                            axpy_scatter(
                                &mut plane[y * g.w + first..(y + 1) * g.w],
                                &src[oy * wo + xlo..oy * wo + xhi],
                                a,
                                g.stride,
                            );
                        }
                    });
                }
            });
    }

    /// Each weight is the sum, over the batch, of the upstream gradient
    /// times the input its tap read: row by row in f32, rows added in f64.
    /// `dw` is `(C_out, C, k, k)`.
    pub(super) fn weight_grad<T: WithDType>(x: &[T], dy: &[T], g: Geometry, dw: &mut [T]) {
        let (ho, wo) = (g.out_h(), g.out_w());
        let (kk, plane_in) = (g.k * g.k, g.h * g.w);
        dw.par_chunks_mut(kk).enumerate().for_each(|(i, taps)| {
            let (o, c) = (i / g.c, i % g.c);
            let mut sums = vec![0f64; kk];
            for b in 0..g.n {
                let src = &x[(b * g.c + c) * plane_in..][..plane_in];
                let up = &dy[(b * g.c_out + o) * ho * wo..][..ho * wo];
                for_each_tap(g, |tap, ky, (ylo, yhi), (xlo, xhi), first| {
                    for oy in ylo..yhi {
                        let y = oy * g.stride + ky - g.padding;
                        sums[tap] += dot(
                            &up[oy * wo + xlo..oy * wo + xhi],
                            &src[y * g.w + first..(y + 1) * g.w],
                            g.stride,
                        );
                    }
                });
            }
            for (t, s) in taps.iter_mut().zip(sums) {
                *t = T::from_f64(s);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::storage::{max_abs_diff as max_diff, poison_scratch, sum_of_plane_sums};
    use super::{conv2d, conv2d_with, Path, TILE_BUDGET};
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor, Var};

    /// A random f64 problem and candle's answer to it.
    struct Reference {
        x: Var,
        wt: Var,
        b: Var,
        /// The upstream gradient, random: the loss is `Σ out · up`.
        up: Tensor,
        out: Tensor,
        grads: GradStore,
        out_size: (usize, usize),
    }

    /// Input, weight, bias and upstream gradient drawn in [-1, 1), and
    /// candle's conv2d (plus bias) and its gradients.
    fn reference(
        (n, cin, h, w): (usize, usize, usize, usize),
        (cout, k, stride, padding): (usize, usize, usize, usize),
    ) -> Reference {
        let dev = Device::Cpu;
        let x = Var::rand(-1f64, 1f64, (n, cin, h, w), &dev).unwrap();
        let wt = Var::rand(-1f64, 1f64, (cout, cin, k, k), &dev).unwrap();
        let b = Var::rand(-1f64, 1f64, cout, &dev).unwrap();
        let (ho, wo) = (
            (h + 2 * padding - k) / stride + 1,
            (w + 2 * padding - k) / stride + 1,
        );
        let up = Tensor::rand(-1f64, 1f64, (n, cout, ho, wo), &dev).unwrap();
        let out = x
            .conv2d(wt.as_tensor(), padding, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        let grads = (&out * &up).unwrap().sum_all().unwrap().backward().unwrap();
        Reference {
            x,
            wt,
            b,
            up,
            out,
            grads,
            out_size: (ho, wo),
        }
    }

    /// The bias gradient's interleaved sums equal the plain nested sums bit
    /// for bit (the step's numerics do not depend on the speed-up), for
    /// every remainder of planes modulo four, values of mixed magnitudes,
    /// and all-negative-zero planes, whose sum keeps its sign.
    #[test]
    fn interleaved_plane_sums_equal_nested_sums_exactly() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            (unit * 10f64.powi((state % 9) as i32 - 4)) as f32
        };
        for planes in 0..10 {
            for len in [1, 7, 64] {
                let data: Vec<f32> = (0..planes * len).map(|_| next()).collect();
                let views: Vec<&[f32]> = data.chunks_exact(len).collect();
                let nested: f64 = views
                    .iter()
                    .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                    .sum();
                let fast = sum_of_plane_sums(&views, f64::from);
                assert_eq!(fast.to_bits(), nested.to_bits(), "{planes} planes of {len}");
            }
        }
        let zeros = [-0.0f32; 8];
        let views: Vec<&[f32]> = zeros.chunks_exact(2).collect();
        assert!(sum_of_plane_sums(&views, f64::from).is_sign_negative());
    }

    /// Against candle's own conv2d and its backward, in f64, for the
    /// model's two kernels and odd sizes (square ones for stride 2: candle's
    /// backward gives the wrong input-gradient shape when H and W need
    /// different output paddings), through the direct loops and through the
    /// GEMMs with tiles of all samples, one or two samples, one row and two
    /// rows.
    #[test]
    fn matches_candle_conv2d_and_its_gradients() {
        let dev = Device::Cpu;
        for (n, cin, cout, h, w, k, stride, padding) in [
            (2, 3, 5, 8, 8, 4, 2, 1),
            (3, 4, 2, 7, 9, 3, 1, 1),
            (1, 2, 3, 5, 5, 4, 2, 1),
            (2, 3, 4, 2, 2, 3, 1, 1),
            (3, 2, 3, 6, 6, 4, 2, 1),
            (3, 5, 6, 1, 1, 3, 1, 1),
            // More output pixels than one SUM_BLOCK: partial sums in f64.
            (2, 2, 3, 20, 20, 3, 1, 1),
            // Enough input channels for several weight-gradient lanes.
            (2, 9, 5, 9, 9, 3, 1, 1),
            (3, 7, 2, 10, 10, 4, 2, 1),
        ] {
            let Reference {
                x,
                wt,
                b,
                up,
                out: theirs,
                grads: gb,
                out_size: (ho, wo),
            } = reference((n, cin, h, w), (cout, k, stride, padding));
            let sample = cin * k * k * ho * wo;
            let row = cin * k * k * wo;
            let tilings = [usize::MAX, sample, 2 * sample + 1, row, 2 * row + 1];
            for (budget, path) in tilings
                .into_iter()
                .map(|b| (b, Path::Gemm))
                .chain([(usize::MAX, Path::Direct), (TILE_BUDGET, Path::Fastest)])
            {
                // Whatever earlier calls left in the reused buffers must not
                // reach a result.
                poison_scratch();
                let ours = conv2d_with(
                    x.as_tensor(),
                    wt.as_tensor(),
                    b.as_tensor(),
                    stride,
                    padding,
                    budget,
                    path,
                )
                .unwrap();
                assert!(
                    max_diff(&ours, &theirs) < 1e-12,
                    "forward {k}x{k} budget {budget} {path:?}"
                );
                poison_scratch();
                let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &wt, &b] {
                    let (a, e) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                    assert!(
                        max_diff(a, e) < 1e-12,
                        "gradient of {:?} for {k}x{k} budget {budget} {path:?}",
                        v.dims()
                    );
                }
            }
        }
        // Untracked operands get no gradient and change none of the others.
        let x = Var::rand(-1f64, 1f64, (2, 3, 6, 6), &dev).unwrap();
        let wt = Var::rand(-1f64, 1f64, (4, 3, 3, 3), &dev).unwrap();
        let b = Var::rand(-1f64, 1f64, 4, &dev).unwrap();
        let up = Tensor::rand(-1f64, 1f64, (2, 4, 6, 6), &dev).unwrap();
        let grads = |x: &Tensor, w: &Tensor, b: &Tensor| {
            (conv2d(x, w, b, 1, 1).unwrap() * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let all = grads(x.as_tensor(), wt.as_tensor(), b.as_tensor());
        let no_x = grads(&x.as_tensor().detach(), wt.as_tensor(), b.as_tensor());
        assert!(no_x.get(x.as_tensor()).is_none());
        for v in [&wt, &b] {
            assert_eq!(max_diff(no_x.get(v).unwrap(), all.get(v).unwrap()), 0.0);
        }
        let frozen = grads(
            x.as_tensor(),
            &wt.as_tensor().detach(),
            &b.as_tensor().detach(),
        );
        assert!(frozen.get(wt.as_tensor()).is_none() && frozen.get(b.as_tensor()).is_none());
        assert_eq!(max_diff(frozen.get(&x).unwrap(), all.get(&x).unwrap()), 0.0);
        let bad = conv2d(
            &Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).unwrap(),
            &Tensor::zeros((1, 3, 3, 3), DType::F32, &dev).unwrap(),
            &Tensor::zeros(1, DType::F32, &dev).unwrap(),
            1,
            1,
        );
        assert!(bad.is_err());
    }

    /// The Winograd forward, input and weight gradients (f32) against candle's conv
    /// in f64: odd sizes (partial tiles), 1×1 and 1×2 images, channel counts
    /// of all sizes, and small task budgets that split samples' tile rows
    /// across tasks. Each output is `Aᵀ (Σ_c U ⊙ V) A`; with |x|, |w| < 1 the
    /// transforms' row sums (‖Aᵀ‖∞ = 3, ‖G‖∞ = 1.5, ‖Bᵀ‖∞ = 2) bound its
    /// terms by 3²·1.5²·2² = 81 per channel where the direct sum has 9, so
    /// the tolerance is the direct one's (4 ulp per term) with 81 terms per
    /// channel.
    #[test]
    fn winograd_matches_candle_in_f32() {
        for (n, cin, cout, h, w) in [
            (2, 4, 8, 8, 8),
            (3, 5, 6, 7, 9),
            (2, 16, 4, 1, 1),
            (1, 3, 2, 1, 2),
            (2, 8, 8, 16, 6),
            (4, 32, 16, 4, 4),
        ] {
            let Reference {
                x,
                wt,
                b,
                up,
                out: theirs,
                grads: expected,
                ..
            } = reference((n, cin, h, w), (cout, 3, 1, 1));
            let f32_var = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F32).unwrap()).unwrap();
            let (x32, w32, b32) = (f32_var(&x), f32_var(&wt), f32_var(&b));
            for budget in [TILE_BUDGET, 16 * cin.max(cout), 40 * cin.max(cout)] {
                poison_scratch();
                let ours = conv2d_with(
                    x32.as_tensor(),
                    w32.as_tensor(),
                    b32.as_tensor(),
                    1,
                    1,
                    budget,
                    Path::Winograd,
                )
                .unwrap();
                let got = (ours.to_dtype(DType::F64).unwrap() * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let what = format!("{n}x{cin}->{cout} {h}x{w} budget {budget}");
                let tol = 4.0 * f32::EPSILON as f64 * (cin * 81) as f64;
                let fwd = max_diff(&ours.to_dtype(DType::F64).unwrap(), &theirs);
                assert!(fwd < tol, "forward {what}: {fwd}");
                let dx = max_diff(
                    &got.get(&x32).unwrap().to_dtype(DType::F64).unwrap(),
                    expected.get(&x).unwrap(),
                );
                let tol_dx = 4.0 * f32::EPSILON as f64 * (cout * 81) as f64;
                assert!(dx < tol_dx, "input gradient {what}: {dx}");
                // dU[ξ] sums a product per tile of dM = A dY Aᵀ (|dM| ≤ 4)
                // and V = Bᵀ d B (|V| ≤ 4), and dW = Gᵀ dU G adds up to 4
                // times that: 64 per tile where the direct sum has 1 per
                // pixel.
                let dw = max_diff(
                    &got.get(&w32).unwrap().to_dtype(DType::F64).unwrap(),
                    expected.get(&wt).unwrap(),
                );
                let tiles = n * h.div_ceil(2) * w.div_ceil(2);
                let tol_dw = 4.0 * f32::EPSILON as f64 * (tiles * 64) as f64;
                assert!(dw < tol_dw, "weight gradient {what}: {dw}");
            }
        }
    }

    /// [`super::winograd4`] against candle's conv and its gradients in
    /// f64: 3×3 stride-1 and 4×4 stride-2 layers, output sides that are and
    /// are not multiples of the 4×4 tile, channel counts that are and are not
    /// multiples of 16, batches of one to three vectors of samples. The
    /// tolerance is the transforms' rounding bound, as the other tests'.
    #[test]
    fn winograd4_matches_candle_in_f32() {
        if !super::shifted::avx512() {
            eprintln!(
                "note: the AVX-512 Winograd F(4x4) kernels do not run on this CPU; not tested"
            );
            return;
        }
        for (n, cin, cout, h, w, k, stride) in [
            (16, 16, 16, 4, 4, 3, 1),
            (16, 20, 24, 8, 8, 3, 1),
            (16, 17, 5, 6, 10, 3, 1),
            (32, 16, 8, 16, 16, 3, 1),
            // More tile columns than one f32 weight-gradient sum holds.
            (48, 4, 4, 16, 16, 3, 1),
            (16, 16, 32, 16, 16, 4, 2),
            (16, 8, 16, 8, 8, 4, 2),
            (32, 5, 7, 12, 20, 4, 2),
            (16, 3, 16, 32, 32, 4, 2),
        ] {
            let Reference {
                x,
                wt,
                b,
                up,
                out: theirs,
                grads: expected,
                ..
            } = reference((n, cin, h, w), (cout, k, stride, 1));
            let f32_var = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F32).unwrap()).unwrap();
            let (x32, w32, b32) = (f32_var(&x), f32_var(&wt), f32_var(&b));
            poison_scratch();
            let ours = conv2d_with(
                x32.as_tensor(),
                w32.as_tensor(),
                b32.as_tensor(),
                stride,
                1,
                TILE_BUDGET,
                Path::Winograd4,
            )
            .unwrap();
            let got = (ours.to_dtype(DType::F64).unwrap() * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let what = format!("{n}x{cin}->{cout} {h}x{w} k{k} stride {stride}");
            // The view of a stride-2 conv has 4 channels per input channel.
            let (view_in, view_out) = if stride == 1 {
                (cin, cout)
            } else {
                (4 * cin, cout)
            };
            let bound = super::winograd4::rounding_bound(stride);
            let tol = 4.0 * f32::EPSILON as f64 * view_in as f64 * bound;
            let fwd = max_diff(&ours.to_dtype(DType::F64).unwrap(), &theirs);
            assert!(fwd < tol, "forward {what}: {fwd}");
            let dx = max_diff(
                &got.get(&x32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&x).unwrap(),
            );
            let tol_dx = 4.0 * f32::EPSILON as f64 * view_out as f64 * bound;
            assert!(dx < tol_dx, "input gradient {what}: {dx}");
            // dU sums a product of dM = A dY Aᵀ and V = Bᵀ d B per tile, and
            // dW = Gᵀ dU G: the weight gradient's rounding bound per tile.
            let dw = max_diff(
                &got.get(&w32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&wt).unwrap(),
            );
            let tiles = n * (h / stride).div_ceil(4) * (w / stride).div_ceil(4);
            let tol_dw = 4.0
                * f32::EPSILON as f64
                * tiles as f64
                * super::winograd4::weight_grad_bound(stride);
            assert!(dw < tol_dw, "weight gradient {what}: {dw}");
            let db = max_diff(
                &got.get(&b32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&b).unwrap(),
            );
            assert!(
                db < 4.0 * f32::EPSILON as f64 * (n * h * w) as f64,
                "bias gradient {what}: {db}"
            );
            eprintln!("{what}: forward {fwd:.2e} (bound {tol:.2e}), input gradient {dx:.2e} (bound {tol_dx:.2e}), weight gradient {dw:.2e} (bound {tol_dw:.2e})");
        }
    }

    /// The f32 kernels of [`super::shifted`] against candle's conv and its
    /// gradients in f64: square and odd sizes, 3×3 and 4×4 at stride 1, 4×4
    /// at stride 2,
    /// rows of 8 to 33 pixels, grids of one and of several register blocks.
    /// On a CPU without AVX-512 the kernel never runs, and the test says so.
    #[test]
    fn shifted_kernel_matches_candle_in_f32() {
        let mut ran = 0;
        for (n, cin, cout, h, w, k, stride, padding) in [
            (2, 4, 8, 8, 8, 3, 1, 1),
            (3, 8, 4, 9, 11, 3, 1, 1),
            (2, 4, 4, 16, 33, 3, 1, 1),
            (2, 8, 4, 10, 10, 4, 1, 1),
            (1, 4, 8, 12, 10, 3, 1, 0),
            // Stride 2 through the space-to-depth view.
            (2, 3, 4, 16, 16, 4, 2, 1),
            (2, 4, 8, 18, 22, 4, 2, 1),
            (1, 4, 4, 16, 16, 4, 2, 2),
            (1, 4, 4, 18, 18, 4, 2, 0),
            // Channels that are not whole register blocks, as the decoders'
            // last layers (2 and 1 outputs).
            (2, 6, 2, 8, 9, 3, 1, 1),
            (2, 5, 1, 12, 12, 3, 1, 1),
            (2, 3, 7, 16, 16, 4, 2, 1),
            // Grids of over LANE_TERMS·16 pixels: one weight-gradient sum
            // per sample.
            (3, 4, 4, 48, 48, 3, 1, 1),
        ] {
            let Reference {
                x,
                wt,
                b,
                up,
                out: theirs,
                grads: expected,
                out_size: (ho, wo),
            } = reference((n, cin, h, w), (cout, k, stride, padding));
            let f32_var = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F32).unwrap()).unwrap();
            let (x32, w32, b32) = (f32_var(&x), f32_var(&wt), f32_var(&b));
            let g = super::Geometry {
                n,
                c: cin,
                h,
                w,
                c_out: cout,
                k,
                stride,
                padding,
                budget: TILE_BUDGET,
                direct: false,
                shifted: false,
                winograd: false,
                winograd4: false,
                winograd4_weight_grad: false,
            };
            if !super::shifted::avx512() {
                eprintln!("note: the AVX-512 conv kernel does not run on this CPU; not tested");
                return;
            }
            assert!(
                super::shifted::applies(&g),
                "the kernel does not take {n}x{cin}->{cout} {h}x{w} k{k} stride {stride}"
            );
            ran += 1;
            poison_scratch();
            let ours = conv2d_with(
                x32.as_tensor(),
                w32.as_tensor(),
                b32.as_tensor(),
                stride,
                padding,
                TILE_BUDGET,
                Path::Shifted,
            )
            .unwrap();
            let got = (ours.to_dtype(DType::F64).unwrap() * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            // f32 sums of C·k·k products of magnitude below 1.
            let tol = 4.0 * f32::EPSILON as f64 * (cin * k * k) as f64;
            let fwd = max_diff(&ours.to_dtype(DType::F64).unwrap(), &theirs);
            assert!(fwd < tol, "forward {n}x{cin}->{cout} {h}x{w} k{k}: {fwd}");
            let dx = max_diff(
                &got.get(&x32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&x).unwrap(),
            );
            let tol_dx = 4.0 * f32::EPSILON as f64 * (cout * k * k) as f64;
            assert!(
                dx < tol_dx,
                "input gradient {n}x{cin}->{cout} {h}x{w} k{k}: {dx}"
            );
            // Each weight sums N·H_out·W_out products of magnitude below 1.
            let dw = max_diff(
                &got.get(&w32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&wt).unwrap(),
            );
            let tol_dw = 4.0 * f32::EPSILON as f64 * (n * ho * wo) as f64;
            assert!(
                dw < tol_dw,
                "weight gradient {n}x{cin}->{cout} {h}x{w} k{k}: {dw}"
            );
            let db = max_diff(
                &got.get(&b32).unwrap().to_dtype(DType::F64).unwrap(),
                expected.get(&b).unwrap(),
            );
            assert!(
                db < tol_dw,
                "bias gradient {n}x{cin}->{cout} {h}x{w} k{k}: {db}"
            );
        }
        assert_eq!(ran, 13);
    }
}
