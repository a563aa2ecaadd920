//! Convolution in f32 as shifted vector FMAs, without a column matrix
//! (AVX-512 only; other CPUs, f64 and narrow layers take the direct loops or
//! the GEMM path).
//!
//! Each input plane is copied once into a zero-padded plane of width
//! `Wp = W + 2·padding`. On that grid an output pixel `q = oy·Wp + ox` reads
//! tap `(ky, kx)` at `q + ky·Wp + kx`, so for every input channel and tap a
//! run of consecutive output pixels reads a run of consecutive inputs: one
//! unaligned vector load feeds the FMAs of several output channels. The
//! `k − 1` columns of the grid past `W_out` are computed and dropped (6 % of
//! the work at 32 pixels wide, a third at 8: rows narrower than
//! [`MIN_WIDTH`] never take the kernel, and the conv's fastest path leaves
//! 8-pixel rows to the GEMM too, see `SHIFTED_MIN_WIDTH`).
//! The input gradient of a stride-1 conv is the same kernel run on the
//! upstream gradient with the weights flipped and transposed. The weight
//! gradient pairs the upstream gradient, laid on the same grid with zeros in
//! the dropped columns, with the shifted padded input: one vector FMA per
//! 16 pixels for each (output channel, input channel) pair of a block.
//! A stride-2 conv with an even kernel is a stride-1 conv with half the
//! kernel over the space-to-depth view of its padded input ([`Plan::of`]),
//! so the same kernels run the encoder.

use super::{gather_strided, Geometry};
use crate::memory::zeros;
use crate::model::storage::{give_scratch, min_items, take_scratch};
use rayon::prelude::*;

/// Output channels per register block.
const MR: usize = 4;
/// 16-float vectors per register block: MR × NV accumulators.
const NV: usize = 6;
/// Output pixels (on the padded grid) per register block.
const BLOCK: usize = 16 * NV;
/// Narrowest output row the kernel takes: at width w it computes (w + k − 1)/w
/// times the useful work.
const MIN_WIDTH: usize = 8;

/// Whether `g` runs here: f32 (checked by the caller), wide enough rows, a
/// CPU with AVX-512, and stride 1, or stride 2 with an even kernel and even
/// padded sizes (see [`Plan::of`]). Channel counts that are not whole
/// register blocks are padded with zero weights: a layer with 2 output
/// channels does twice its work, and still runs several times faster than
/// any other path here.
pub(super) fn applies(g: &Geometry) -> bool {
    let stride_fits = match g.stride {
        1 => g.padding < g.k,
        2 => {
            g.k.is_multiple_of(2)
                && (g.h + 2 * g.padding).is_multiple_of(2)
                && (g.w + 2 * g.padding).is_multiple_of(2)
        }
        _ => false,
    };
    let taps = Plan::of(g).k.pow(2);
    stride_fits && taps <= MAX_TAPS && g.out_w() >= MIN_WIDTH && avx512()
}

/// `c` rounded up to whole register blocks.
fn blocks_of(c: usize) -> usize {
    c.div_ceil(MR)
}

/// Whether this CPU has AVX-512F.
pub(super) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One stride-1 convolution problem on padded planes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    padding: usize,
}

impl Plan {
    /// The stride-1 problem `g` is: itself, or for stride 2 the conv with a
    /// k/2 kernel and no padding over the space-to-depth view of the padded
    /// input, `(4C, (H + 2p)/2, (W + 2p)/2)`, whose channel `4c + 2dy + dx`
    /// holds the pixels `(2i + dy, 2j + dx)` of channel `c`: tap
    /// `(2a + dy, 2b + dx)` of the original reads channel `4c + 2dy + dx`
    /// at tap `(a, b)`.
    fn of(g: &Geometry) -> Plan {
        if g.stride == 1 {
            Plan {
                c_in: g.c,
                h: g.h,
                w: g.w,
                c_out: g.c_out,
                k: g.k,
                padding: g.padding,
            }
        } else {
            Plan {
                c_in: 4 * g.c,
                h: (g.h + 2 * g.padding) / 2,
                w: (g.w + 2 * g.padding) / 2,
                c_out: g.c_out,
                k: g.k / 2,
                padding: 0,
            }
        }
    }

    /// The weight of output channel `o`, input channel `c`, tap `t` of
    /// this plan, from `g`'s weight `(C_out, C, k, k)`.
    fn weight(g: &Geometry, weight: &[f32], o: usize, c: usize, t: usize) -> f32 {
        let kk = g.k * g.k;
        if g.stride == 1 {
            weight[(o * g.c + c) * kk + t]
        } else {
            let k2 = g.k / 2;
            let (a, b) = (t / k2, t % k2);
            let (ci, dy, dx) = (c / 4, (c / 2) % 2, c % 2);
            weight[(o * g.c + ci) * kk + (2 * a + dy) * g.k + 2 * b + dx]
        }
    }

    fn wp(&self) -> usize {
        self.w + 2 * self.padding
    }
    fn ho(&self) -> usize {
        self.h + 2 * self.padding + 1 - self.k
    }
    fn wo(&self) -> usize {
        self.wp() + 1 - self.k
    }
    /// Output pixels on the padded grid, rounded up to whole blocks.
    fn grid(&self) -> usize {
        (self.ho() * self.wp()).div_ceil(BLOCK) * BLOCK
    }
    /// Elements of one padded plane: the padded image, and room for the
    /// last block's loads past it.
    fn plane(&self) -> usize {
        let hp = self.h + 2 * self.padding;
        (hp * self.wp()).max(self.grid() + (self.k - 1) * (self.wp() + 1))
    }
}

/// `out` `(N, C_out, H_out, W_out)` = conv of the input `(N, C_in, H, W)`
/// with `packed` weights (see [`pack`]) plus `bias`, if any. `stage(b, xp)`
/// writes sample `b` of the input into zero-padded planes `xp` (see
/// [`pad_into`]).
fn run(
    stage: impl Fn(usize, &mut [f32]) + Sync,
    packed: &[f32],
    bias: Option<&[f32]>,
    p: Plan,
    out: &mut [f32],
) {
    let (ho, wo, wp) = (p.ho(), p.wo(), p.wp());
    let plane = p.plane();
    let offs: Vec<usize> = (0..p.k * p.k).map(|t| (t / p.k) * wp + t % p.k).collect();
    out.par_chunks_mut(p.c_out * ho * wo)
        .enumerate()
        .for_each(|(b, out)| {
            let mut xp = take_scratch::<f32>(p.c_in * plane);
            stage(b, &mut xp[..p.c_in * plane]);
            let mut acc = [0f32; MR * BLOCK];
            for q0 in (0..ho * wp).step_by(BLOCK) {
                for ob in 0..blocks_of(p.c_out) {
                    let w = &packed[ob * p.c_in * offs.len() * MR..][..p.c_in * offs.len() * MR];
                    // SAFETY: avx512f was detected by `applies`; xp holds
                    // c_in planes of `plane` elements, and every load of the
                    // block, at most q0 + BLOCK − 1 + (k − 1)·(Wp + 1), stays
                    // inside its plane by `Plan::plane`.
                    unsafe { block(&xp[..p.c_in * plane], plane, p.c_in, &offs, w, q0, &mut acc) };
                    for o in 0..MR.min(p.c_out - ob * MR) {
                        let oc = ob * MR + o;
                        let add = bias.map_or(0.0, |b| b[oc]);
                        let dst = &mut out[oc * ho * wo..][..ho * wo];
                        let row = &acc[o * BLOCK..][..BLOCK];
                        // Copy the block's pixels that are real outputs.
                        let q1 = (q0 + BLOCK).min(ho * wp);
                        let mut q = q0;
                        while q < q1 {
                            let (oy, ox) = (q / wp, q % wp);
                            let end = (q1 - q).min(wp - ox);
                            if ox < wo {
                                let len = end.min(wo - ox);
                                for (d, v) in
                                    dst[oy * wo + ox..][..len].iter_mut().zip(&row[q - q0..])
                                {
                                    *d = *v + add;
                                }
                            }
                            q += end;
                        }
                    }
                }
            }
            give_scratch(xp);
        });
}

/// Copies `x` `(C_in, H, W)` into zero-padded planes.
fn pad_into(x: &[f32], p: Plan, xp: &mut [f32]) {
    pad_into_planes(x, p, p.plane(), xp);
}

/// [`pad_into`] with planes of `plane ≥ (H + 2·padding) · Wp` elements.
fn pad_into_planes(x: &[f32], p: Plan, plane: usize, xp: &mut [f32]) {
    let wp = p.wp();
    debug_assert!(plane >= (p.h + 2 * p.padding) * wp);
    xp.fill(0.0);
    for (src, dst) in x.chunks_exact(p.h * p.w).zip(xp.chunks_exact_mut(plane)) {
        for (y, row) in src.chunks_exact(p.w).enumerate() {
            dst[(y + p.padding) * wp + p.padding..][..p.w].copy_from_slice(row);
        }
    }
}

/// Accumulates, for MR output channels and BLOCK grid pixels from `q0`,
/// `Σ_c Σ_t w[c][t][o] · xp[c·plane + q + offs[t]]` into `acc` `(MR, BLOCK)`.
///
/// # Safety
/// The CPU must have AVX-512F, `w` must hold `c_in · offs.len() · MR`
/// weights, and every `c·plane + q0 + offs[t] + BLOCK − 1` must be inside `xp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(
    xp: &[f32],
    plane: usize,
    c_in: usize,
    offs: &[usize],
    w: &[f32],
    q0: usize,
    acc: &mut [f32; MR * BLOCK],
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= c_in * offs.len() * MR);
    debug_assert!(offs
        .iter()
        .all(|o| (c_in - 1) * plane + q0 + o + BLOCK <= xp.len()));
    let mut sums = [[_mm512_setzero_ps(); NV]; MR];
    let mut wt = w.as_ptr();
    for c in 0..c_in {
        // SAFETY (all pointer arithmetic below): in bounds by the contract.
        let base = unsafe { xp.as_ptr().add(c * plane + q0) };
        for &off in offs {
            let src = unsafe { base.add(off) };
            let mut xv = [_mm512_setzero_ps(); NV];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(src.add(16 * j)) };
            }
            for (o, row) in sums.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(unsafe { *wt.add(o) });
                for (s, v) in row.iter_mut().zip(&xv) {
                    *s = _mm512_fmadd_ps(wv, *v, *s);
                }
            }
            wt = unsafe { wt.add(MR) };
        }
    }
    for (o, row) in sums.iter().enumerate() {
        for (j, s) in row.iter().enumerate() {
            unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(o * BLOCK + 16 * j), *s) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block(
    _: &[f32],
    _: usize,
    _: usize,
    _: &[usize],
    _: &[f32],
    _: usize,
    _: &mut [f32; MR * BLOCK],
) {
    unreachable!("`applies` is false off x86_64")
}

/// Packs `weight(o, c, t)` into register blocks `[o / MR][c][t][o % MR]`,
/// zeros past the last output channel.
fn pack(
    c_out: usize,
    c_in: usize,
    taps: usize,
    weight: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let mut packed = vec![0f32; blocks_of(c_out) * MR * c_in * taps];
    for (i, v) in packed.iter_mut().enumerate() {
        let (ob, rest) = (i / (c_in * taps * MR), i % (c_in * taps * MR));
        let (c, t, o) = (rest / (taps * MR), (rest / MR) % taps, rest % MR);
        if ob * MR + o < c_out {
            *v = weight(ob * MR + o, c, t);
        }
    }
    packed
}

/// Writes one sample `x` `(C, H, W)` of a stride-2 conv as its
/// space-to-depth view `(4C, (H + 2p)/2, (W + 2p)/2)` (see [`Plan::of`]) into
/// planes of `plane` elements, zeros in the padding and past each view
/// plane, as [`pad_into`] writes the view itself (the plan pads no further),
/// without the view ever being stored.
fn space_to_depth_into(x: &[f32], g: &Geometry, plane: usize, xp: &mut [f32]) {
    let (h2, w2) = ((g.h + 2 * g.padding) / 2, (g.w + 2 * g.padding) / 2);
    debug_assert!(h2 * w2 <= plane);
    xp.fill(0.0);
    for (src, planes) in x
        .chunks_exact(g.h * g.w)
        .zip(xp.chunks_exact_mut(4 * plane))
    {
        for (y, row) in src.chunks_exact(g.w).enumerate() {
            let yp = y + g.padding;
            for (px, (col, first)) in parity_columns(g).into_iter().enumerate() {
                let start = ((yp % 2) * 2 + px) * plane + (yp / 2) * w2;
                let dst = &mut planes[start + col..start + w2];
                gather_strided(dst, &row[first.min(row.len())..], 2);
            }
        }
    }
}

/// `stage` for [`run`]: sample `b` of `x` for the plan of `g`, padded, or
/// as its space-to-depth view for stride 2.
fn stage_input<'a>(x: &'a [f32], g: &'a Geometry) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
    let p = Plan::of(g);
    let per_sample = g.c * g.h * g.w;
    move |b, xp| {
        let sample = &x[b * per_sample..][..per_sample];
        if g.stride == 1 {
            pad_into(sample, p, xp);
        } else {
            space_to_depth_into(sample, g, p.plane(), xp);
        }
    }
}

/// For the even and the odd columns of the padded grid: the first view
/// column holding an input pixel, and that pixel's input column.
fn parity_columns(g: &Geometry) -> [(usize, usize); 2] {
    // Padded column xp = 2·col + parity holds input column xp − padding.
    [0, 1].map(|parity| {
        let col = (g.padding + 1 - parity) / 2;
        (col, 2 * col + parity - g.padding)
    })
}

/// The adjoint of [`space_to_depth`]: the gradient of `x` from that of its
/// view, dropping the padding.
fn depth_to_space(view: &[f32], g: &Geometry, dx: &mut [f32]) {
    let (h2, w2) = ((g.h + 2 * g.padding) / 2, (g.w + 2 * g.padding) / 2);
    dx.par_chunks_mut(g.h * g.w)
        .zip(view.par_chunks(4 * h2 * w2))
        .with_min_len(min_items(g.h * g.w))
        .for_each(|(plane, planes)| {
            for (y, row) in plane.chunks_exact_mut(g.w).enumerate() {
                let yp = y + g.padding;
                for (px, (col, first)) in parity_columns(g).into_iter().enumerate() {
                    if first >= row.len() {
                        continue;
                    }
                    let src = &planes[((yp % 2) * 2 + px) * h2 * w2 + (yp / 2) * w2..][..w2];
                    scatter_strided(&mut row[first..], &src[col..], 2);
                }
            }
        });
}

/// The forward of `g` (see [`applies`]) into `out`.
pub(super) fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let plan = Plan::of(&g);
    let packed = pack(plan.c_out, plan.c_in, plan.k * plan.k, |o, c, t| {
        Plan::weight(&g, weight, o, c, t)
    });
    debug_assert_eq!((plan.ho(), plan.wo()), (g.out_h(), g.out_w()));
    run(stage_input(x, &g), &packed, Some(bias), plan, out);
}

/// The input gradient of `g` (see [`applies`]) into `dx`: the conv of `dy`
/// padded by `k − 1 − padding` with the flipped, transposed weights (of the
/// space-to-depth view for stride 2, computed parity by parity where
/// [`by_parity`] takes it).
pub(super) fn input_grad(dy: &[f32], weight: &[f32], g: Geometry, dx: &mut [f32]) {
    if g.stride == 2 && by_parity(&g, weight, dy, dx) {
        return;
    }
    input_grad_on_grid(dy, weight, g, dx);
}

/// The stride-1 problem of `g`'s input gradient: the conv of `dy` padded by
/// `k − 1 − padding` (of the space-to-depth view's plan for stride 2).
fn transposed_plan(g: &Geometry) -> Plan {
    let plan = Plan::of(g);
    let transposed = Plan {
        c_in: plan.c_out,
        h: plan.ho(),
        w: plan.wo(),
        c_out: plan.c_in,
        k: plan.k,
        padding: plan.k - 1 - plan.padding,
    };
    debug_assert_eq!((transposed.ho(), transposed.wo()), (plan.h, plan.w));
    transposed
}

/// `stage` for the input gradient: sample `b` of `dy` on zero-padded planes.
fn stage_grad(dy: &[f32], transposed: Plan) -> impl Fn(usize, &mut [f32]) + Sync + '_ {
    let per_sample = transposed.c_in * transposed.h * transposed.w;
    move |b, xp| pad_into(&dy[b * per_sample..][..per_sample], transposed, xp)
}

/// The input gradient over the whole output grid of the transposed plan,
/// through the space-to-depth view for stride 2.
fn input_grad_on_grid(dy: &[f32], weight: &[f32], g: Geometry, dx: &mut [f32]) {
    let plan = Plan::of(&g);
    let kk = plan.k * plan.k;
    let packed = pack(plan.c_in, plan.c_out, kk, |c, o, t| {
        Plan::weight(&g, weight, o, c, kk - 1 - t)
    });
    let transposed = transposed_plan(&g);
    let stage = stage_grad(dy, transposed);
    if g.stride == 1 {
        run(stage, &packed, None, transposed, dx);
    } else {
        let mut view = zeros(g.n * plan.c_in * plan.h * plan.w, 0f32);
        run(stage, &packed, None, transposed, &mut view);
        depth_to_space(&view, &g, dx);
    }
}

/// For one parity `d` (0 or 1) of a stride-2 conv's input rows (or
/// columns) of length `len`: the view rows `i` whose pixel `2i + d −
/// padding` lies inside the input, as a range.
fn parity_range(g: &Geometry, d: usize, len: usize) -> (usize, usize) {
    let lo = g.padding.saturating_sub(d).div_ceil(2);
    let hi = (len + g.padding - d).div_ceil(2);
    (lo, hi)
}

/// The input gradient of a stride-2 conv straight into `dx`, one parity of
/// its pixels at a time: the view channels `4c + parity` are computed in
/// blocks of one parity (channel `parity · C + c`), and only over the view
/// rows and columns that land inside the input, where the whole view grid
/// computes a row and a column more per channel (a quarter more work at 16
/// pixels) and then goes through [`depth_to_space`]. Each value is the same
/// sum as the view's, so `dx` is the same bit for bit. The padded planes
/// are made long enough for the blocks of every parity. Returns false,
/// having written nothing, when the channels are not whole register blocks;
/// the caller then takes the view.
fn by_parity(g: &Geometry, weight: &[f32], dy: &[f32], dx: &mut [f32]) -> bool {
    if !g.c.is_multiple_of(MR) {
        return false;
    }
    let transposed = transposed_plan(g);
    let wp = transposed.wp();
    let k = transposed.k;
    let reach = (k - 1) * (wp + 1);
    // Per parity (dy, dx): view rows, view columns, first and past-the-last grid pixel.
    let windows: Vec<_> = (0..4)
        .map(|parity| {
            let rows = parity_range(g, parity / 2, g.h);
            let cols = parity_range(g, parity % 2, g.w);
            let start = rows.0 * wp + cols.0;
            let end = (rows.1 - 1) * wp + cols.1;
            (rows, cols, start, end)
        })
        .collect();
    let plane = windows
        .iter()
        .map(|&(_, _, start, end)| start + (end - start).div_ceil(BLOCK) * BLOCK + reach)
        .fold(transposed.plane(), usize::max);
    let kk = k * k;
    let c_in = transposed.c_in;
    // Output channel `parity · C + c` is view channel `4c + parity`.
    let view = |o: usize| 4 * (o % g.c) + o / g.c;
    let packed = pack(4 * g.c, c_in, kk, |o, c, t| {
        Plan::weight(g, weight, c, view(o), kk - 1 - t)
    });
    let offs: Vec<usize> = (0..kk).map(|t| (t / k) * wp + t % k).collect();
    let image = g.h * g.w;
    let per_sample = c_in * transposed.h * transposed.w;
    dx.par_chunks_mut(g.c * image)
        .enumerate()
        .for_each(|(b, dx)| {
            let mut xp = take_scratch::<f32>(c_in * plane);
            let sample = &dy[b * per_sample..][..per_sample];
            pad_into_planes(sample, transposed, plane, &mut xp[..c_in * plane]);
            let mut acc = [0f32; MR * BLOCK];
            for ob in 0..blocks_of(4 * g.c) {
                let parity = ob * MR / g.c;
                let (rows, cols, start, end) = windows[parity];
                let (py, px) = (parity / 2, parity % 2);
                let w = &packed[ob * c_in * kk * MR..][..c_in * kk * MR];
                for q0 in (start..end).step_by(BLOCK) {
                    // SAFETY: avx512f was detected by `applies`; xp holds
                    // c_in planes of `plane` elements, and every load of the
                    // block, below start + whole blocks + reach, stays inside
                    // its plane (`plane` is the largest such bound).
                    unsafe { block(&xp[..c_in * plane], plane, c_in, &offs, w, q0, &mut acc) };
                    for o in 0..MR {
                        let c = (ob * MR + o) % g.c;
                        let dst = &mut dx[c * image..][..image];
                        let row = &acc[o * BLOCK..][..BLOCK];
                        let q1 = (q0 + BLOCK).min(end);
                        let mut q = q0;
                        while q < q1 {
                            let (i, j) = (q / wp, q % wp);
                            let stop = (q1 - q).min(wp - j);
                            let (j0, j1) = (j.max(cols.0), (j + stop).min(cols.1));
                            if (rows.0..rows.1).contains(&i) && j0 < j1 {
                                let y = 2 * i + py - g.padding;
                                let x0 = 2 * j0 + px - g.padding;
                                scatter_strided(
                                    &mut dst[y * g.w + x0..],
                                    &row[q - q0 + (j0 - j)..][..j1 - j0],
                                    2,
                                );
                            }
                            q += stop;
                        }
                    }
                }
            }
            give_scratch(xp);
        });
    true
}

/// Copies `dy` `(C_out, H_out, W_out)` onto the padded grid `(C_out, grid)`,
/// zeros in the dropped columns and past the last row.
fn grid_into(dy: &[f32], p: Plan, dst: &mut [f32]) {
    let (ho, wo, wp, grid) = (p.ho(), p.wo(), p.wp(), p.grid());
    dst.fill(0.0);
    for (src, d) in dy.chunks_exact(ho * wo).zip(dst.chunks_exact_mut(grid)) {
        for (oy, row) in src.chunks_exact(wo).enumerate() {
            d[oy * wp..][..wo].copy_from_slice(row);
        }
    }
}

/// Most products one f32 lane of [`weight_block`] sums before its result
/// is added in f64 (the GEMM path sums 512 pixels per f32 block; a lane
/// holds every 16th pixel).
const LANE_TERMS: usize = 256;

/// Most taps of a plan's kernel (2×2, 3×3 or 4×4 in the model).
const MAX_TAPS: usize = 16;

/// Grid pixels per pass of [`weight_block`] over all taps: with MR
/// gradient rows and MR input planes, the pass reads about 10 KiB, which
/// stays in L1 while every tap uses it.
const CHUNK: usize = 256;

/// `acc[t][o][c] = Σ_s Σ_q dy[s·dy_stride + o·grid + q] · xp[s·x_stride +
/// c·plane + offs[t] + q]` over `samples` samples' grids, for MR output and
/// MR input channels, each summed in 16 f32 lanes.
///
/// # Safety
/// The CPU must have AVX-512F; `offs.len() ≤ MAX_TAPS`; for every sample
/// `s`, `dy` must hold MR rows of `grid` (a multiple of 16) from
/// `s·dy_stride`, and `xp` MR planes of `plane ≥ max(offs) + grid` elements
/// from `s·x_stride`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_block(
    (dy, dy_stride, grid): (&[f32], usize, usize),
    (xp, x_stride, plane): (&[f32], usize, usize),
    offs: &[usize],
    samples: usize,
    acc: &mut [f32; MAX_TAPS * MR * MR],
) {
    use std::arch::x86_64::*;
    let max_off = offs.iter().copied().max().unwrap_or(0);
    debug_assert!(grid.is_multiple_of(16) && offs.len() <= MAX_TAPS);
    debug_assert!(dy.len() >= (samples - 1) * dy_stride + MR * grid);
    debug_assert!(xp.len() >= (samples - 1) * x_stride + (MR - 1) * plane + max_off + grid);
    let mut sums = [[[_mm512_setzero_ps(); MR]; MR]; MAX_TAPS];
    for s in 0..samples {
        // SAFETY (all pointer arithmetic below): in bounds by the contract.
        let (dyb, xb) = unsafe {
            (
                dy.as_ptr().add(s * dy_stride),
                xp.as_ptr().add(s * x_stride),
            )
        };
        for v0 in (0..grid).step_by(CHUNK) {
            let v1 = (v0 + CHUNK).min(grid);
            for (&off, tap) in offs.iter().zip(sums.iter_mut()) {
                let mut regs = *tap;
                for v in (v0..v1).step_by(16) {
                    let mut dv = [_mm512_setzero_ps(); MR];
                    let mut xv = [_mm512_setzero_ps(); MR];
                    for i in 0..MR {
                        dv[i] = unsafe { _mm512_loadu_ps(dyb.add(i * grid + v)) };
                        xv[i] = unsafe { _mm512_loadu_ps(xb.add(i * plane + off + v)) };
                    }
                    for (row, d) in regs.iter_mut().zip(&dv) {
                        for (r, x) in row.iter_mut().zip(&xv) {
                            *r = _mm512_fmadd_ps(*d, *x, *r);
                        }
                    }
                }
                *tap = regs;
            }
        }
    }
    for (t, tap) in sums.iter().enumerate().take(offs.len()) {
        for (o, row) in tap.iter().enumerate() {
            for (c, r) in row.iter().enumerate() {
                acc[(t * MR + o) * MR + c] = _mm512_reduce_add_ps(*r);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_block(
    _: (&[f32], usize, usize),
    _: (&[f32], usize, usize),
    _: &[usize],
    _: usize,
    _: &mut [f32; MAX_TAPS * MR * MR],
) {
    unreachable!("`applies` is false off x86_64")
}

/// The weight gradient of `g` (see [`applies`]) into `dw` `(C_out, C, k, k)`:
/// per group of samples and tap an f32 sum over their grids (at most
/// [`LANE_TERMS`] products per lane), added in f64.
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: Geometry, dw: &mut [f32]) {
    let p = Plan::of(&g);
    let (ho, wo, wp, grid, plane) = (p.ho(), p.wo(), p.wp(), p.grid(), p.plane());
    let (n, c_in, kk) = (g.n, p.c_in, p.k * p.k);
    // Whole register blocks of channels; pad_into and grid_into zero the
    // extra planes and rows.
    let (c_in_pad, c_out_pad) = (blocks_of(c_in) * MR, blocks_of(g.c_out) * MR);
    let offs: Vec<usize> = (0..kk).map(|t| (t / p.k) * wp + t % p.k).collect();
    let mut xp = take_scratch::<f32>(n * c_in_pad * plane);
    let mut dyg = take_scratch::<f32>(n * c_out_pad * grid);
    let stage = stage_input(x, &g);
    xp[..n * c_in_pad * plane]
        .par_chunks_mut(c_in_pad * plane)
        .enumerate()
        .for_each(|(b, d)| stage(b, d));
    dyg[..n * c_out_pad * grid]
        .par_chunks_mut(c_out_pad * grid)
        .zip(dy.par_chunks(g.c_out * ho * wo))
        .for_each(|(d, s)| grid_into(s, p, d));
    let (xp_ref, dyg_ref) = (&xp[..], &dyg[..]);
    let blocks: Vec<(usize, usize)> = (0..blocks_of(g.c_out))
        .flat_map(|ob| (0..blocks_of(c_in)).map(move |cb| (ob, cb)))
        .collect();
    // Per block, [o][c][t] in f64.
    let sums: Vec<Vec<f64>> = blocks
        .par_iter()
        .map(|&(ob, cb)| {
            let mut sum = vec![0f64; MR * MR * kk];
            let mut acc = [0f32; MAX_TAPS * MR * MR];
            // Samples per f32 sum: at most LANE_TERMS products per lane.
            let group = (LANE_TERMS * 16 / grid).max(1);
            let (dy_stride, x_stride) = (c_out_pad * grid, c_in_pad * plane);
            for b0 in (0..n).step_by(group) {
                let samples = group.min(n - b0);
                let dy_rows = &dyg_ref[b0 * dy_stride + ob * MR * grid..];
                let x_planes = &xp_ref[b0 * x_stride + cb * MR * plane..];
                // SAFETY: avx512f was detected by `applies`, which also
                // bounds the taps; the grid is whole vectors, `Plan::plane`
                // ≥ every offset + grid, and the samples' rows and planes
                // lie inside the buffers.
                unsafe {
                    weight_block(
                        (dy_rows, dy_stride, grid),
                        (x_planes, x_stride, plane),
                        &offs,
                        samples,
                        &mut acc,
                    )
                };
                for (t, tap) in acc.chunks_exact(MR * MR).take(kk).enumerate() {
                    for (i, a) in tap.iter().enumerate() {
                        sum[i * kk + t] += f64::from(*a);
                    }
                }
            }
            sum
        })
        .collect();
    // dW of the plan's (o, c, t), mapped back to g's weight as in
    // `Plan::weight`.
    let k = g.k;
    for (&(ob, cb), sum) in blocks.iter().zip(&sums) {
        for (i, taps) in sum.chunks_exact(kk).enumerate() {
            let (o, c) = (ob * MR + i / MR, cb * MR + i % MR);
            if o >= g.c_out || c >= c_in {
                continue;
            }
            for (t, s) in taps.iter().enumerate() {
                let at = if g.stride == 1 {
                    (o * g.c + c) * kk + t
                } else {
                    let (a, b) = (t / p.k, t % p.k);
                    let (ci, dy, dx) = (c / 4, (c / 2) % 2, c % 2);
                    (o * g.c + ci) * k * k + (2 * a + dy) * k + 2 * b + dx
                };
                dw[at] = *s as f32;
            }
        }
    }
    give_scratch(xp);
    give_scratch(dyg);
}

/// `dst[i · stride] = src[i]` for as many elements as both hold.
fn scatter_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    for (d, v) in dst.iter_mut().step_by(stride).zip(src) {
        *d = *v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight gradient and the forward do not depend on how many
    /// threads share their tasks (ARCHITECTURE's invariant: the cut follows
    /// the shapes alone), for a stride-2 and a stride-1 layer with a partial
    /// group of samples and channels that are not whole blocks.
    #[test]
    fn results_are_the_same_on_any_number_of_threads() {
        if !avx512() {
            eprintln!("skipped: this CPU has no AVX-512F, so the kernels do not run");
            return;
        }
        for (n, c, c_out, h, k, stride, padding) in
            [(7, 3, 10, 32, 4, 2, 1), (5, 6, 2, 24, 3, 1, 1)]
        {
            let g = Geometry {
                n,
                c,
                h,
                w: h,
                c_out,
                k,
                stride,
                padding,
                budget: usize::MAX,
                direct: false,
                shifted: true,
                winograd: false,
                winograd4: false,
                winograd4_weight_grad: false,
            };
            assert!(applies(&g), "{g:?}");
            let x: Vec<f32> = (0..n * c * h * h)
                .map(|i| (i as f32 * 0.41).sin())
                .collect();
            let weight: Vec<f32> = (0..c_out * c * k * k)
                .map(|i| (i as f32 * 0.29).cos())
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.1).collect();
            let dy: Vec<f32> = (0..n * c_out * g.out_h() * g.out_w())
                .map(|i| (i as f32 * 0.17).cos())
                .collect();
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut dw = vec![0f32; c_out * c * k * k];
                let mut y = vec![0f32; dy.len()];
                pool.install(|| {
                    weight_grad(&x, &dy, g, &mut dw);
                    forward(&x, &weight, &bias, g, &mut y);
                });
                (dw, y)
            };
            let one = on(1);
            assert!(one.0.iter().any(|v| *v != 0.0) && one.1.iter().any(|v| *v != 0.0));
            for threads in [2, 3] {
                let many = on(threads);
                for (a, b) in one.0.iter().chain(&one.1).zip(many.0.iter().chain(&many.1)) {
                    assert_eq!(a.to_bits(), b.to_bits(), "{g:?} on {threads} threads");
                }
            }
        }
    }

    /// The parity path's input gradient equals the view path's bit for bit:
    /// the encoder's shapes (4×4, stride 2, padding 1) at 16 and 32 pixels,
    /// a non-square one, odd sizes, and ±0 in the upstream gradient; channel
    /// counts that are not whole blocks take the view path instead.
    #[test]
    fn parity_input_gradient_equals_the_view_path_bit_for_bit() {
        if !avx512() {
            eprintln!("skipped: this CPU has no AVX-512F, so the kernels do not run");
            return;
        }
        // (n, C, C_out, H, W, whether the parity path takes it): 3 channels
        // are not whole blocks.
        for (n, c, c_out, h, w, taken) in [
            (2, 8, 4, 32, 32, true),
            (3, 4, 8, 32, 48, true),
            (1, 8, 4, 34, 38, true),
            (3, 4, 8, 16, 16, true),
            (2, 3, 4, 32, 32, false),
        ] {
            let g = Geometry {
                n,
                c,
                h,
                w,
                c_out,
                k: 4,
                stride: 2,
                padding: 1,
                budget: usize::MAX,
                direct: false,
                shifted: true,
                winograd: false,
                winograd4: false,
                winograd4_weight_grad: false,
            };
            assert!(applies(&g), "{g:?}");
            let weight: Vec<f32> = (0..c_out * c * 16)
                .map(|i| (i as f32 * 0.61).sin())
                .collect();
            let dy: Vec<f32> = (0..n * c_out * g.out_h() * g.out_w())
                .map(|i| {
                    if i % 9 == 0 {
                        -0.0
                    } else {
                        (i as f32 * 0.23).cos()
                    }
                })
                .collect();
            let len = n * c * h * w;
            let mut parity = vec![f32::NAN; len];
            let took = by_parity(&g, &weight, &dy, &mut parity);
            assert_eq!(took, taken, "{g:?}");
            if !took {
                assert!(
                    parity.iter().all(|v| v.is_nan()),
                    "it wrote before declining"
                );
                continue;
            }
            let mut view = vec![0f32; len];
            input_grad_on_grid(&dy, &weight, g, &mut view);
            for (i, (a, b)) in parity.iter().zip(&view).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{g:?} at {i}: {a} vs {b}");
            }
        }
    }
}
