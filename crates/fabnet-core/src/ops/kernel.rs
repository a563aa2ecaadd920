//! CPU kernels of the warp ops on plain contiguous slices.
//!
//! Bilinear grid sampling normally takes the fast path: each task copies its
//! input item into a zero-padded channels-last buffer, so that a sample's
//! 2x2 cell is two short contiguous runs and needs no bounds logic, computes
//! each grid row's corner offsets and weights once in a loop that vectorises,
//! and the backward scatters into a channels-last accumulator of the same
//! layout that is written out to (C, H, W) at the end. The hot loops are
//! compiled for AVX2 when the CPU has it (runtime detection; the build
//! targets baseline x86-64), and the f32 backward's per-sample loop for up to
//! four channels is written with AVX2 intrinsics.
//!
//! The general path (nearest mode, grids much smaller than the input, planes
//! too large for 32-bit offsets) computes each sample's corner offsets and
//! weights once per output row into a small reused buffer, then runs over the
//! channels, so the per-channel inner loop is only gathers and multiply-adds.
//!
//! Work is split into (batch, row-block) tasks on the current rayon pool.
//! The backward scatter into the input gradient is race-free without locks:
//! each task owns either the whole gradient plane set of its batch item or,
//! when there are fewer batch items than threads, a private partial buffer
//! summed afterwards.

use crate::memory::zeros;
use candle_core::WithDType;
use rayon::prelude::*;

use super::{PaddingMode, SampleMode};

/// Float types the CPU kernels run on.
pub(crate) trait Real: WithDType {
    fn floor(self) -> Self;
    fn round_even(self) -> Self;
    fn finite(self) -> bool;
    /// Saturating conversion toward zero.
    fn to_i32(self) -> i32;
    /// Conversion toward zero that vectorises, unlike the saturating one.
    ///
    /// # Safety
    /// `self` must be finite and its integer part must fit in an i32.
    unsafe fn to_i32_unchecked(self) -> i32;
    fn from_i32(v: i32) -> Self;
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            #[inline(always)]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline(always)]
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            #[inline(always)]
            fn finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn to_i32(self) -> i32 {
                self as i32
            }
            #[inline(always)]
            unsafe fn to_i32_unchecked(self) -> i32 {
                // SAFETY: guaranteed by the caller.
                unsafe { self.to_int_unchecked() }
            }
            #[inline(always)]
            fn from_i32(v: i32) -> Self {
                v as $t
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

/// A raw pointer that tasks use to write disjoint regions of one buffer.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: every task writes only regions no other task touches (see callers),
// and the buffer outlives the parallel section.
unsafe impl<T: Send> Send for SyncPtr<T> {}
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// Sets `start..start + len` to all-zero bytes (0.0 for floats).
    ///
    /// # Safety
    /// As for [`SyncPtr::slice`].
    #[inline(always)]
    unsafe fn zero(&self, start: usize, len: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(start).write_bytes(0, len) }
    }

    /// # Safety
    /// `i` must lie inside the buffer, and no other task may access it.
    #[inline(always)]
    unsafe fn write(&self, i: usize, v: T) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(i).write(v) }
    }

    /// # Safety
    /// `start..start + len` must lie inside the buffer and must not be accessed
    /// by any other task while the returned slice lives.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// Sizes of one grid-sample call: input (N, C, H, W), grid (N, Ho, Wo, 2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GsDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Geometry of one grid row, one entry per sample, as a structure of arrays
/// so that the branch-free loop filling it vectorises. The corners of a
/// sample are nw, ne, sw, se: offsets `base`, `base + 1`, `base + W`,
/// `base + W + 1` in an (H, W) plane.
struct RowTaps<T> {
    /// Offset of the nw corner, y0 · W + x0 (may lie outside the plane).
    base: Vec<i32>,
    /// Bit k set: corner k lies inside the input.
    valid: Vec<u8>,
    /// Interpolation weights of the four corners (nearest: 1 for corner 0).
    w: [Vec<T>; 4],
    /// 1 − fx, fx, 1 − fy, fy: the position inside the cell.
    wx0: Vec<T>,
    wx1: Vec<T>,
    wy0: Vec<T>,
    wy1: Vec<T>,
    /// d(pixel x)/d(grid x) and d(pixel y)/d(grid y); zero where border
    /// clamping is active or the point is not finite.
    mx: Vec<T>,
    my: Vec<T>,
}

const ALL: u8 = 0b1111;

impl<T: Real> RowTaps<T> {
    fn new(wo: usize) -> Self {
        let z = || vec![T::from_f64(0.0); wo];
        Self {
            base: vec![0; wo],
            valid: vec![0; wo],
            w: [z(), z(), z(), z()],
            wx0: z(),
            wx1: z(),
            wy0: z(),
            wy1: z(),
            mx: z(),
            my: z(),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct GsParams {
    pub mode: SampleMode,
    pub padding: PaddingMode,
    pub align_corners: bool,
}

/// Maps grid coordinates to pixel coordinates along one axis, with padding,
/// branch-free so that the loop over a row vectorises.
#[derive(Clone, Copy)]
struct AxisMap<T> {
    /// Unnormalisation as ((g + 1) · m1 − c1) · m2, which reproduces
    /// PyTorch's operation order (and rounding) for both alignments.
    m1: T,
    c1: T,
    m2: T,
    /// Clamp range: [0, size − 1] for border padding, unbounded for zeros.
    lo: T,
    hi: T,
    /// d(pixel)/d(grid) where the clamp is inactive.
    scale: T,
}

impl<T: Real> AxisMap<T> {
    fn new(size: usize, p: GsParams) -> Self {
        let s = size as f64;
        let (m1, c1, m2, scale) = if p.align_corners {
            (0.5, 0.0, s - 1.0, (s - 1.0) * 0.5)
        } else {
            (s, 1.0, 0.5, s * 0.5)
        };
        let (lo, hi) = match p.padding {
            PaddingMode::Zeros => (f64::NEG_INFINITY, f64::INFINITY),
            PaddingMode::Border => (0.0, s - 1.0),
        };
        Self {
            m1: T::from_f64(m1),
            c1: T::from_f64(c1),
            m2: T::from_f64(m2),
            lo: T::from_f64(lo),
            hi: T::from_f64(hi),
            scale: T::from_f64(scale),
        }
    }

    /// Pixel coordinate after padding and its derivative with respect to
    /// `g`. The clamp passes no gradient on the border itself, as PyTorch's.
    /// A non-finite `g`, or one so large that the pixel coordinate overflows
    /// under zero padding, lands far outside the input with a zero derivative.
    #[inline(always)]
    fn map(&self, g: T) -> (T, T) {
        let zero = T::from_f64(0.0);
        let x = ((g + T::from_f64(1.0)) * self.m1 - self.c1) * self.m2;
        let inside = x > self.lo && x < self.hi;
        let d = if inside { self.scale } else { zero };
        let x = clamp(x, self.lo, self.hi);
        if g.finite() && x.finite() {
            (x, d)
        } else {
            (T::from_f64(-4.0), zero)
        }
    }
}

/// floor(x) for x in [-2, 2^24], without a libm call (the baseline x86-64
/// target has no floor instruction).
///
/// # Safety
/// `x` must be finite and within i32 range: the callers clamp a finite
/// pixel coordinate ([`AxisMap::map`] never returns a non-finite one) to
/// [-2, size], and the input size is bounded by `validate`.
#[inline(always)]
unsafe fn floor_i32<T: Real>(x: T) -> i32 {
    // SAFETY: guaranteed by the caller.
    let t = unsafe { x.to_i32_unchecked() };
    t - (T::from_i32(t) > x) as i32
}

#[inline(always)]
fn clamp<T: Real>(x: T, lo: T, hi: T) -> T {
    let x = if x < lo { lo } else { x };
    if x > hi {
        hi
    } else {
        x
    }
}

/// The bilinear cell of grid points on an `h × w` input: the two axis
/// maps and the clamp that keeps the integer conversion exact.
struct CellLocator<T> {
    ax: AxisMap<T>,
    ay: AxisMap<T>,
    wlim: T,
    hlim: T,
    lo: T,
}

/// Where one grid point falls: pixel coordinates `(ix, iy)`, their
/// derivatives `(mx, my)` with respect to the grid, and the cell's top-left
/// corner `(x0, y0)`.
struct Cell<T> {
    ix: T,
    iy: T,
    mx: T,
    my: T,
    x0: i32,
    y0: i32,
}

impl<T: Real> CellLocator<T> {
    fn new(h: usize, w: usize, p: GsParams) -> Self {
        // Cells are clamped to [-2, size] before the integer conversion;
        // that only moves cells whose corners all lie outside, whose weights
        // are then never used, and keeps huge coordinates overflow-free.
        Self {
            ax: AxisMap::new(w, p),
            ay: AxisMap::new(h, p),
            wlim: T::from_f64(w as f64),
            hlim: T::from_f64(h as f64),
            lo: T::from_f64(-2.0),
        }
    }

    #[inline(always)]
    fn locate(&self, gx: T, gy: T) -> Cell<T> {
        let (ix, mx) = self.ax.map(gx);
        let (iy, my) = self.ay.map(gy);
        // SAFETY: finite (from `map`) and clamped to [-2, size].
        let (x0, y0) = unsafe {
            (
                floor_i32(clamp(ix, self.lo, self.wlim)),
                floor_i32(clamp(iy, self.lo, self.hlim)),
            )
        };
        Cell {
            ix,
            iy,
            mx,
            my,
            x0,
            y0,
        }
    }
}

/// Fills `t` with the geometry of one grid row (`wo` points, x first).
fn compute_taps<T: Real>(t: &mut RowTaps<T>, grid_row: &[T], h: usize, w: usize, p: GsParams) {
    let one = T::from_f64(1.0);
    let zero = T::from_f64(0.0);
    let cells = CellLocator::<T>::new(h, w, p);
    let (wi, hi) = (w as i32, h as i32);
    let n = t.base.len();
    let grid_row = &grid_row[..2 * n];
    match p.mode {
        SampleMode::Bilinear => {
            // Equal-length slices let the compiler drop bounds checks and
            // vectorise the loop.
            let (base, valid) = (&mut t.base[..n], &mut t.valid[..n]);
            let [w0, w1, w2, w3] = &mut t.w;
            let (w0, w1, w2, w3) = (&mut w0[..n], &mut w1[..n], &mut w2[..n], &mut w3[..n]);
            let (wx0s, wx1s) = (&mut t.wx0[..n], &mut t.wx1[..n]);
            let (wy0s, wy1s) = (&mut t.wy0[..n], &mut t.wy1[..n]);
            let (mxs, mys) = (&mut t.mx[..n], &mut t.my[..n]);
            for i in 0..n {
                let Cell {
                    ix,
                    iy,
                    mx,
                    my,
                    x0,
                    y0,
                } = cells.locate(grid_row[2 * i], grid_row[2 * i + 1]);
                let (x0f, y0f) = (T::from_i32(x0), T::from_i32(y0));
                let wx0 = (x0f + one) - ix;
                let wx1 = ix - x0f;
                let wy0 = (y0f + one) - iy;
                let wy1 = iy - y0f;
                let vx0 = (x0 >= 0) & (x0 < wi);
                let vx1 = (x0 >= -1) & (x0 < wi - 1);
                let vy0 = (y0 >= 0) & (y0 < hi);
                let vy1 = (y0 >= -1) & (y0 < hi - 1);
                valid[i] = (vx0 & vy0) as u8
                    | ((vx1 & vy0) as u8) << 1
                    | ((vx0 & vy1) as u8) << 2
                    | ((vx1 & vy1) as u8) << 3;
                base[i] = y0 * wi + x0;
                w0[i] = wx0 * wy0;
                w1[i] = wx1 * wy0;
                w2[i] = wx0 * wy1;
                w3[i] = wx1 * wy1;
                wx0s[i] = wx0;
                wx1s[i] = wx1;
                wy0s[i] = wy0;
                wy1s[i] = wy1;
                mxs[i] = mx;
                mys[i] = my;
            }
        }
        SampleMode::Nearest => {
            for (i, g) in grid_row.chunks_exact(2).enumerate() {
                let (ix, _) = cells.ax.map(g[0]);
                let (iy, _) = cells.ay.map(g[1]);
                let x = clamp(ix.round_even(), cells.lo, cells.wlim).to_i32();
                let y = clamp(iy.round_even(), cells.lo, cells.hlim).to_i32();
                let inside = (0..wi).contains(&x) && (0..hi).contains(&y);
                t.valid[i] = inside as u8;
                t.base[i] = y * wi + x;
                t.w[0][i] = one;
                for k in 1..4 {
                    t.w[k][i] = zero;
                }
                t.mx[i] = zero;
                t.my[i] = zero;
            }
        }
    }
}

/// Splits `rows` rows into at most `parts` blocks; returns the block length.
fn blocks(rows: usize, parts: usize) -> usize {
    rows.div_ceil(parts.clamp(1, rows.max(1)))
}

/// A vector of `len` elements that the caller must write in full before
/// reading: the outputs below are written element by element, so zeroing
/// them first would be a wasted pass over memory.
struct Uninit<T> {
    buf: Vec<T>,
    len: usize,
}

impl<T> Uninit<T> {
    fn new(len: usize) -> Self {
        Self {
            buf: Vec::with_capacity(len),
            len,
        }
    }

    fn ptr(&mut self) -> SyncPtr<T> {
        SyncPtr(self.buf.as_mut_ptr())
    }

    /// # Safety
    /// Every element must have been written through [`Uninit::ptr`].
    unsafe fn assume_init(mut self) -> Vec<T> {
        // SAFETY: capacity is `len` and the caller wrote all elements.
        unsafe { self.buf.set_len(self.len) };
        self.buf
    }
}

/// Forward grid sample: input (N, C, H, W), grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo).
pub(crate) fn grid_sample_fwd<T: Real>(input: &[T], grid: &[T], d: GsDims, p: GsParams) -> Vec<T> {
    if fast_path(d, p) {
        return grid_sample_fwd_fast(input, grid, d, p);
    }
    let GsDims { n, c, h, w, ho, wo } = d;
    let plane_in = h * w;
    let plane_out = ho * wo;
    let mut out = Uninit::<T>::new(n * c * plane_out);
    if n * c * plane_out > 0 {
        // Several row blocks per thread keep the threads evenly loaded.
        let threads = rayon::current_num_threads();
        let rows_per_task = blocks(ho, (4 * threads).div_ceil(n));
        let tasks_per_item = ho.div_ceil(rows_per_task);
        let out_ptr = out.ptr();
        (0..n * tasks_per_item).into_par_iter().for_each_init(
            || RowTaps::<T>::new(wo),
            |taps, task| {
                let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
                let src = &input[b * c * plane_in..(b + 1) * c * plane_in];
                let y_end = ((blk + 1) * rows_per_task).min(ho);
                for oy in blk * rows_per_task..y_end {
                    let g = &grid[(b * ho + oy) * wo * 2..(b * ho + oy + 1) * wo * 2];
                    compute_taps(taps, g, h, w, p);
                    let first = (b * c * ho + oy) * wo;
                    for i in 0..wo {
                        for ch in 0..c {
                            let v = corners(&src[ch * plane_in..], w, taps, i);
                            let o = taps.w[0][i] * v[0]
                                + taps.w[1][i] * v[1]
                                + taps.w[2][i] * v[2]
                                + taps.w[3][i] * v[3];
                            // SAFETY: element (b, ch, oy, i) belongs to this
                            // task alone: tasks partition (b, oy) and write
                            // all channels of their rows.
                            unsafe { out_ptr.write(first + ch * plane_out + i, o) };
                        }
                    }
                }
            },
        );
    }
    // SAFETY: the tasks cover every (b, oy) row of every channel.
    unsafe { out.assume_init() }
}

/// The corner values of sample `i` in `plane` (row length `w`); zero for
/// corners outside the input.
#[inline(always)]
fn corners<T: Real>(plane: &[T], w: usize, t: &RowTaps<T>, i: usize) -> [T; 4] {
    let base = t.base[i] as isize;
    if t.valid[i] == ALL {
        let b = base as usize;
        debug_assert!(b + w + 1 < plane.len());
        // SAFETY: compute_taps sets all four bits only when the whole 2x2
        // cell lies inside the (H, W) plane; b + w + 1 is its last offset.
        unsafe {
            [
                *plane.get_unchecked(b),
                *plane.get_unchecked(b + 1),
                *plane.get_unchecked(b + w),
                *plane.get_unchecked(b + w + 1),
            ]
        }
    } else {
        let mut v = [T::from_f64(0.0); 4];
        let delta = [0, 1, w as isize, w as isize + 1];
        for k in 0..4 {
            if t.valid[i] & (1 << k) != 0 {
                v[k] = plane[(base + delta[k]) as usize];
            }
        }
        v
    }
}

/// Backward grid sample: gradients with respect to the input (N, C, H, W)
/// if `want_input` and the grid (N, Ho, Wo, 2) if `want_grid`; a gradient
/// that is not wanted comes back empty.
pub(crate) fn grid_sample_bwd<T: Real>(
    grad_out: &[T],
    input: &[T],
    grid: &[T],
    d: GsDims,
    p: GsParams,
    want_input: bool,
    want_grid: bool,
) -> (Vec<T>, Vec<T>) {
    let GsDims { n, c, h, w, ho, wo } = d;
    let zero = T::from_f64(0.0);
    let plane_in = h * w;
    let len_in = if want_input { n * c * plane_in } else { 0 };
    if n * ho * wo == 0 {
        // No samples: the input gradient is zero and the grid has no elements.
        return (vec![zero; len_in], Vec::new());
    }
    if fast_path(d, p) {
        return grid_sample_bwd_fast(grad_out, input, grid, d, p, want_input, want_grid);
    }
    // Both gradients are written in full by the tasks below (each task zeroes
    // the input-gradient region it owns first, in parallel and just before
    // scattering into it), so neither is zeroed here.
    let mut gi_all = Uninit::<T>::new(len_in);
    let mut gg_all = Uninit::<T>::new(if want_grid { n * ho * wo * 2 } else { 0 });
    let threads = rayon::current_num_threads();
    // With enough batch items every task owns one item's input gradient;
    // otherwise items are split into row blocks that scatter into private
    // partial buffers, summed at the end.
    let (rows_per_task, tasks_per_item) = if want_input && n >= threads {
        (ho, 1)
    } else {
        let parts = if want_input { threads } else { 4 * threads };
        let r = blocks(ho, parts.div_ceil(n.max(1)));
        (r, ho.div_ceil(r))
    };
    let partial = want_input && tasks_per_item > 1;
    let mut partials = Uninit::<T>::new(if partial {
        n * tasks_per_item * c * plane_in
    } else {
        0
    });
    let gi_ptr = if partial {
        partials.ptr()
    } else {
        gi_all.ptr()
    };
    let gg_ptr = gg_all.ptr();
    let grid_grad = want_grid && p.mode == SampleMode::Bilinear;
    (0..n * tasks_per_item).into_par_iter().for_each_init(
        || (RowTaps::<T>::new(wo), vec![zero; 2 * wo]),
        |(taps, acc), task| {
            let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
            let src = &input[b * c * plane_in..(b + 1) * c * plane_in];
            let gi: &mut [T] = if want_input {
                let start = if partial { task } else { b } * c * plane_in;
                // SAFETY: the input-gradient region of a task is its batch
                // item's planes (one task per item) or its own partial buffer;
                // it is zeroed before the slice is made.
                unsafe {
                    gi_ptr.zero(start, c * plane_in);
                    gi_ptr.slice(start, c * plane_in)
                }
            } else {
                &mut []
            };
            let y_end = ((blk + 1) * rows_per_task).min(ho);
            for oy in blk * rows_per_task..y_end {
                let row = (b * ho + oy) * wo;
                compute_taps(taps, &grid[row * 2..(row + wo) * 2], h, w, p);
                let go = &grad_out[(b * c * ho + oy) * wo..];
                let rows = BwdRow {
                    c,
                    w,
                    plane_in,
                    plane_out: ho * wo,
                };
                match (want_input, grid_grad) {
                    (true, true) => rows.run::<T, true, true>(gi, acc, src, go, taps),
                    (true, false) => rows.run::<T, true, false>(gi, acc, src, go, taps),
                    (false, true) => rows.run::<T, false, true>(gi, acc, src, go, taps),
                    (false, false) => acc.iter_mut().for_each(|a| *a = zero),
                }
                if want_grid {
                    // SAFETY: grid-gradient row (b, oy) belongs to this task.
                    let gg = unsafe { gg_ptr.slice(row * 2, wo * 2) };
                    for (i, (dst, a)) in gg.chunks_exact_mut(2).zip(acc.chunks_exact(2)).enumerate()
                    {
                        dst[0] = a[0] * taps.mx[i];
                        dst[1] = a[1] * taps.my[i];
                    }
                }
            }
        },
    );
    if partial {
        sum_partials(&mut gi_all, partials, c * plane_in, tasks_per_item);
    }
    // SAFETY: every task (or the reduction) wrote its batch items' input
    // gradient, and every (b, oy) grid-gradient row when wanted.
    unsafe { (gi_all.assume_init(), gg_all.assume_init()) }
}

/// Sums the `per_item` partial input gradients of each item (`item`
/// elements each, all written) into `dst`.
fn sum_partials<T: Real>(dst: &mut Uninit<T>, partials: Uninit<T>, item: usize, per_item: usize) {
    // SAFETY: the callers' tasks wrote every partial buffer in full.
    let partials = unsafe { partials.assume_init() };
    let gi_ptr = dst.ptr();
    partials
        .par_chunks(item * per_item)
        .enumerate()
        .for_each(|(b, parts)| {
            let (first, rest) = parts.split_at(item);
            // SAFETY: item b's planes are written by this task alone; they
            // are zeroed before the slice is made.
            let dst = unsafe {
                gi_ptr.zero(b * item, item);
                gi_ptr.slice(b * item, item)
            };
            dst.copy_from_slice(first);
            for part in rest.chunks_exact(item) {
                dst.iter_mut().zip(part).for_each(|(d, s)| *d += *s);
            }
        });
}

/// Sizes for [`BwdRow::run`].
struct BwdRow {
    c: usize,
    w: usize,
    plane_in: usize,
    plane_out: usize,
}

impl BwdRow {
    /// One output row of the backward pass over all channels: scatters
    /// grad_out into the input gradient planes `gi` (`GI`) and sets `acc` to
    /// d(out)/d(pixel x, pixel y) · grad_out summed over channels (`GG`).
    /// Channels are the inner loop, so a sample's geometry is loaded once and
    /// the scatters into different planes overlap.
    #[inline(always)]
    fn run<T: Real, const GI: bool, const GG: bool>(
        &self,
        gi: &mut [T],
        acc: &mut [T],
        src: &[T],
        go: &[T],
        t: &RowTaps<T>,
    ) {
        let BwdRow {
            c,
            w,
            plane_in,
            plane_out,
        } = *self;
        let zero = T::from_f64(0.0);
        for (i, a) in acc.chunks_exact_mut(2).enumerate() {
            let (mut ax, mut ay) = (zero, zero);
            for ch in 0..c {
                let g = go[ch * plane_out + i];
                if GG {
                    let v = corners(&src[ch * plane_in..], w, t, i);
                    ax += g * (t.wy0[i] * (v[1] - v[0]) + t.wy1[i] * (v[3] - v[2]));
                    ay += g * (t.wx0[i] * (v[2] - v[0]) + t.wx1[i] * (v[3] - v[1]));
                }
                if GI {
                    let plane = &mut gi[ch * plane_in..(ch + 1) * plane_in];
                    let base = t.base[i] as isize;
                    if t.valid[i] == ALL {
                        let b = base as usize;
                        debug_assert!(b + w + 1 < plane.len());
                        // SAFETY: as in `corners`, the whole cell lies in the plane.
                        unsafe {
                            *plane.get_unchecked_mut(b) += t.w[0][i] * g;
                            *plane.get_unchecked_mut(b + 1) += t.w[1][i] * g;
                            *plane.get_unchecked_mut(b + w) += t.w[2][i] * g;
                            *plane.get_unchecked_mut(b + w + 1) += t.w[3][i] * g;
                        }
                    } else {
                        let delta = [0, 1, w as isize, w as isize + 1];
                        for k in 0..4 {
                            if t.valid[i] & (1 << k) != 0 {
                                plane[(base + delta[k]) as usize] += t.w[k][i] * g;
                            }
                        }
                    }
                }
            }
            a[0] = ax;
            a[1] = ay;
        }
    }
}

// ------------------------------------------------------------------------
// Bilinear fast path on a padded, channels-last copy of each input item.
//
// Every sample reads (and, backward, scatters into) a whole 2x2 cell of
// channel vectors: in an (H, W, C) layout a cell row is two adjacent pixels,
// so the four corners are four short contiguous runs instead of 4·C scattered
// elements, and the channel loop is a fixed-width vector operation. The copy
// has two rows and columns of zeros above and left of the image and one below
// and right, so every cell a sample can touch lies inside it: corners outside
// the image read zeros and scatter into the margin, which is discarded, and
// the loops need no per-corner bounds logic. Samples whose cell has no corner
// inside the image point at the all-zero cell in the top-left margin with
// weights of zero.

/// Channels are processed in groups of this many (the last one zero-padded).
const LANES: usize = 4;

/// Geometry of the padded channels-last copy of one (C, H, W) item.
#[derive(Clone, Copy)]
struct Staged {
    c: usize,
    h: usize,
    w: usize,
    /// C rounded up to a multiple of [`LANES`]: the pixel stride.
    cp: usize,
    /// Padded row length in pixels, W + 3.
    pw: usize,
}

impl Staged {
    fn new(c: usize, h: usize, w: usize) -> Self {
        Self {
            c,
            h,
            w,
            cp: c.div_ceil(LANES) * LANES,
            pw: w + 3,
        }
    }

    /// Elements of the padded copy, (H + 3) · (W + 3) · Cp.
    fn len(&self) -> usize {
        (self.h + 3) * self.pw * self.cp
    }

    /// Elements between vertically adjacent pixels.
    fn row_stride(&self) -> usize {
        self.pw * self.cp
    }

    /// Offset of image pixel (y, x), channel 0.
    fn at(&self, y: usize, x: usize) -> usize {
        ((y + 2) * self.pw + x + 2) * self.cp
    }

    /// The pixel stride, a compile-time constant when `ONE` (a single
    /// channel group) so that the per-sample loops unroll.
    #[inline(always)]
    fn stride<const ONE: bool>(&self) -> usize {
        if ONE {
            LANES
        } else {
            self.cp
        }
    }

    /// The source rows of channel group `grp` at image row `y` of a
    /// (C, H, W) item; channels past C read `zeros`.
    #[inline(always)]
    fn group_rows<'a, T>(
        &self,
        src: &'a [T],
        zeros: &'a [T],
        grp: usize,
        y: usize,
    ) -> [&'a [T]; LANES] {
        let (h, w) = (self.h, self.w);
        std::array::from_fn(|l| {
            let ch = grp * LANES + l;
            if ch < self.c {
                &src[(ch * h + y) * w..][..w]
            } else {
                &zeros[..w]
            }
        })
    }

    /// Copies a (C, H, W) item into the image part of `dst`, whose margins
    /// are zero and stay so. `zeros` holds at least W zeros.
    #[inline(always)]
    fn stage<T: Real, const ONE: bool>(&self, dst: &mut [T], src: &[T], zeros: &[T]) {
        let (w, cp) = (self.w, self.stride::<ONE>());
        for y in 0..self.h {
            let at = self.at(y, 0);
            let row = &mut dst[at..at + w * cp];
            for grp in 0..cp / LANES {
                let [r0, r1, r2, r3] = self.group_rows(src, zeros, grp, y);
                let px = row.chunks_exact_mut(cp);
                for ((((px, &a), &b), &c), &d) in px.zip(r0).zip(r1).zip(r2).zip(r3) {
                    px[grp * LANES..][..LANES].copy_from_slice(&[a, b, c, d]);
                }
            }
        }
    }

    /// Writes the image part of the accumulated gradient `acc` to the
    /// (C, H, W) item at `dst + at`, every element once, and zeroes `acc`
    /// for the next item. `sink` is scratch of at least LANES · W elements.
    ///
    /// # Safety
    /// The caller must own `at..at + C·H·W` of the buffer behind `dst`.
    #[inline(always)]
    unsafe fn unstage<T: Real, const ONE: bool>(
        &self,
        dst: SyncPtr<T>,
        at: usize,
        acc: &mut [T],
        sink: &mut [T],
    ) {
        let (c, h, w, cp) = (self.c, self.h, self.w, self.stride::<ONE>());
        let zero = T::from_f64(0.0);
        let dst = dst.0.cast::<std::mem::MaybeUninit<T>>();
        let sink = sink.as_mut_ptr().cast::<std::mem::MaybeUninit<T>>();
        // Margins collect the contributions of corners outside the image:
        // they are zeroed with the rest, each image row (with its side
        // margins) right after it was read, while it is in cache.
        let line = self.pw * cp;
        acc[..2 * line].iter_mut().for_each(|v| *v = zero);
        acc[(h + 2) * line..].iter_mut().for_each(|v| *v = zero);
        for y in 0..h {
            let row = &acc[self.at(y, 0)..self.at(y, 0) + w * cp];
            for grp in 0..cp / LANES {
                // Disjoint rows of W elements: channel rows of the caller's
                // item, or for the channels past C that only pad the group,
                // the lane's own part of the sink.
                let [o0, o1, o2, o3]: [&mut [std::mem::MaybeUninit<T>]; LANES] =
                    std::array::from_fn(|l| {
                        let ch = grp * LANES + l;
                        // SAFETY: see above; the caller owns the item, and
                        // the sink holds LANES · W elements.
                        unsafe {
                            let p = if ch < c {
                                dst.add(at + (ch * h + y) * w)
                            } else {
                                sink.add(l * w)
                            };
                            std::slice::from_raw_parts_mut(p, w)
                        }
                    });
                let px = row.chunks_exact(cp);
                for ((((px, a), b), c), d) in px.zip(o0).zip(o1).zip(o2).zip(o3) {
                    let v = &px[grp * LANES..][..LANES];
                    a.write(v[0]);
                    b.write(v[1]);
                    c.write(v[2]);
                    d.write(v[3]);
                }
            }
            acc[(y + 2) * line..(y + 3) * line]
                .iter_mut()
                .for_each(|v| *v = zero);
        }
    }
}

/// Per-sample geometry of one grid row for the fast path, as a structure of
/// arrays so that the branch-free loop filling it vectorises.
struct CellTaps<T> {
    /// Padded pixel index of the cell's top-left corner (0 for dead samples).
    pix: Vec<u32>,
    /// Corner weights nw, ne, sw, se; zero for dead samples.
    w: [Vec<T>; 4],
    /// 1 − fx, fx, 1 − fy, fy; zero for dead samples.
    wx0: Vec<T>,
    wx1: Vec<T>,
    wy0: Vec<T>,
    wy1: Vec<T>,
    /// d(pixel)/d(grid) per axis; zero for dead samples.
    mx: Vec<T>,
    my: Vec<T>,
    /// Whether some corner of the cell lies inside the image.
    live: Vec<bool>,
}

impl<T: Real> CellTaps<T> {
    fn new(wo: usize) -> Self {
        let z = || vec![T::from_f64(0.0); wo];
        Self {
            pix: vec![0; wo],
            w: [z(), z(), z(), z()],
            wx0: z(),
            wx1: z(),
            wy0: z(),
            wy1: z(),
            mx: z(),
            my: z(),
            live: vec![false; wo],
        }
    }

    /// Fills the taps for one grid row (`wo` points, x first).
    #[inline(always)]
    fn compute(&mut self, grid_row: &[T], s: Staged, p: GsParams) {
        let one = T::from_f64(1.0);
        let zero = T::from_f64(0.0);
        let cells = CellLocator::<T>::new(s.h, s.w, p);
        let (wi, hi, pw) = (s.w as i32, s.h as i32, s.pw as i32);
        let n = self.pix.len();
        let grid_row = &grid_row[..2 * n];
        let pix = &mut self.pix[..n];
        let live = &mut self.live[..n];
        let [w0, w1, w2, w3] = &mut self.w;
        let (w0, w1, w2, w3) = (&mut w0[..n], &mut w1[..n], &mut w2[..n], &mut w3[..n]);
        let (wx0s, wx1s) = (&mut self.wx0[..n], &mut self.wx1[..n]);
        let (wy0s, wy1s) = (&mut self.wy0[..n], &mut self.wy1[..n]);
        let (mxs, mys) = (&mut self.mx[..n], &mut self.my[..n]);
        for i in 0..n {
            let Cell {
                ix,
                iy,
                mx,
                my,
                x0,
                y0,
            } = cells.locate(grid_row[2 * i], grid_row[2 * i + 1]);
            let (x0f, y0f) = (T::from_i32(x0), T::from_i32(y0));
            let ok = (x0 >= -1) & (x0 < wi) & (y0 >= -1) & (y0 < hi);
            let keep = |v: T| if ok { v } else { zero };
            let wx0 = keep((x0f + one) - ix);
            let wx1 = keep(ix - x0f);
            let wy0 = keep((y0f + one) - iy);
            let wy1 = keep(iy - y0f);
            pix[i] = if ok {
                ((y0 + 2) * pw + x0 + 2) as u32
            } else {
                0
            };
            live[i] = ok;
            w0[i] = wx0 * wy0;
            w1[i] = wx1 * wy0;
            w2[i] = wx0 * wy1;
            w3[i] = wx1 * wy1;
            wx0s[i] = wx0;
            wx1s[i] = wx1;
            wy0s[i] = wy0;
            wy1s[i] = wy1;
            mxs[i] = keep(mx);
            mys[i] = keep(my);
        }
    }
}

/// Whether [`grid_sample_fwd`] and [`grid_sample_bwd`] take the fast path:
/// bilinear, the padded plane's offsets fit in u32/i32, and the grid is not
/// so much smaller than the input that copying the input would dominate.
fn fast_path(d: GsDims, p: GsParams) -> bool {
    p.mode == SampleMode::Bilinear
        && (d.h + 3)
            .checked_mul(d.w + 3)
            .is_some_and(|v| v < i32::MAX as usize)
        && 4 * d.ho * d.wo >= d.h * d.w
}

/// Loads `LANES` elements at `i`.
///
/// # Safety
/// `i + LANES <= v.len()`.
#[inline(always)]
unsafe fn load<T: Real>(v: &[T], i: usize) -> [T; LANES] {
    debug_assert!(i + LANES <= v.len());
    // SAFETY: guaranteed by the caller.
    unsafe { std::array::from_fn(|l| *v.get_unchecked(i + l)) }
}

/// Adds `k · g` to the `LANES` elements at `i`.
///
/// # Safety
/// `i + LANES <= v.len()`.
#[inline(always)]
unsafe fn add_scaled<T: Real>(v: &mut [T], i: usize, k: T, g: &[T; LANES]) {
    debug_assert!(i + LANES <= v.len());
    for (l, &g) in g.iter().enumerate() {
        // SAFETY: guaranteed by the caller.
        unsafe { *v.get_unchecked_mut(i + l) += k * g };
    }
}

/// Per-thread buffers of the fast path.
struct FastScratch<T> {
    /// The padded channels-last input item.
    input: Vec<T>,
    /// The padded channels-last input-gradient accumulator.
    grad: Vec<T>,
    /// One output (forward) or upstream-gradient (backward) row, (Wo, Cp).
    row: Vec<T>,
    /// W zeros, then LANES · W scratch: the stand-in rows of padding
    /// channels when staging and unstaging.
    zeros: Vec<T>,
    sink: Vec<T>,
    taps: CellTaps<T>,
}

impl<T: Real> FastScratch<T> {
    fn new(s: Staged, wo: usize, want_grad: bool) -> Self {
        let zero = T::from_f64(0.0);
        Self {
            input: vec![zero; s.len()],
            grad: if want_grad {
                vec![zero; s.len()]
            } else {
                Vec::new()
            },
            row: vec![zero; wo * s.cp],
            zeros: vec![zero; s.w],
            sink: vec![zero; LANES * s.w],
            taps: CellTaps::new(wo),
        }
    }
}

/// The corners nw, ne, sw, se of the channel group at `q` of a cell.
///
/// # Safety
/// `q + rs + cp + LANES <= v.len()`.
#[inline(always)]
unsafe fn cell<T: Real>(v: &[T], q: usize, cp: usize, rs: usize) -> [[T; LANES]; 4] {
    // SAFETY: guaranteed by the caller.
    unsafe {
        [
            load(v, q),
            load(v, q + cp),
            load(v, q + rs),
            load(v, q + rs + cp),
        ]
    }
}

/// Forward of one item: `src` (C, H, W), `grid` its (Ho, Wo, 2) grid, rows
/// `rows`; output row (ch, oy) goes to `out + out_first + (ch · Ho + oy) · Wo`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fast_fwd_rows<T: Real, const ONE: bool>(
    sc: &mut FastScratch<T>,
    s: Staged,
    p: GsParams,
    src: &[T],
    grid: &[T],
    rows: std::ops::Range<usize>,
    out: SyncPtr<T>,
    out_first: usize,
) {
    let (cp, rs) = (s.stride::<ONE>(), s.row_stride());
    let wo = sc.taps.pix.len();
    let plane_out = grid.len() / 2;
    s.stage::<T, ONE>(&mut sc.input, src, &sc.zeros);
    let xin = &sc.input[..];
    debug_assert_eq!(xin.len(), s.len());
    for oy in rows {
        sc.taps.compute(&grid[oy * wo * 2..(oy + 1) * wo * 2], s, p);
        let t = &sc.taps;
        let (pix, [w0, w1, w2, w3]) = (&t.pix[..wo], t.w.each_ref().map(|v| &v[..wo]));
        for (i, o) in sc.row[..wo * cp].chunks_exact_mut(cp).enumerate() {
            let q = pix[i] as usize * cp;
            let w = [w0[i], w1[i], w2[i], w3[i]];
            for grp in 0..cp / LANES {
                // SAFETY: `CellTaps::compute` gives a padded pixel index
                // whose whole cell lies inside the staged copy.
                let v = unsafe { cell(xin, q + grp * LANES, cp, rs) };
                let o = &mut o[grp * LANES..][..LANES];
                for l in 0..LANES {
                    o[l] = w[0] * v[0][l] + w[1] * v[1][l] + w[2] * v[2][l] + w[3] * v[3][l];
                }
            }
        }
        for ch in 0..s.c {
            let first = out_first + ch * plane_out + oy * wo;
            for (i, px) in sc.row[..wo * cp].chunks_exact(cp).enumerate() {
                // SAFETY: output row (ch, oy) of this item belongs to this task.
                unsafe { out.write(first + i, px[ch]) };
            }
        }
    }
}

/// Backward over rows `rows` of one item: scatters into `sc.grad` (`GI`) and
/// writes the grid-gradient rows, (rows, Wo, 2), at `gg + gg_at` (`GG`).
/// `go` is the item's upstream gradient (C, Ho, Wo); `src` the input item,
/// staged here when `GG`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fast_bwd_rows<T: Real, const ONE: bool, const GI: bool, const GG: bool>(
    sc: &mut FastScratch<T>,
    s: Staged,
    p: GsParams,
    src: &[T],
    go: &[T],
    grid: &[T],
    rows: std::ops::Range<usize>,
    gg: SyncPtr<T>,
    gg_at: usize,
) {
    let zero = T::from_f64(0.0);
    let (cp, rs) = (s.stride::<ONE>(), s.row_stride());
    let wo = sc.taps.pix.len();
    let plane_out = go.len() / s.c;
    let first = rows.start;
    if GG {
        s.stage::<T, ONE>(&mut sc.input, src, &sc.zeros);
    }
    debug_assert!(!GG || sc.input.len() == s.len());
    debug_assert!(!GI || sc.grad.len() == s.len());
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    for oy in rows {
        sc.taps.compute(&grid[oy * wo * 2..(oy + 1) * wo * 2], s, p);
        for ch in 0..s.c {
            let src = &go[ch * plane_out + oy * wo..][..wo];
            for (px, &g) in sc.row[..wo * cp].chunks_exact_mut(cp).zip(src) {
                px[ch] = g;
            }
        }
        let t = &sc.taps;
        let gg_row = gg_at + (oy - first) * wo * 2;
        #[cfg(target_arch = "x86_64")]
        if ONE && avx2 {
            let mut args = BwdRowArgs {
                xin: &sc.input,
                gin: &mut sc.grad,
                row: &sc.row[..wo * LANES],
                taps: t,
                rs,
                // SAFETY: grid-gradient rows `rows` of this item belong to
                // this task; the row is 2 · Wo long.
                gg: unsafe { gg.0.add(gg_row) },
            };
            if avx2::bwd_row::<T, GI, GG>(&mut args) {
                continue;
            }
        }
        let (pix, [w0, w1, w2, w3]) = (&t.pix[..wo], t.w.each_ref().map(|v| &v[..wo]));
        let (wx0s, wx1s, wy0s, wy1s) = (&t.wx0[..wo], &t.wx1[..wo], &t.wy0[..wo], &t.wy1[..wo]);
        let (mx, my, live) = (&t.mx[..wo], &t.my[..wo], &t.live[..wo]);
        let (xin, gin) = (&sc.input[..], &mut sc.grad[..]);
        for (i, g) in sc.row[..wo * cp].chunks_exact(cp).enumerate() {
            let q = pix[i] as usize * cp;
            let w = [w0[i], w1[i], w2[i], w3[i]];
            let (wx0, wx1, wy0, wy1) = (wx0s[i], wx1s[i], wy0s[i], wy1s[i]);
            let (mut ax, mut ay) = ([zero; LANES], [zero; LANES]);
            for grp in 0..cp / LANES {
                let q = q + grp * LANES;
                let g: [T; LANES] = std::array::from_fn(|l| g[grp * LANES + l]);
                if GG {
                    // SAFETY: `CellTaps::compute` gives a padded pixel index
                    // whose whole cell lies inside the staged copy.
                    let v = unsafe { cell(xin, q, cp, rs) };
                    for l in 0..LANES {
                        ax[l] += g[l] * (wy0 * (v[1][l] - v[0][l]) + wy1 * (v[3][l] - v[2][l]));
                        ay[l] += g[l] * (wx0 * (v[2][l] - v[0][l]) + wx1 * (v[3][l] - v[1][l]));
                    }
                }
                if GI {
                    // SAFETY: as above, for the accumulator of the same size.
                    unsafe {
                        add_scaled(gin, q, w[0], &g);
                        add_scaled(gin, q + cp, w[1], &g);
                        add_scaled(gin, q + rs, w[2], &g);
                        add_scaled(gin, q + rs + cp, w[3], &g);
                    }
                }
            }
            if GG {
                let sum = |a: [T; LANES]| a.iter().fold(zero, |s, &v| s + v);
                // A dead sample passes no gradient even for a non-finite
                // upstream gradient.
                let gx = if live[i] { sum(ax) * mx[i] } else { zero };
                let gy = if live[i] { sum(ay) * my[i] } else { zero };
                // SAFETY: grid-gradient rows `rows` of this item belong to
                // this task.
                unsafe {
                    gg.write(gg_row + 2 * i, gx);
                    gg.write(gg_row + 2 * i + 1, gy);
                }
            }
        }
    }
}

/// Runs `f` compiled for AVX2 where the CPU has it (the build targets
/// baseline x86-64, whose SSE2 lacks the float-to-int and blend forms that
/// let the tap and cell loops vectorise). `f` must be `#[inline(always)]`
/// down to its loops for the target features to reach them.
#[inline(always)]
fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// One row of the backward's per-sample loop for [`avx2::bwd_row`].
#[cfg(target_arch = "x86_64")]
struct BwdRowArgs<'a, T> {
    /// Staged input and input-gradient accumulator, [`Staged::len`] each
    /// (the accumulator may be empty when not `GI`, the input when not `GG`).
    xin: &'a [T],
    gin: &'a mut [T],
    /// The upstream gradient row, (Wo, LANES).
    row: &'a [T],
    taps: &'a CellTaps<T>,
    /// Elements between vertically adjacent staged pixels.
    rs: usize,
    /// Where the row's 2 · Wo grid-gradient elements go.
    gg: *mut T,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The backward's per-sample loop for f32 with one channel group,
    //! written with AVX2 intrinsics: a cell row (two pixels of four
    //! channels) is one 256-bit vector, so a sample is two loads, two
    //! read-modify-writes and a short horizontal sum.

    use std::any::TypeId;
    use std::arch::x86_64::*;

    use super::{BwdRowArgs, Real, LANES};

    /// Runs the row when `T` is f32 and the CPU has AVX2; returns whether
    /// it did.
    #[inline(always)]
    pub(super) fn bwd_row<T: Real, const GI: bool, const GG: bool>(
        a: &mut BwdRowArgs<'_, T>,
    ) -> bool {
        if TypeId::of::<T>() != TypeId::of::<f32>() || !is_x86_feature_detected!("avx2") {
            return false;
        }
        // SAFETY: T is f32, so this is the same type.
        let a = unsafe { &mut *(a as *mut BwdRowArgs<'_, T>).cast::<BwdRowArgs<'_, f32>>() };
        // SAFETY: the CPU has AVX2.
        unsafe { row_f32::<GI, GG>(a) };
        true
    }

    #[target_feature(enable = "avx2")]
    unsafe fn row_f32<const GI: bool, const GG: bool>(a: &mut BwdRowArgs<'_, f32>) {
        let t = a.taps;
        let wo = t.pix.len();
        let (pix, row, rs) = (&t.pix[..wo], &a.row[..wo * LANES], a.rs);
        let [w0, w1, w2, w3] = t.w.each_ref().map(|v| &v[..wo]);
        let (wx0, wx1, wy0, wy1) = (&t.wx0[..wo], &t.wx1[..wo], &t.wy0[..wo], &t.wy1[..wo]);
        let (mx, my, live) = (&t.mx[..wo], &t.my[..wo], &t.live[..wo]);
        let (xin, gin) = (a.xin.as_ptr(), a.gin.as_mut_ptr());
        // A cell spans `rs + 2 · LANES` elements from its first.
        let span = rs + 2 * LANES;
        for i in 0..wo {
            let q = pix[i] as usize * LANES;
            // SAFETY: `row` holds Wo groups of LANES.
            let g4 = unsafe { _mm_loadu_ps(row.as_ptr().add(i * LANES)) };
            if GI {
                assert!(q + span <= a.gin.len());
                let g8 = _mm256_set_m128(g4, g4);
                let wt = _mm256_set_m128(_mm_set1_ps(w1[i]), _mm_set1_ps(w0[i]));
                let wb = _mm256_set_m128(_mm_set1_ps(w3[i]), _mm_set1_ps(w2[i]));
                // SAFETY: the cell lies inside the accumulator (asserted).
                unsafe {
                    let (pt, pb) = (gin.add(q), gin.add(q + rs));
                    _mm256_storeu_ps(
                        pt,
                        _mm256_add_ps(_mm256_loadu_ps(pt), _mm256_mul_ps(wt, g8)),
                    );
                    _mm256_storeu_ps(
                        pb,
                        _mm256_add_ps(_mm256_loadu_ps(pb), _mm256_mul_ps(wb, g8)),
                    );
                }
            }
            if GG {
                assert!(q + span <= a.xin.len());
                // SAFETY: the cell lies inside the staged input (asserted).
                let (top, bot) = unsafe {
                    (
                        _mm256_loadu_ps(xin.add(q)),
                        _mm256_loadu_ps(xin.add(q + rs)),
                    )
                };
                let (nw, ne) = (_mm256_castps256_ps128(top), _mm256_extractf128_ps::<1>(top));
                let (sw, se) = (_mm256_castps256_ps128(bot), _mm256_extractf128_ps::<1>(bot));
                let ax = _mm_mul_ps(
                    g4,
                    _mm_add_ps(
                        _mm_mul_ps(_mm_set1_ps(wy0[i]), _mm_sub_ps(ne, nw)),
                        _mm_mul_ps(_mm_set1_ps(wy1[i]), _mm_sub_ps(se, sw)),
                    ),
                );
                let ay = _mm_mul_ps(
                    g4,
                    _mm_add_ps(
                        _mm_mul_ps(_mm_set1_ps(wx0[i]), _mm_sub_ps(sw, nw)),
                        _mm_mul_ps(_mm_set1_ps(wx1[i]), _mm_sub_ps(se, ne)),
                    ),
                );
                // [Σ ax, Σ ay, ..] over the channels.
                let h = _mm_hadd_ps(ax, ay);
                let h = _mm_hadd_ps(h, h);
                let d = _mm_mul_ps(h, _mm_setr_ps(mx[i], my[i], 0.0, 0.0));
                // A dead sample passes no gradient even for a non-finite
                // upstream gradient.
                let d = if live[i] { d } else { _mm_setzero_ps() };
                // SAFETY: the row's grid gradient has 2 · Wo elements.
                unsafe { _mm_storel_pd(a.gg.add(2 * i).cast::<f64>(), _mm_castps_pd(d)) };
            }
        }
    }
}

/// [`fast_bwd_rows`] for the wanted gradients, then the input gradient
/// written out to `gi + gi_at` when wanted.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn fast_bwd_item<T: Real, const ONE: bool>(
    sc: &mut FastScratch<T>,
    s: Staged,
    p: GsParams,
    (src, go, grid): (&[T], &[T], &[T]),
    rows: std::ops::Range<usize>,
    (gi, gi_at): (SyncPtr<T>, usize),
    (gg, gg_at): (SyncPtr<T>, usize),
    (want_input, want_grid): (bool, bool),
) {
    match (want_input, want_grid) {
        (true, true) => {
            fast_bwd_rows::<T, ONE, true, true>(sc, s, p, src, go, grid, rows, gg, gg_at)
        }
        (true, false) => {
            fast_bwd_rows::<T, ONE, true, false>(sc, s, p, src, go, grid, rows, gg, gg_at)
        }
        (false, true) => {
            fast_bwd_rows::<T, ONE, false, true>(sc, s, p, src, go, grid, rows, gg, gg_at)
        }
        (false, false) => {}
    }
    if want_input {
        // SAFETY: the caller owns `gi_at..gi_at + C·H·W`.
        unsafe { s.unstage::<T, ONE>(gi, gi_at, &mut sc.grad, &mut sc.sink) };
    }
}

/// Rows per task and tasks per item for `n` items of `ho` rows when each
/// task must copy its whole item first: one task per item once there are
/// enough items to share out.
fn fast_split(n: usize, ho: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads();
    let per_item = (2 * threads).div_ceil(n.max(1)).clamp(1, ho.max(1));
    let rows = ho.div_ceil(per_item).max(1);
    (rows, ho.div_ceil(rows))
}

fn grid_sample_fwd_fast<T: Real>(input: &[T], grid: &[T], d: GsDims, p: GsParams) -> Vec<T> {
    let GsDims { n, c, h, w, ho, wo } = d;
    let s = Staged::new(c, h, w);
    let (plane_in, plane_out) = (h * w, ho * wo);
    let mut out = Uninit::<T>::new(n * c * plane_out);
    if n * c * plane_out > 0 {
        let (rows_per_task, tasks_per_item) = fast_split(n, ho);
        let out_ptr = out.ptr();
        (0..n * tasks_per_item).into_par_iter().for_each_init(
            || FastScratch::<T>::new(s, wo, false),
            |sc, task| {
                let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
                let rows = blk * rows_per_task..((blk + 1) * rows_per_task).min(ho);
                let src = &input[b * c * plane_in..(b + 1) * c * plane_in];
                let g = &grid[b * plane_out * 2..(b + 1) * plane_out * 2];
                let first = b * c * plane_out;
                with_simd(
                    #[inline(always)]
                    || {
                        if s.cp == LANES {
                            fast_fwd_rows::<T, true>(sc, s, p, src, g, rows, out_ptr, first)
                        } else {
                            fast_fwd_rows::<T, false>(sc, s, p, src, g, rows, out_ptr, first)
                        }
                    },
                );
            },
        );
    }
    // SAFETY: the tasks cover every (b, oy) row of every channel.
    unsafe { out.assume_init() }
}

fn grid_sample_bwd_fast<T: Real>(
    grad_out: &[T],
    input: &[T],
    grid: &[T],
    d: GsDims,
    p: GsParams,
    want_input: bool,
    want_grid: bool,
) -> (Vec<T>, Vec<T>) {
    let GsDims { n, c, h, w, ho, wo } = d;
    let s = Staged::new(c, h, w);
    let (plane_in, plane_out) = (h * w, ho * wo);
    let item = c * plane_in;
    let mut gi_all = Uninit::<T>::new(if want_input { n * item } else { 0 });
    let mut gg_all = Uninit::<T>::new(if want_grid { n * plane_out * 2 } else { 0 });
    let threads = rayon::current_num_threads();
    // One task per item owns that item's input gradient; with fewer items
    // than threads, items are split into row blocks that each produce a
    // partial input gradient, summed afterwards.
    let (rows_per_task, tasks_per_item) = if want_input && n >= threads {
        (ho, 1)
    } else {
        fast_split(n, ho)
    };
    let partial = want_input && tasks_per_item > 1;
    let mut partials = Uninit::<T>::new(if partial {
        n * tasks_per_item * item
    } else {
        0
    });
    let gi_ptr = if partial {
        partials.ptr()
    } else {
        gi_all.ptr()
    };
    let gg_ptr = gg_all.ptr();
    (0..n * tasks_per_item).into_par_iter().for_each_init(
        || FastScratch::<T>::new(s, wo, want_input),
        |sc, task| {
            let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
            let rows = blk * rows_per_task..((blk + 1) * rows_per_task).min(ho);
            let go = &grad_out[b * c * plane_out..(b + 1) * c * plane_out];
            let g = &grid[b * plane_out * 2..(b + 1) * plane_out * 2];
            let src = &input[b * item..(b + 1) * item];
            let gg_at = (b * ho + rows.start) * wo * 2;
            let at = if partial { task } else { b } * item;
            with_simd(
                #[inline(always)]
                || {
                    if s.cp == LANES {
                        fast_bwd_item::<T, true>(
                            sc,
                            s,
                            p,
                            (src, go, g),
                            rows,
                            (gi_ptr, at),
                            (gg_ptr, gg_at),
                            (want_input, want_grid),
                        )
                    } else {
                        fast_bwd_item::<T, false>(
                            sc,
                            s,
                            p,
                            (src, go, g),
                            rows,
                            (gi_ptr, at),
                            (gg_ptr, gg_at),
                            (want_input, want_grid),
                        )
                    }
                },
            );
        },
    );
    if partial {
        sum_partials(&mut gi_all, partials, item, tasks_per_item);
    }
    // SAFETY: every task (or the reduction) wrote its items' input gradient,
    // and every (b, oy) grid-gradient row when wanted.
    unsafe { (gi_all.assume_init(), gg_all.assume_init()) }
}

/// One axis of a bilinear resize: for each output index, the two source
/// indices and their weights, as PyTorch's `upsample_bilinear2d`.
pub(crate) struct Axis<T> {
    pub i0: Vec<usize>,
    pub i1: Vec<usize>,
    pub l0: Vec<T>,
    pub l1: Vec<T>,
}

impl<T: Real> Axis<T> {
    pub(crate) fn new(input: usize, output: usize, align_corners: bool) -> Self {
        let zero = T::from_f64(0.0);
        let one = T::from_f64(1.0);
        let half = T::from_f64(0.5);
        let scale = if align_corners {
            if output > 1 {
                T::from_f64(input as f64 - 1.0) / T::from_f64(output as f64 - 1.0)
            } else {
                zero
            }
        } else {
            T::from_f64(input as f64) / T::from_f64(output as f64)
        };
        let mut a = Self {
            i0: Vec::with_capacity(output),
            i1: Vec::with_capacity(output),
            l0: Vec::with_capacity(output),
            l1: Vec::with_capacity(output),
        };
        for o in 0..output {
            let dst = T::from_f64(o as f64);
            let src = if align_corners {
                scale * dst
            } else {
                let s = scale * (dst + half) - half;
                if s < zero {
                    zero
                } else {
                    s
                }
            };
            let i0 = (src.floor().to_f64() as usize).min(input - 1);
            let mut l1 = src - T::from_f64(i0 as f64);
            if l1 < zero {
                l1 = zero;
            } else if l1 > one {
                l1 = one;
            }
            a.i0.push(i0);
            a.i1.push(if i0 + 1 < input { i0 + 1 } else { i0 });
            a.l0.push(one - l1);
            a.l1.push(l1);
        }
        a
    }
}

/// Bilinear resize of `planes` planes of (h, w) to (oh, ow): each input row
/// is first resampled to width `ow` (the only gathers, h · ow of them), then
/// each output row blends two of those rows, a contiguous loop that
/// vectorises. The order of operations is PyTorch's (horizontal first).
pub(crate) fn upsample_fwd<T: Real>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = zeros(planes * oh * ow, zero);
    if out.is_empty() {
        return out;
    }
    let ax = Axis::<T>::new(w, ow, align_corners);
    let ay = Axis::<T>::new(h, oh, align_corners);
    out.par_chunks_mut(oh * ow).enumerate().for_each_init(
        || vec![zero; h * ow],
        |tmp, (p, dst)| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for (row, trow) in plane.chunks_exact(w).zip(tmp.chunks_exact_mut(ow)) {
                for ((((t, &i0), &i1), &l0), &l1) in trow
                    .iter_mut()
                    .zip(&ax.i0)
                    .zip(&ax.i1)
                    .zip(&ax.l0)
                    .zip(&ax.l1)
                {
                    debug_assert!(i0 < row.len() && i1 < row.len());
                    // SAFETY: `Axis::new(w, ..)` keeps every index below w.
                    *t = l0 * unsafe { *row.get_unchecked(i0) }
                        + l1 * unsafe { *row.get_unchecked(i1) };
                }
            }
            for (oy, orow) in dst.chunks_exact_mut(ow).enumerate() {
                let r0 = &tmp[ay.i0[oy] * ow..][..ow];
                let r1 = &tmp[ay.i1[oy] * ow..][..ow];
                let (l0, l1) = (ay.l0[oy], ay.l1[oy]);
                for ((o, &a), &b) in orow.iter_mut().zip(r0).zip(r1) {
                    *o = l0 * a + l1 * b;
                }
            }
        },
    );
    out
}

/// Transpose of [`upsample_fwd`]: gradient (planes, oh, ow) -> (planes, h, w).
/// Output rows are first accumulated into h rows of width `ow` (contiguous,
/// vectorised), then each is scattered back to width `w`.
pub(crate) fn upsample_bwd<T: Real>(
    g: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = zeros(planes * h * w, zero);
    if out.is_empty() || oh * ow == 0 {
        return out;
    }
    let ax = Axis::<T>::new(w, ow, align_corners);
    let ay = Axis::<T>::new(h, oh, align_corners);
    out.par_chunks_mut(h * w).enumerate().for_each_init(
        || vec![zero; h * ow],
        |tmp, (p, dst)| {
            tmp.iter_mut().for_each(|t| *t = zero);
            let gp = &g[p * oh * ow..(p + 1) * oh * ow];
            for (oy, grow) in gp.chunks_exact(ow).enumerate() {
                let (l0, l1) = (ay.l0[oy], ay.l1[oy]);
                let t0 = &mut tmp[ay.i0[oy] * ow..][..ow];
                for (t, &v) in t0.iter_mut().zip(grow) {
                    *t += l0 * v;
                }
                let t1 = &mut tmp[ay.i1[oy] * ow..][..ow];
                for (t, &v) in t1.iter_mut().zip(grow) {
                    *t += l1 * v;
                }
            }
            for (drow, trow) in dst.chunks_exact_mut(w).zip(tmp.chunks_exact(ow)) {
                for ((((&t, &i0), &i1), &l0), &l1) in
                    trow.iter().zip(&ax.i0).zip(&ax.i1).zip(&ax.l0).zip(&ax.l1)
                {
                    debug_assert!(i0 < drow.len() && i1 < drow.len());
                    // SAFETY: `Axis::new(w, ..)` keeps every index below w.
                    unsafe {
                        *drow.get_unchecked_mut(i0) += l0 * t;
                        *drow.get_unchecked_mut(i1) += l1 * t;
                    }
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn max_rel(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b)
            .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()));
        err / scale
    }

    /// The f32 fast path (AVX2 where available) for every combination of
    /// wanted gradients against the f64 fast path (generic code): each
    /// gradient is the same whether computed alone or with the other, and
    /// within f32 rounding of the f64 result.
    #[test]
    fn f32_fast_path_matches_f64_for_every_gradient_combination() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let paddings = [PaddingMode::Zeros, PaddingMode::Border];
        for trial in 0..16 {
            let (n, c) = (rng.random_range(1..4), rng.random_range(1..6));
            let (h, w) = (rng.random_range(1..10), rng.random_range(1..10));
            let (ho, wo) = (h + rng.random_range(0..3), w + rng.random_range(0..3));
            let d = GsDims { n, c, h, w, ho, wo };
            let p = GsParams {
                mode: SampleMode::Bilinear,
                padding: paddings[trial % 2],
                align_corners: trial % 4 < 2,
            };
            assert!(fast_path(d, p));
            let mut draw = |len: usize, r: f64| -> Vec<f64> {
                (0..len).map(|_| rng.random_range(-r..r)).collect()
            };
            let input = draw(n * c * h * w, 1.0);
            let grid = draw(n * ho * wo * 2, 1.2);
            let go = draw(n * c * ho * wo, 1.0);
            let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            // f64 from the f32-rounded data, so only the arithmetic differs.
            let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
            let (i32_, g32, go32) = (f32s(&input), f32s(&grid), f32s(&go));
            let (i64_, g64, go64) = (f64s(&i32_), f64s(&g32), f64s(&go32));
            let tag = format!("trial {trial}: {d:?} {:?} {}", p.padding, p.align_corners);

            let out32 = grid_sample_fwd(&i32_, &g32, d, p);
            let out64 = grid_sample_fwd(&i64_, &g64, d, p);
            assert!(max_rel(&out32, &out64) < 1e-5, "{tag}: output");

            let (gi64, gg64) = grid_sample_bwd(&go64, &i64_, &g64, d, p, true, true);
            let (gi, gg) = grid_sample_bwd(&go32, &i32_, &g32, d, p, true, true);
            let (gi_only, none) = grid_sample_bwd(&go32, &i32_, &g32, d, p, true, false);
            let (none2, gg_only) = grid_sample_bwd(&go32, &i32_, &g32, d, p, false, true);
            assert!(none.is_empty() && none2.is_empty(), "{tag}");
            assert_eq!(gi, gi_only, "{tag}: input gradient alone");
            assert_eq!(gg, gg_only, "{tag}: grid gradient alone");
            assert!(max_rel(&gi, &gi64) < 1e-5, "{tag}: input gradient");
            assert!(max_rel(&gg, &gg64) < 1e-4, "{tag}: grid gradient");
        }
    }
}
