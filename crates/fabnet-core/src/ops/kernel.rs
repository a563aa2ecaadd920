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
    /// Saturating conversion (callers clamp to a small range first).
    fn to_isize(self) -> isize;
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
            fn to_isize(self) -> isize {
                self as isize
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

/// Geometry of one sample: the four corners nw, ne, sw, se.
#[derive(Clone, Copy)]
struct Tap<T> {
    /// Offsets of the corners within an (H, W) plane; only meaningful for
    /// corners whose bit is set in `valid`.
    off: [usize; 4],
    /// Bilinear weights of the corners (nearest: 1 for corner 0).
    w: [T; 4],
    /// Bit k set: corner k lies inside the input.
    valid: u8,
    /// Fractional position inside the cell, 1 − fx and fx, 1 − fy and fy.
    wx: [T; 2],
    wy: [T; 2],
    /// d(pixel x)/d(grid x) and d(pixel y)/d(grid y), zero where border
    /// clamping is active.
    mx: T,
    my: T,
}

const ALL: u8 = 0b1111;

impl<T: Real> Tap<T> {
    fn empty() -> Self {
        let z = T::from_f64(0.0);
        Self {
            off: [0; 4],
            w: [z; 4],
            valid: 0,
            wx: [z; 2],
            wy: [z; 2],
            mx: z,
            my: z,
        }
    }
}

/// Pixel coordinate of grid coordinate `g` along an axis of `size` pixels,
/// exactly as PyTorch's `grid_sampler_unnormalize`.
#[inline(always)]
fn unnormalize<T: Real>(g: T, size: usize, align_corners: bool) -> T {
    let one = T::from_f64(1.0);
    let two = T::from_f64(2.0);
    let s = T::from_f64(size as f64);
    if align_corners {
        ((g + one) / two) * (s - one)
    } else {
        ((g + one) * s - one) / two
    }
}

/// Clamps to [0, size − 1] for border padding; returns the coordinate and the
/// derivative of the clamp (0 on and beyond the border, as PyTorch).
#[inline(always)]
fn pad<T: Real>(x: T, size: usize, padding: PaddingMode) -> (T, T) {
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    match padding {
        PaddingMode::Zeros => (x, one),
        PaddingMode::Border => {
            let hi = T::from_f64(size as f64 - 1.0);
            if x <= zero {
                (zero, zero)
            } else if x >= hi {
                (hi, zero)
            } else {
                (x, one)
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct GsParams {
    pub mode: SampleMode,
    pub padding: PaddingMode,
    pub align_corners: bool,
}

/// Fills `taps` with the geometry of one grid row (`wo` points, x first).
fn compute_taps<T: Real>(taps: &mut [Tap<T>], grid_row: &[T], h: usize, w: usize, p: GsParams) {
    let one = T::from_f64(1.0);
    let half = T::from_f64(0.5);
    let (sx, sy) = if p.align_corners {
        (
            T::from_f64((w as f64 - 1.0) * 0.5),
            T::from_f64((h as f64 - 1.0) * 0.5),
        )
    } else {
        (T::from_f64(w as f64) * half, T::from_f64(h as f64) * half)
    };
    // Floors are clamped to this range before the integer conversion so that
    // huge coordinates stay cheap and overflow-free; any corner outside
    // [0, size) is invalid either way.
    let (wlim, hlim) = (T::from_f64(w as f64), T::from_f64(h as f64));
    let lo = T::from_f64(-2.0);
    let (wi, hi) = (w as isize, h as isize);
    for (tap, g) in taps.iter_mut().zip(grid_row.chunks_exact(2)) {
        let (gx, gy) = (g[0], g[1]);
        if !(gx.finite() && gy.finite()) {
            // Non-finite grid values sample nothing: zero output, zero gradients.
            *tap = Tap::empty();
            continue;
        }
        let (ix, cx) = pad(unnormalize(gx, w, p.align_corners), w, p.padding);
        let (iy, cy) = pad(unnormalize(gy, h, p.align_corners), h, p.padding);
        match p.mode {
            SampleMode::Bilinear => {
                let x0f = ix.floor();
                let y0f = iy.floor();
                let wx0 = (x0f + one) - ix;
                let wx1 = ix - x0f;
                let wy0 = (y0f + one) - iy;
                let wy1 = iy - y0f;
                let x0 = clamp(x0f, lo, wlim).to_isize();
                let y0 = clamp(y0f, lo, hlim).to_isize();
                let vx0 = (0..wi).contains(&x0);
                let vx1 = (0..wi).contains(&(x0 + 1));
                let vy0 = (0..hi).contains(&y0);
                let vy1 = (0..hi).contains(&(y0 + 1));
                let valid = (vx0 && vy0) as u8
                    | ((vx1 && vy0) as u8) << 1
                    | ((vx0 && vy1) as u8) << 2
                    | ((vx1 && vy1) as u8) << 3;
                let base = y0 * wi + x0;
                let at = |d: isize| (base + d).max(0) as usize;
                *tap = Tap {
                    off: [at(0), at(1), at(wi), at(wi + 1)],
                    w: [wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1],
                    valid,
                    wx: [wx0, wx1],
                    wy: [wy0, wy1],
                    mx: sx * cx,
                    my: sy * cy,
                };
            }
            SampleMode::Nearest => {
                let x = clamp(ix.round_even(), lo, wlim).to_isize();
                let y = clamp(iy.round_even(), lo, hlim).to_isize();
                let valid = (0..wi).contains(&x) && (0..hi).contains(&y);
                let mut t = Tap::empty();
                if valid {
                    t.off[0] = (y * wi + x) as usize;
                    t.w[0] = one;
                    t.valid = 1;
                }
                *tap = t;
            }
        }
    }
}

#[inline(always)]
fn clamp<T: Real>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Splits `rows` rows into blocks of at least `min` rows, at most `parts` blocks.
fn blocks(rows: usize, parts: usize) -> usize {
    rows.div_ceil(parts.clamp(1, rows.max(1)))
}

/// Forward grid sample: input (N, C, H, W), grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo).
pub(crate) fn grid_sample_fwd<T: Real>(input: &[T], grid: &[T], d: GsDims, p: GsParams) -> Vec<T> {
    let GsDims { n, c, h, w, ho, wo } = d;
    let plane_in = h * w;
    let plane_out = ho * wo;
    let mut out = vec![T::from_f64(0.0); n * c * plane_out];
    if out.is_empty() {
        return out;
    }
    // Several row blocks per thread keep the threads evenly loaded.
    let threads = rayon::current_num_threads();
    let rows_per_task = blocks(ho, (4 * threads).div_ceil(n));
    let tasks_per_item = ho.div_ceil(rows_per_task);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    (0..n * tasks_per_item).into_par_iter().for_each_init(
        || vec![Tap::<T>::empty(); wo],
        |taps, task| {
            let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
            let src = &input[b * c * plane_in..(b + 1) * c * plane_in];
            let y_end = ((blk + 1) * rows_per_task).min(ho);
            for oy in blk * rows_per_task..y_end {
                let g = &grid[(b * ho + oy) * wo * 2..(b * ho + oy + 1) * wo * 2];
                compute_taps(taps, g, h, w, p);
                for ch in 0..c {
                    let plane = &src[ch * plane_in..(ch + 1) * plane_in];
                    // SAFETY: row (b, ch, oy) belongs to this task alone: tasks
                    // partition (b, oy) and each writes all channels of its rows.
                    let dst = unsafe { out_ptr.slice(((b * c + ch) * ho + oy) * wo, wo) };
                    sample_row(dst, plane, taps);
                }
            }
        },
    );
    out
}

#[inline(always)]
fn sample_row<T: Real>(dst: &mut [T], plane: &[T], taps: &[Tap<T>]) {
    for (o, t) in dst.iter_mut().zip(taps) {
        *o = if t.valid == ALL {
            t.w[0] * plane[t.off[0]]
                + t.w[1] * plane[t.off[1]]
                + t.w[2] * plane[t.off[2]]
                + t.w[3] * plane[t.off[3]]
        } else {
            let mut acc = T::from_f64(0.0);
            for k in 0..4 {
                if t.valid & (1 << k) != 0 {
                    acc += t.w[k] * plane[t.off[k]];
                }
            }
            acc
        };
    }
}

/// Backward grid sample. Returns the flat concatenation of the input gradient
/// (N, C, H, W) if `want_input` and the grid gradient (N, Ho, Wo, 2) if
/// `want_grid`.
pub(crate) fn grid_sample_bwd<T: Real>(
    grad_out: &[T],
    input: &[T],
    grid: &[T],
    d: GsDims,
    p: GsParams,
    want_input: bool,
    want_grid: bool,
) -> Vec<T> {
    let GsDims { n, c, h, w, ho, wo } = d;
    let zero = T::from_f64(0.0);
    let plane_in = h * w;
    let plane_out = ho * wo;
    let len_in = if want_input { n * c * plane_in } else { 0 };
    let len_grid = if want_grid { n * plane_out * 2 } else { 0 };
    let mut res = vec![zero; len_in + len_grid];
    if n * plane_out == 0 || res.is_empty() {
        return res;
    }
    let want_grid = want_grid && p.mode == SampleMode::Bilinear;
    let threads = rayon::current_num_threads();
    // With enough batch items every task owns one item's input gradient;
    // otherwise items are split into row blocks that scatter into private
    // partial buffers, summed at the end.
    let (rows_per_task, tasks_per_item) = if want_input && n < threads {
        let r = blocks(ho, threads.div_ceil(n));
        (r, ho.div_ceil(r))
    } else if want_input {
        (ho, 1)
    } else {
        let r = blocks(ho, (4 * threads).div_ceil(n));
        (r, ho.div_ceil(r))
    };
    let partial = want_input && tasks_per_item > 1;
    let mut partials = if partial {
        vec![zero; n * tasks_per_item * c * plane_in]
    } else {
        Vec::new()
    };
    let (gi_all, gg_all) = res.split_at_mut(len_in);
    let gi_ptr = SyncPtr(if partial {
        partials.as_mut_ptr()
    } else {
        gi_all.as_mut_ptr()
    });
    let gg_ptr = SyncPtr(gg_all.as_mut_ptr());
    (0..n * tasks_per_item).into_par_iter().for_each_init(
        || (vec![Tap::<T>::empty(); wo], vec![zero; 2 * wo]),
        |(taps, acc), task| {
            let (b, blk) = (task / tasks_per_item, task % tasks_per_item);
            let src = &input[b * c * plane_in..(b + 1) * c * plane_in];
            // SAFETY: the input-gradient region of a task is its batch item's
            // planes (one task per item) or its own partial buffer.
            let gi = if want_input {
                let start = if partial { task } else { b } * c * plane_in;
                unsafe { gi_ptr.slice(start, c * plane_in) }
            } else {
                &mut []
            };
            let y_end = ((blk + 1) * rows_per_task).min(ho);
            for oy in blk * rows_per_task..y_end {
                let row = (b * ho + oy) * wo;
                compute_taps(taps, &grid[row * 2..(row + wo) * 2], h, w, p);
                acc.iter_mut().for_each(|a| *a = zero);
                for ch in 0..c {
                    let go = &grad_out[((b * c + ch) * ho + oy) * wo..][..wo];
                    let plane = &src[ch * plane_in..(ch + 1) * plane_in];
                    if want_input {
                        scatter_row(&mut gi[ch * plane_in..(ch + 1) * plane_in], go, taps);
                    }
                    if want_grid {
                        grid_grad_row(acc, plane, go, taps);
                    }
                }
                if want_grid {
                    // SAFETY: grid-gradient row (b, oy) belongs to this task.
                    let gg = unsafe { gg_ptr.slice(row * 2, wo * 2) };
                    for ((dst, a), t) in gg
                        .chunks_exact_mut(2)
                        .zip(acc.chunks_exact(2))
                        .zip(taps.iter())
                    {
                        dst[0] = a[0] * t.mx;
                        dst[1] = a[1] * t.my;
                    }
                }
            }
        },
    );
    if partial {
        let item = c * plane_in;
        gi_all
            .par_chunks_mut(item)
            .zip(partials.par_chunks(item * tasks_per_item))
            .for_each(|(dst, parts)| {
                for part in parts.chunks_exact(item) {
                    dst.iter_mut().zip(part).for_each(|(d, s)| *d += *s);
                }
            });
    }
    res
}

#[inline(always)]
fn scatter_row<T: Real>(gi: &mut [T], go: &[T], taps: &[Tap<T>]) {
    for (&g, t) in go.iter().zip(taps) {
        if t.valid == ALL {
            gi[t.off[0]] += t.w[0] * g;
            gi[t.off[1]] += t.w[1] * g;
            gi[t.off[2]] += t.w[2] * g;
            gi[t.off[3]] += t.w[3] * g;
        } else {
            for k in 0..4 {
                if t.valid & (1 << k) != 0 {
                    gi[t.off[k]] += t.w[k] * g;
                }
            }
        }
    }
}

/// Accumulates d(out)/d(pixel x, pixel y) · grad_out of one channel row.
#[inline(always)]
fn grid_grad_row<T: Real>(acc: &mut [T], plane: &[T], go: &[T], taps: &[Tap<T>]) {
    let zero = T::from_f64(0.0);
    for ((a, &g), t) in acc.chunks_exact_mut(2).zip(go).zip(taps) {
        let v = if t.valid == ALL {
            [
                plane[t.off[0]],
                plane[t.off[1]],
                plane[t.off[2]],
                plane[t.off[3]],
            ]
        } else {
            let mut v = [zero; 4];
            for (k, vk) in v.iter_mut().enumerate() {
                if t.valid & (1 << k) != 0 {
                    *vk = plane[t.off[k]];
                }
            }
            v
        };
        a[0] += g * (t.wy[0] * (v[1] - v[0]) + t.wy[1] * (v[3] - v[2]));
        a[1] += g * (t.wx[0] * (v[2] - v[0]) + t.wx[1] * (v[3] - v[1]));
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

/// Bilinear resize of `planes` planes of (h, w) to (oh, ow).
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
    out.par_chunks_mut(ow)
        .with_min_len((4096 / ow).max(1))
        .enumerate()
        .for_each_init(
            || vec![zero; w],
            |tmp, (r, dst)| {
                let (p, oy) = (r / oh, r % oh);
                let plane = &x[p * h * w..(p + 1) * h * w];
                let r0 = &plane[ay.i0[oy] * w..][..w];
                let r1 = &plane[ay.i1[oy] * w..][..w];
                let (l0, l1) = (ay.l0[oy], ay.l1[oy]);
                for ((t, &a), &b) in tmp.iter_mut().zip(r0).zip(r1) {
                    *t = l0 * a + l1 * b;
                }
                for (ox, o) in dst.iter_mut().enumerate() {
                    *o = ax.l0[ox] * tmp[ax.i0[ox]] + ax.l1[ox] * tmp[ax.i1[ox]];
                }
            },
        );
    out
}

/// Transpose of [`upsample_fwd`]: gradient (planes, oh, ow) -> (planes, h, w).
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
        || vec![zero; w],
        |tmp, (p, dst)| {
            let gp = &g[p * oh * ow..(p + 1) * oh * ow];
            for (oy, grow) in gp.chunks_exact(ow).enumerate() {
                tmp.iter_mut().for_each(|t| *t = zero);
                for (ox, &gv) in grow.iter().enumerate() {
                    tmp[ax.i0[ox]] += ax.l0[ox] * gv;
                    tmp[ax.i1[ox]] += ax.l1[ox] * gv;
                }
                let (l0, l1) = (ay.l0[oy], ay.l1[oy]);
                let r0 = &mut dst[ay.i0[oy] * w..][..w];
                for (d, &t) in r0.iter_mut().zip(tmp.iter()) {
                    *d += l0 * t;
                }
                let r1 = &mut dst[ay.i1[oy] * w..][..w];
                for (d, &t) in r1.iter_mut().zip(tmp.iter()) {
                    *d += l1 * t;
                }
            }
        },
    );
    out
}
