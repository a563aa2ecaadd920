//! CPU kernels of the warp ops on plain contiguous slices.
//!
//! The grid sampler computes each sample's corner offsets and weights once
//! per output row into a small reused buffer, then runs over the channels, so
//! the per-channel inner loop is only gathers and multiply-adds. Work is split
//! into (batch, row-block) tasks on the current rayon pool. The backward
//! scatter into the input gradient is race-free without locks: each task owns
//! either the whole gradient plane set of its batch item or, when there are
//! fewer batch items than threads, a private partial buffer summed afterwards.

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
#[inline(always)]
fn floor_i32<T: Real>(x: T) -> i32 {
    let t = x.to_i32();
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

/// Fills `t` with the geometry of one grid row (`wo` points, x first).
fn compute_taps<T: Real>(t: &mut RowTaps<T>, grid_row: &[T], h: usize, w: usize, p: GsParams) {
    let one = T::from_f64(1.0);
    let zero = T::from_f64(0.0);
    let (ax, ay) = (AxisMap::<T>::new(w, p), AxisMap::<T>::new(h, p));
    // Cells are clamped to [-2, size] before the integer conversion; that
    // only moves cells whose corners all lie outside, whose weights are then
    // never used, and keeps huge coordinates overflow-free.
    let (wlim, hlim, lo) = (
        T::from_f64(w as f64),
        T::from_f64(h as f64),
        T::from_f64(-2.0),
    );
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
                let (ix, mx) = ax.map(grid_row[2 * i]);
                let (iy, my) = ay.map(grid_row[2 * i + 1]);
                let x0 = floor_i32(clamp(ix, lo, wlim));
                let y0 = floor_i32(clamp(iy, lo, hlim));
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
                let (ix, _) = ax.map(g[0]);
                let (iy, _) = ay.map(g[1]);
                let x = clamp(ix.round_even(), lo, wlim).to_i32();
                let y = clamp(iy.round_even(), lo, hlim).to_i32();
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
        // SAFETY: every task zeroed and filled its partial buffer.
        let partials = unsafe { partials.assume_init() };
        let item = c * plane_in;
        let gi_ptr = gi_all.ptr();
        partials
            .par_chunks(item * tasks_per_item)
            .enumerate()
            .for_each(|(b, parts)| {
                let (first, rest) = parts.split_at(item);
                // SAFETY: item b's planes are written by this task alone.
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
    // SAFETY: every task (or the reduction) wrote its batch items' input
    // gradient, and every (b, oy) grid-gradient row when wanted.
    unsafe { (gi_all.assume_init(), gg_all.assume_init()) }
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
    let mut out = vec![zero; planes * oh * ow];
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
    let mut out = vec![zero; planes * h * w];
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
