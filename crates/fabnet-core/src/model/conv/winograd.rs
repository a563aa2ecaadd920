//! 3×3 convolutions with stride 1 and padding 1 in f32 by Winograd's
//! minimal filtering F(2×2, 3×3) (Lavin and Gray, CVPR 2016): the forward,
//! input and weight gradients of the decoders' convs.
//!
//! Each 2×2 block of outputs (a tile) comes from the 4×4 input patch around
//! it. With the patch transformed to `V = Bᵀ d B` and each 3×3 kernel to
//! `U = G g Gᵀ` (both 4×4), the tile is `Aᵀ (Σ_c U ⊙ V) A`: 16 products per
//! (output channel, input channel, tile) instead of the direct conv's 36.
//! The sum over input channels is, for each of the 16 positions ξ of the
//! 4×4 transform, a GEMM `M[ξ] = U[ξ] (C_out × C) @ V[ξ] (C × tiles)`, which
//! the `gemm` crate runs. The transforms work on whole rows of tiles, so
//! that their loops run over contiguous slices: a tile's four patch columns
//! are the even and odd columns of the padded input rows. The input,
//! output and gradient transforms split (or, for the output, interleave)
//! them sixteen tiles at a time with AVX-512 permutes where the CPU has
//! them, the same sums bit for bit (tests compare), else one row at a time.
//!
//! The input gradient of such a conv is the same conv of the upstream
//! gradient with the kernels flipped and the channels swapped. The weight
//! gradient runs the transforms' adjoints ([`weight_grad`]), for layers
//! whose transformed batch fits [`WEIGHT_GRAD_BUDGET`].
//!
//! Rounding: the transforms' coefficients are 0, ±½ and ±1, but each output
//! sums up to 9 products of sums, so its error bound is about 9 times the
//! direct conv's (see the test).

#[cfg(target_arch = "x86_64")]
use super::first_lanes;
use super::{matmul, Geometry, SyncPtr};
use crate::model::storage::{give_scratch, take_scratch};
use rayon::prelude::*;

/// Positions of the 4×4 transform.
const XI: usize = 16;

/// Tasks a layer is at least cut into (when it has that many rows of tiles),
/// so that the cores share the work evenly.
const MIN_TASKS: usize = 8;

/// Whether `g` has the shape this module computes: a 3×3 kernel, stride 1,
/// padding 1 (so the output has the input's size).
pub(super) fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.padding == 1
}

/// One problem: `c_in` planes of `h × w` to `c_out` planes of the same size.
#[derive(Clone, Copy, Debug)]
struct Shape {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    /// Most transformed elements (`16 × channels × tiles`) one task holds.
    budget: usize,
}

impl Shape {
    /// Rows and columns of 2×2 tiles.
    fn tiles(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }

    /// The batch's tile rows cut into tasks (see [`Shape::rows_per_task`]).
    fn tasks(&self) -> Vec<(usize, usize)> {
        let total_rows = self.n * self.tiles().0;
        let per_task = self.rows_per_task();
        (0..total_rows)
            .step_by(per_task)
            .map(|r0| (r0, (r0 + per_task).min(total_rows)))
            .collect()
    }

    /// Rows of tiles per task: the batch's tile rows (`sample · rows + row`)
    /// cut into runs whose transforms fit the budget, at least
    /// [`MIN_TASKS`] of them when there are enough rows. The cut depends on
    /// the shape alone, never on the number of threads: the forward
    /// computes every tile on its own, and the weight gradient's f32 sums
    /// follow the cut.
    fn rows_per_task(&self) -> usize {
        let (th, tw) = self.tiles();
        let per_row = XI * self.c_in.max(self.c_out) * tw;
        (self.budget / per_row)
            .min((self.n * th).div_ceil(MIN_TASKS))
            .max(1)
    }
}

/// `U[ξ][o][c]` of `kernel(o, c)` (a 3×3 kernel, row-major): `G g Gᵀ`.
fn transform_weights(
    c_out: usize,
    c_in: usize,
    kernel: impl Fn(usize, usize) -> [f32; 9] + Sync,
) -> Vec<f32> {
    let mut u = vec![0f32; XI * c_out * c_in];
    // Rows of G: g0; (g0 + g1 + g2)/2; (g0 − g1 + g2)/2; g2.
    let g_rows = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let per_xi = c_out * c_in;
    let cells: Vec<[f32; XI]> = (0..per_xi)
        .into_par_iter()
        .map(|i| {
            let g = kernel(i / c_in, i % c_in);
            // G g: 4 rows of 3.
            let cols: [[f32; 4]; 3] = [0, 1, 2].map(|j| g_rows(g[j], g[3 + j], g[6 + j]));
            let mut cell = [0f32; XI];
            for r in 0..4 {
                let row = g_rows(cols[0][r], cols[1][r], cols[2][r]);
                cell[4 * r..4 * r + 4].copy_from_slice(&row);
            }
            cell
        })
        .collect();
    for (i, cell) in cells.iter().enumerate() {
        for (xi, v) in cell.iter().enumerate() {
            u[xi * per_xi + i] = *v;
        }
    }
    u
}

/// `V[ξ][c][t]` for the tile rows `rows` of the batch, `t` counting their
/// tiles in order (`tw` per row), into `v` (`16 × c_in × rows·tw`).
fn transform_input(x: &[f32], s: Shape, rows: (usize, usize), v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::shifted::avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { transform_input_avx512(x, s, rows, v) };
        return;
    }
    transform_input_scalar(x, s, rows, v);
}

/// The even and the odd elements of the 32 floats `a` then `b`, by two
/// permutes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn split_even_odd(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    (
        _mm512_permutex2var_ps(a, even, b),
        _mm512_permutex2var_ps(a, odd, b),
    )
}

/// The patch rows each transformed row `pr` of `Bᵀ d` combines: `d[a] ± d[b]`
/// (`true`: +).
#[cfg(target_arch = "x86_64")]
const ROW_PAIRS: [(usize, usize, bool); 4] =
    [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)];

/// [`transform_input_scalar`] with AVX-512, bit for bit: for sixteen tiles
/// at a time, each patch row pair is combined on the padded columns the
/// tiles read (the same `a ± b` per element, and `0 ± 0` in the padding, from
/// masked loads), and the combined columns are split into even and odd ones
/// by two permutes. (Combining whole rows into a buffer first made every
/// read of it wait for the masked stores before it.)
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_input_avx512(x: &[f32], s: Shape, rows: (usize, usize), v: &mut [f32]) {
    use std::arch::x86_64::*;
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    assert!(x.len() >= s.n * s.c_in * plane && rows.1 <= s.n * th);
    assert!(v.len() >= XI * s.c_in * tiles);
    let zero_line = vec![0f32; s.w];
    // Lanes of a 16-float load from input column `start` (which may be −1)
    // that hold input columns 0..w; the others read as zero.
    let w = s.w as isize;
    let inside = |start: isize| -> __mmask16 {
        let lo = (-start).clamp(0, 16);
        let hi = (w - start).clamp(0, 16);
        if hi <= lo {
            0
        } else {
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        }
    };
    // Per group of sixteen tiles from t0: the store mask, and the four loads'
    // first input columns (padded column 2·t0 + k is input column
    // 2·t0 + k − 1) with their masks.
    let mut groups = Vec::with_capacity(tw.div_ceil(16));
    for t0 in (0..tw).step_by(16) {
        let store = first_lanes(tw - t0);
        let mut starts = [0isize, 16, 2, 18];
        let mut masks = [0 as __mmask16; 4];
        for (start, mask) in starts.iter_mut().zip(&mut masks) {
            *start += 2 * t0 as isize - 1;
            *mask = inside(*start);
        }
        groups.push((t0, store, starts, masks));
    }
    let step = s.c_in * tiles;
    for c in 0..s.c_in {
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let src = &x[(b * s.c_in + c) * plane..][..plane];
            // Patch row r is input row 2·ty + r − 1, zeros outside the image.
            let mut lines: [&[f32]; 4] = [&zero_line[..]; 4];
            for (r, line) in lines.iter_mut().enumerate() {
                if let Some(y) = (2 * ty + r).checked_sub(1).filter(|&y| y < s.h) {
                    *line = &src[y * s.w..][..s.w];
                }
            }
            for &(t0, store, starts, masks) in &groups {
                for (pr, &(ra, rb, add)) in ROW_PAIRS.iter().enumerate() {
                    // A plain loop: a closure here would not inherit AVX-512
                    // and would run as a call per vector.
                    let mut combined = [_mm512_setzero_ps(); 4];
                    for (k, dst) in combined.iter_mut().enumerate() {
                        let (start, m) = (starts[k], masks[k]);
                        // SAFETY: only lanes inside the row are read (masked
                        // loads do not touch the others), so the pointer may
                        // point before or past the row.
                        let (a, b) = unsafe {
                            (
                                _mm512_maskz_loadu_ps(m, lines[ra].as_ptr().wrapping_offset(start)),
                                _mm512_maskz_loadu_ps(m, lines[rb].as_ptr().wrapping_offset(start)),
                            )
                        };
                        *dst = if add {
                            _mm512_add_ps(a, b)
                        } else {
                            _mm512_sub_ps(a, b)
                        };
                    }
                    let [a0, a1, b0, b1] = combined;
                    // re/ro: the even/odd padded columns from tile t0; re1/ro1 from t0 + 1.
                    let (re, ro) = split_even_odd(a0, a1);
                    let (re1, ro1) = split_even_odd(b0, b1);
                    // SAFETY: the masked stores write tiles t0..tw of this
                    // tile row in the four planes of `pr`, inside v by the
                    // assertion.
                    unsafe {
                        let out = v.as_mut_ptr().add(pr * 4 * step + c * tiles + i * tw + t0);
                        _mm512_mask_storeu_ps(out, store, _mm512_sub_ps(re, re1));
                        _mm512_mask_storeu_ps(out.add(step), store, _mm512_add_ps(ro, re1));
                        _mm512_mask_storeu_ps(out.add(2 * step), store, _mm512_sub_ps(re1, ro));
                        _mm512_mask_storeu_ps(out.add(3 * step), store, _mm512_sub_ps(ro, ro1));
                    }
                }
            }
        }
    }
}

/// `V = Bᵀ d B` of every tile in tile rows `rows` into `v` `(16, c_in, tiles)`.
fn transform_input_scalar(x: &[f32], s: Shape, rows: (usize, usize), v: &mut [f32]) {
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    // The 4 patch rows of a tile row, padded (one zero column on the left,
    // zeros past the right edge) and split into even and odd columns:
    // padded column 2·tx + j is `even[tx + j/2]` for even j, else
    // `odd[tx + j/2]`.
    let mut even: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw + 1]);
    let mut odd: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw + 1]);
    let (mut re, mut ro) = (vec![0f32; tw + 1], vec![0f32; tw + 1]);
    for c in 0..s.c_in {
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let src = &x[(b * s.c_in + c) * plane..][..plane];
            for (r, (e, o)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                e.fill(0.0);
                o.fill(0.0);
                // Patch row r is input row 2·ty + r − 1; input column xi
                // sits at padded column xi + 1.
                let Some(y) = (2 * ty + r).checked_sub(1).filter(|&y| y < s.h) else {
                    continue;
                };
                let line = &src[y * s.w..][..s.w];
                for (d, v) in o.iter_mut().zip(line.iter().step_by(2)) {
                    *d = *v;
                }
                for (d, v) in e[1..].iter_mut().zip(line.iter().skip(1).step_by(2)) {
                    *d = *v;
                }
            }
            // Bᵀ d on the rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3), then
            // the same on the columns c0 = e[tx], c1 = o[tx], c2 = e[tx + 1],
            // c3 = o[tx + 1].
            let [e0, e1, e2, e3] = &even;
            let [o0, o1, o2, o3] = &odd;
            for (pr, ((ea, eb), (oa, ob), add)) in [
                ((e0, e2), (o0, o2), false),
                ((e1, e2), (o1, o2), true),
                ((e2, e1), (o2, o1), false),
                ((e1, e3), (o1, o3), false),
            ]
            .into_iter()
            .enumerate()
            {
                if add {
                    sum_into(&mut re, ea, eb);
                    sum_into(&mut ro, oa, ob);
                } else {
                    difference_into(&mut re, ea, eb);
                    difference_into(&mut ro, oa, ob);
                }
                let at = |xi: usize| (pr * 4 + xi) * s.c_in * tiles + c * tiles + i * tw;
                difference_into(&mut v[at(0)..][..tw], &re, &re[1..]);
                sum_into(&mut v[at(1)..][..tw], &ro, &re[1..]);
                difference_into(&mut v[at(2)..][..tw], &re[1..], &ro);
                difference_into(&mut v[at(3)..][..tw], &ro, &ro[1..]);
            }
        }
    }
}

/// `dst[i] = a[i] + b[i]` over `dst`.
fn sum_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    let (a, b) = (&a[..dst.len()], &b[..dst.len()]);
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x + y;
    }
}

/// `dst[i] = a[i] − b[i]` over `dst`.
fn difference_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    let (a, b) = (&a[..dst.len()], &b[..dst.len()]);
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x - y;
    }
}

/// Writes the outputs of tile rows `rows` from `m` (`16 × c_out × tiles`),
/// `Aᵀ M A` per tile plus `bias`, into the batch's output `(N, c_out, h, w)`
/// at `out`.
///
/// # Safety
/// `out` must point to the whole output; no other thread may access the
/// output rows of these tile rows meanwhile.
unsafe fn transform_output(
    m: &[f32],
    s: Shape,
    rows: (usize, usize),
    bias: Option<&[f32]>,
    out: SyncPtr<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::shifted::avx512() {
        // SAFETY: the CPU has AVX-512F; the output contract is the caller's.
        unsafe { transform_output_avx512(m, s, rows, bias, out) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { transform_output_scalar(m, s, rows, bias, out) };
}

/// [`transform_output_scalar`] with AVX-512, bit for bit: sixteen tiles at a
/// time, the same sums in the same order, the left and right columns
/// interleaved by two permutes and stored with masks.
///
/// # Safety
/// The CPU must have AVX-512F; the output contract of [`transform_output`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_output_avx512(
    m: &[f32],
    s: Shape,
    rows: (usize, usize),
    bias: Option<&[f32]>,
    out: SyncPtr<f32>,
) {
    use std::arch::x86_64::*;
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    assert!(m.len() >= XI * s.c_out * tiles);
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for o in 0..s.c_out {
        let add = _mm512_set1_ps(bias.map_or(0.0, |b| b[o]));
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let base = o * tiles + i * tw;
            for r in 0..2 {
                let y = 2 * ty + r;
                if y >= s.h {
                    break;
                }
                // SAFETY: the row lies inside the output (the caller's
                // contract).
                let dst = unsafe { out.get().add((b * s.c_out + o) * plane + y * s.w) };
                for t0 in (0..tw).step_by(16) {
                    let lanes = first_lanes(tw - t0);
                    // Aᵀ M: row 0 is M0 + M1 + M2, row 1 is M1 − M2 − M3.
                    let mut sums = [_mm512_setzero_ps(); 4];
                    for (j, sum) in sums.iter_mut().enumerate() {
                        // A plain loop, not a closure: closures do not
                        // inherit AVX-512 and would run as calls.
                        let mut ms = [_mm512_setzero_ps(); 4];
                        for (k, v) in ms.iter_mut().enumerate() {
                            // SAFETY: tiles t0.. of this tile row, masked to
                            // the row's tiles, inside m by the assertion.
                            *v = unsafe {
                                _mm512_maskz_loadu_ps(
                                    lanes,
                                    m.as_ptr().add((4 * k + j) * s.c_out * tiles + base + t0),
                                )
                            };
                        }
                        let [m0, m1, m2, m3] = ms;
                        *sum = if r == 0 {
                            _mm512_add_ps(_mm512_add_ps(m0, m1), m2)
                        } else {
                            _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3)
                        };
                    }
                    let [s0, s1, s2, s3] = sums;
                    let left = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), s2), add);
                    let right = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s1, s2), s3), add);
                    // Output columns 2·t0.. of this row: a pair per tile, an
                    // odd width ending with a left column alone.
                    let width = s.w - 2 * t0;
                    // SAFETY: masked to the row's remaining `width` columns.
                    unsafe {
                        let at = dst.add(2 * t0);
                        _mm512_mask_storeu_ps(
                            at,
                            first_lanes(width),
                            _mm512_permutex2var_ps(left, low, right),
                        );
                        _mm512_mask_storeu_ps(
                            at.add(16),
                            first_lanes(width.saturating_sub(16)),
                            _mm512_permutex2var_ps(left, high, right),
                        );
                    }
                }
            }
        }
    }
}

/// [`transform_output`] one row of tiles at a time.
///
/// # Safety
/// The output contract of [`transform_output`].
unsafe fn transform_output_scalar(
    m: &[f32],
    s: Shape,
    rows: (usize, usize),
    bias: Option<&[f32]>,
    out: SyncPtr<f32>,
) {
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    let mut sums: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw]);
    let (mut left, mut right) = (vec![0f32; tw], vec![0f32; tw]);
    for o in 0..s.c_out {
        let add = bias.map_or(0.0, |b| b[o]);
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let at = |xi: usize| &m[(xi * s.c_out + o) * tiles + i * tw..][..tw];
            for r in 0..2 {
                let y = 2 * ty + r;
                if y >= s.h {
                    break;
                }
                // Aᵀ M: row 0 is M0 + M1 + M2, row 1 is M1 − M2 − M3 (rows of
                // the 4×4 M, ξ = 4·row + column).
                for (j, sum) in sums.iter_mut().enumerate() {
                    let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    if r == 0 {
                        for (((d, a), b), c) in sum.iter_mut().zip(m0).zip(m1).zip(m2) {
                            *d = a + b + c;
                        }
                    } else {
                        for (((d, a), b), c) in sum.iter_mut().zip(m1).zip(m2).zip(m3) {
                            *d = a - b - c;
                        }
                    }
                }
                // · A: left column S0 + S1 + S2, right column S1 − S2 − S3.
                let [s0, s1, s2, s3] = &sums;
                for (((l, a), b), c) in left.iter_mut().zip(s0).zip(s1).zip(s2) {
                    *l = a + b + c + add;
                }
                for (((rt, a), b), c) in right.iter_mut().zip(s1).zip(s2).zip(s3) {
                    *rt = a - b - c + add;
                }
                // SAFETY: the row lies inside the output, and only this
                // task writes it (the caller's contract).
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.get().add((b * s.c_out + o) * plane + y * s.w),
                        s.w,
                    )
                };
                let mut pairs = dst.chunks_exact_mut(2);
                for ((pair, l), rt) in pairs.by_ref().zip(&left).zip(&right) {
                    pair[0] = *l;
                    pair[1] = *rt;
                }
                // An odd width ends with a tile's left column alone.
                if let Some(last) = pairs.into_remainder().first_mut() {
                    *last = left[tw - 1];
                }
            }
        }
    }
}

/// The conv of `x` `(N, c_in, h, w)` with transformed weights `u` (see
/// [`transform_weights`]) plus `bias`, into `out` `(N, c_out, h, w)`.
fn run(x: &[f32], u: &[f32], bias: Option<&[f32]>, s: Shape, out: &mut [f32]) {
    let tw = s.tiles().1;
    assert_eq!(out.len(), s.n * s.c_out * s.h * s.w, "winograd output size");
    let tasks = s.tasks();
    // Tasks may share a sample (runs of one sample's tile rows), so each
    // writes its own output rows through a shared pointer.
    let out = SyncPtr(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(r0, r1)| {
        let tiles = (r1 - r0) * tw;
        let mut v = take_scratch::<f32>(XI * s.c_in * tiles);
        let mut m = take_scratch::<f32>(XI * s.c_out * tiles);
        transform_input(x, s, (r0, r1), &mut v);
        for xi in 0..XI {
            // SAFETY: U[ξ] is (c_out × c_in), V[ξ] (c_in × tiles) and M[ξ]
            // (c_out × tiles), row-major, inside their buffers.
            unsafe {
                matmul(
                    &mut m[xi * s.c_out * tiles..][..s.c_out * tiles],
                    tiles,
                    false,
                    &u[xi * s.c_out * s.c_in..][..s.c_out * s.c_in],
                    (s.c_in, 1),
                    &v[xi * s.c_in * tiles..][..s.c_in * tiles],
                    (tiles, 1),
                    (s.c_out, s.c_in, tiles),
                );
            }
        }
        // SAFETY: `out` is the whole output (asserted above), and the tasks'
        // tile rows, hence their output rows, are disjoint.
        unsafe { transform_output(&m, s, (r0, r1), bias, out) };
        give_scratch(v);
        give_scratch(m);
    });
}

fn shape(g: &Geometry, c_in: usize, c_out: usize) -> Shape {
    Shape {
        n: g.n,
        c_in,
        c_out,
        h: g.h,
        w: g.w,
        budget: g.budget,
    }
}

/// The forward of `g` (see [`applies`]) into `out`.
pub(super) fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let u = transform_weights(g.c_out, g.c, |o, c| {
        let mut k = [0f32; 9];
        k.copy_from_slice(&weight[(o * g.c + c) * 9..][..9]);
        k
    });
    run(x, &u, Some(bias), shape(&g, g.c, g.c_out), out);
}

/// The input gradient of `g` (see [`applies`]) into `dx`: the same conv of
/// `dy` with kernel `(c, o)` the flipped kernel `(o, c)`.
pub(super) fn input_grad(dy: &[f32], weight: &[f32], g: Geometry, dx: &mut [f32]) {
    let u = transform_weights(g.c, g.c_out, |c, o| {
        let mut k = [0f32; 9];
        for (t, v) in k.iter_mut().enumerate() {
            *v = weight[(o * g.c + c) * 9 + 8 - t];
        }
        k
    });
    run(dy, &u, None, shape(&g, g.c_out, g.c), dx);
}

/// Tiles whose products one weight-gradient GEMM sums in f32 before its
/// result is added in f64 (the GEMM path sums 512 pixels per block).
const SUM_TILES: usize = 512;

/// Most transformed elements of the batch (`16 × (C + C_out) × tiles`) for
/// which the weight gradient takes this path: it holds them all at once. On
/// the `small` model's decoder the 8×8 and 16×16 layers (3 and 6 M
/// elements) ran 1.2–1.3× faster this way than through their other paths,
/// and the 32×32 one (13 M) 1.1× slower (alternating builds).
const WEIGHT_GRAD_BUDGET: usize = 1 << 23;

/// Whether [`weight_grad`] takes `g` (which [`applies`]).
pub(super) fn weight_grad_fits(g: &Geometry) -> bool {
    let (th, tw) = shape(g, g.c, g.c_out).tiles();
    XI * (g.c + g.c_out) * g.n * th * tw <= WEIGHT_GRAD_BUDGET
}

/// `dM[ξ][o][t] = (A dY_t Aᵀ)[ξ]` for the tile rows `rows`, into `dm`
/// (`16 × c_out × tiles`): the adjoint of the output transform, from the
/// 2×2 blocks of the upstream gradient `dy` `(N, c_out, h, w)`.
fn transform_grad(dy: &[f32], s: Shape, rows: (usize, usize), dm: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::shifted::avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { transform_grad_avx512(dy, s, rows, dm) };
        return;
    }
    transform_grad_scalar(dy, s, rows, dm);
}

/// [`transform_grad_scalar`] with AVX-512, bit for bit: sixteen tiles at a
/// time, the left and right columns split from masked loads by two
/// permutes, then the same sums, differences and negations.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_grad_avx512(dy: &[f32], s: Shape, rows: (usize, usize), dm: &mut [f32]) {
    use std::arch::x86_64::*;
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    assert!(dy.len() >= s.n * s.c_out * plane && rows.1 <= s.n * th);
    assert!(dm.len() >= XI * s.c_out * tiles);
    /// `-v` as Rust computes it: the sign bit flipped (0 − v would give +0
    /// for +0).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn negate(v: __m512) -> __m512 {
        let sign = _mm512_set1_epi32(i32::MIN);
        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign))
    }
    let step = s.c_out * tiles;
    for o in 0..s.c_out {
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let src = &dy[(b * s.c_out + o) * plane..][..plane];
            for t0 in (0..tw).step_by(16) {
                let lanes = first_lanes(tw - t0);
                // Per block row: A on its left and right columns, [l, l + r, l − r, −r].
                let mut mixed = [[_mm512_setzero_ps(); 4]; 2];
                for (r, mix) in mixed.iter_mut().enumerate() {
                    let y = 2 * ty + r;
                    let (mut left, mut right) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                    if y < s.h {
                        // Columns 2·t0.. of the row, zeros past its end.
                        let width = s.w - 2 * t0;
                        // SAFETY: masked to the row's remaining columns.
                        let (a0, a1) = unsafe {
                            let p = src.as_ptr().add(y * s.w + 2 * t0);
                            (
                                _mm512_maskz_loadu_ps(first_lanes(width), p),
                                _mm512_maskz_loadu_ps(
                                    first_lanes(width.saturating_sub(16)),
                                    p.wrapping_add(16),
                                ),
                            )
                        };
                        (left, right) = split_even_odd(a0, a1);
                    }
                    *mix = [
                        left,
                        _mm512_add_ps(left, right),
                        _mm512_sub_ps(left, right),
                        negate(right),
                    ];
                }
                // A on the rows: ξ row 0 is row 0, 1 the sum, 2 the
                // difference, 3 minus row 1.
                let [top, bottom] = mixed;
                for j in 0..4 {
                    let rows4 = [
                        top[j],
                        _mm512_add_ps(top[j], bottom[j]),
                        _mm512_sub_ps(top[j], bottom[j]),
                        negate(bottom[j]),
                    ];
                    for (pr, v) in rows4.into_iter().enumerate() {
                        // SAFETY: tiles t0.. of this tile row, masked to the
                        // row's tiles, inside dm by the assertion.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                dm.as_mut_ptr()
                                    .add((pr * 4 + j) * step + o * tiles + i * tw + t0),
                                lanes,
                                v,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// [`transform_grad`] one row of tiles at a time.
fn transform_grad_scalar(dy: &[f32], s: Shape, rows: (usize, usize), dm: &mut [f32]) {
    let (th, tw) = s.tiles();
    let tiles = (rows.1 - rows.0) * tw;
    let plane = s.h * s.w;
    // The block's left and right columns of its two rows (zeros past the
    // edges), then A applied to the columns: [l, l + r, l − r, −r].
    let mut cols: [[Vec<f32>; 2]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; tw]));
    let mut mixed: [[Vec<f32>; 4]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![0f32; tw]));
    for o in 0..s.c_out {
        for (i, row) in (rows.0..rows.1).enumerate() {
            let (b, ty) = (row / th, row % th);
            let src = &dy[(b * s.c_out + o) * plane..][..plane];
            for (r, [left, right]) in cols.iter_mut().enumerate() {
                left.fill(0.0);
                right.fill(0.0);
                let y = 2 * ty + r;
                if y >= s.h {
                    continue;
                }
                let line = &src[y * s.w..][..s.w];
                for (d, v) in left.iter_mut().zip(line.iter().step_by(2)) {
                    *d = *v;
                }
                for (d, v) in right.iter_mut().zip(line.iter().skip(1).step_by(2)) {
                    *d = *v;
                }
            }
            for ([left, right], out) in cols.iter().zip(mixed.iter_mut()) {
                out[0].copy_from_slice(left);
                sum_into(&mut out[1], left, right);
                difference_into(&mut out[2], left, right);
                for (d, v) in out[3].iter_mut().zip(right) {
                    *d = -v;
                }
            }
            // A on the rows: ξ row 0 is row 0, 1 is the sum, 2 the
            // difference, 3 minus row 1.
            let [top, bottom] = &mixed;
            for j in 0..4 {
                let at = |pr: usize| (pr * 4 + j) * s.c_out * tiles + o * tiles + i * tw;
                dm[at(0)..][..tw].copy_from_slice(&top[j]);
                sum_into(&mut dm[at(1)..][..tw], &top[j], &bottom[j]);
                difference_into(&mut dm[at(2)..][..tw], &top[j], &bottom[j]);
                for (d, v) in dm[at(3)..][..tw].iter_mut().zip(&bottom[j]) {
                    *d = -v;
                }
            }
        }
    }
}

/// The weight gradient of `g` (see [`applies`]) into `dw` `(C_out, C, 3, 3)`:
/// the adjoint of the forward's transforms. With `V` the input transform and
/// `dM` the gradient's ([`transform_grad`]), `dU[ξ] = Σ_t dM[ξ][·][t] ·
/// V[ξ][·][t]ᵀ` is 16 GEMMs over the tiles, and `dW = Gᵀ dU G`. The tiles are
/// transformed by tasks in parallel; each ξ's sum then walks the tasks in
/// order, in f32 within a task (at most [`SUM_TILES`] tiles) and in f64
/// across them, so the result depends on the shapes alone.
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: Geometry, dw: &mut [f32]) {
    let s = Shape {
        budget: g.budget.min(XI * g.c.max(g.c_out) * SUM_TILES),
        ..shape(&g, g.c, g.c_out)
    };
    let tw = s.tiles().1;
    let tasks = s.tasks();
    let transformed: Vec<(Vec<f32>, Vec<f32>, usize)> = tasks
        .par_iter()
        .map(|&(r0, r1)| {
            let tiles = (r1 - r0) * tw;
            // Owned buffers rather than scratch: they outlive the task and
            // are freed on another thread.
            let mut v = vec![0f32; XI * s.c_in * tiles];
            let mut dm = vec![0f32; XI * s.c_out * tiles];
            transform_input(x, s, (r0, r1), &mut v);
            transform_grad(dy, s, (r0, r1), &mut dm);
            (v, dm, tiles)
        })
        .collect();
    let per_xi = s.c_out * s.c_in;
    let du: Vec<Vec<f64>> = (0..XI)
        .into_par_iter()
        .map(|xi| {
            let mut sum = vec![0f64; per_xi];
            let mut part = take_scratch::<f32>(per_xi);
            for (v, dm, tiles) in &transformed {
                let tiles = *tiles;
                // SAFETY: dM[ξ] is (c_out × tiles) and V[ξ] (c_in × tiles),
                // row-major, read as (tiles × c_in); part is (c_out × c_in).
                unsafe {
                    matmul(
                        &mut part[..per_xi],
                        s.c_in,
                        false,
                        &dm[xi * s.c_out * tiles..][..s.c_out * tiles],
                        (tiles, 1),
                        &v[xi * s.c_in * tiles..][..s.c_in * tiles],
                        (1, tiles),
                        (s.c_out, tiles, s.c_in),
                    );
                }
                for (acc, p) in sum.iter_mut().zip(&part[..per_xi]) {
                    *acc += f64::from(*p);
                }
            }
            give_scratch(part);
            sum
        })
        .collect();
    // Gᵀ u for a 4-vector: [u0 + (u1 + u2)/2, (u1 − u2)/2, (u1 + u2)/2 + u3].
    let gt = |u: [f64; 4]| {
        [
            u[0] + 0.5 * (u[1] + u[2]),
            0.5 * (u[1] - u[2]),
            0.5 * (u[1] + u[2]) + u[3],
        ]
    };
    dw[..per_xi * 9]
        .par_chunks_mut(9)
        .enumerate()
        .for_each(|(i, kernel)| {
            let cell = |r: usize, c: usize| du[4 * r + c][i];
            // Gᵀ dU: 3 rows of 4, then · G on each row.
            let cols: [[f64; 3]; 4] =
                std::array::from_fn(|c| gt([cell(0, c), cell(1, c), cell(2, c), cell(3, c)]));
            for r in 0..3 {
                let row = gt([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
                for (c, v) in row.iter().enumerate() {
                    kernel[3 * r + c] = *v as f32;
                }
            }
        });
}

// The tests compare the AVX-512 transforms, which exist on x86_64 only.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Sizes below, at and past one and two groups of sixteen tiles, odd
    /// sizes among them: (n, channels, h, w).
    const SIZES: [(usize, usize, usize, usize); 6] = [
        (2, 3, 8, 8),
        (1, 2, 5, 7),
        (2, 2, 16, 16),
        (1, 3, 9, 33),
        (2, 1, 32, 32),
        (1, 2, 4, 66),
    ];

    /// Values with ±0 among them and magnitudes from 1e-2 to 1e2.
    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => -0.0,
                _ => ((i as f32) * 0.731 + seed).sin() * 10f32.powi((i % 5) as i32 - 2),
            })
            .collect()
    }

    fn assert_same_bits(scalar: &[f32], vector: &[f32], what: &str) {
        assert_eq!(scalar.len(), vector.len());
        for (i, (a, b)) in scalar.iter().zip(vector).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{what} at {i}: {a} vs {b}");
        }
    }

    /// Whole batches, a run from the second tile row, and one tile row.
    fn row_ranges(s: Shape) -> [(usize, usize); 3] {
        let rows = s.n * s.tiles().0;
        [(0, rows), (1, rows), (0, 1)]
    }

    fn shape_of((n, c, h, w): (usize, usize, usize, usize)) -> Shape {
        Shape {
            n,
            c_in: c,
            c_out: c,
            h,
            w,
            budget: usize::MAX,
        }
    }

    fn skip_without_avx512() -> bool {
        let skip = !super::super::shifted::avx512();
        if skip {
            eprintln!("skipped: this CPU has no AVX-512F, so only the scalar transforms run");
        }
        skip
    }

    /// A transform of tile rows (input, or the upstream gradient) against
    /// its scalar version, on every size and row range.
    type RowTransform = fn(&[f32], Shape, (usize, usize), &mut [f32]);
    type VectorRowTransform = unsafe fn(&[f32], Shape, (usize, usize), &mut [f32]);

    fn compare_row_transforms(seed: f32, scalar: RowTransform, vector: VectorRowTransform) {
        for size in SIZES {
            let s = shape_of(size);
            let x = values(s.n * s.c_in * s.h * s.w, seed);
            for rows in row_ranges(s) {
                let len = XI * s.c_in * (rows.1 - rows.0) * s.tiles().1;
                let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                scalar(&x, s, rows, &mut want);
                // SAFETY: the callers check for AVX-512F first.
                unsafe { vector(&x, s, rows, &mut got) };
                assert_same_bits(&want, &got, &format!("{size:?} rows {rows:?}"));
            }
        }
    }

    #[test]
    fn vector_input_transform_equals_the_scalar_one_bit_for_bit() {
        if skip_without_avx512() {
            return;
        }
        compare_row_transforms(0.0, transform_input_scalar, transform_input_avx512);
    }

    #[test]
    fn vector_output_transform_equals_the_scalar_one_bit_for_bit() {
        if skip_without_avx512() {
            return;
        }
        for size in SIZES {
            let s = shape_of(size);
            for rows in row_ranges(s) {
                let m = values(XI * s.c_out * (rows.1 - rows.0) * s.tiles().1, 1.0);
                let bias = values(s.c_out, 2.0);
                for bias in [None, Some(&bias[..])] {
                    // Outputs outside `rows` stay NaN in both.
                    let len = s.n * s.c_out * s.h * s.w;
                    let (mut scalar, mut vector) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                    // SAFETY: each buffer is the whole output, one thread.
                    unsafe {
                        transform_output_scalar(&m, s, rows, bias, SyncPtr(scalar.as_mut_ptr()));
                        transform_output_avx512(&m, s, rows, bias, SyncPtr(vector.as_mut_ptr()));
                    }
                    let what = format!("{size:?} rows {rows:?} bias {}", bias.is_some());
                    assert_same_bits(&scalar, &vector, &what);
                }
            }
        }
    }

    #[test]
    fn vector_gradient_transform_equals_the_scalar_one_bit_for_bit() {
        if skip_without_avx512() {
            return;
        }
        compare_row_transforms(3.0, transform_grad_scalar, transform_grad_avx512);
    }
}
