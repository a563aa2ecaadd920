//! Convolutions of small images in f32 by Winograd's minimal filtering with
//! 4×4 output tiles (Lavin and Gray, CVPR 2016), for batches of whole
//! vectors of samples on CPUs with AVX-512:
//! - 3×3 kernels, stride 1, padding 1 (the decoders) by F(4×4, 3×3): 36
//!   products per tile and channel pair where the direct conv has 144;
//! - 4×4 kernels, stride 2, padding 1 (the encoder) as a 2×2 conv over the
//!   space-to-depth view of the padded input (as [`super::shifted`] does),
//!   by F(4×4, 2×2): 25 products where the direct conv has 64. Its input
//!   gradient is computed parity by parity: the input pixels of one row and
//!   column parity are a 2×2 conv of the upstream gradient.
//!
//! Each operand is staged sample-innermost, `(channel, row, column,
//! sample)`, so that one tile position of sixteen samples is one vector and
//! every transform is vector arithmetic with constant coefficients. With
//! the patches transformed to `V = Bᵀ d B` and the kernels to `U = G g Gᵀ`
//! (both α×α, α = 4 + r − 1), a tile is `Aᵀ (Σ_c U ⊙ V) A`; for each of the
//! α² positions ξ the sum over input channels is a GEMM
//! `M[ξ] = U[ξ] (C_out × C) @ V[ξ] (C × tiles·N)`, which the `gemm` crate
//! runs, one ξ per task, so that results do not depend on the number of
//! threads.
//!
//! Rounding: the transforms' coefficients reach 8 (`Aᵀ`) and 5 (`Bᵀ`), so
//! an output's rounding error is bounded by about 2304 (F(4×4, 3×3)) and
//! 400 (F(4×4, 2×2)) times the unit roundoff per input channel, against 9
//! and 4 for the direct sums; the test derives its tolerance from that
//! bound, and the rounding met in practice is far below it.

// The transforms index tiles by row and column at once (`rows[i][j]`).
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use super::first_lanes;
use super::{matmul, Geometry, SyncPtr};
use crate::model::storage::{give_scratch, take_scratch};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Samples per vector: the batch is cut into groups of this many.
const LANES: usize = 16;

/// Side of an output tile.
const TILE: usize = 4;

/// The constants of one F(4×4, r×r) algorithm, padded to the largest
/// (α = 6, r = 3) with zeros.
trait Algorithm {
    /// Kernel side `r`.
    const R: usize;
    /// Input patch side `α = 4 + r − 1`.
    const ALPHA: usize;
    /// `Aᵀ` (4 × α): the output transform.
    const AT: [[f32; 6]; 4];
    /// `G` (α × r): the kernel transform.
    const G: [[f32; 3]; 6];
    /// `Bᵀ` (α × α): the input transform.
    const BT: [[f32; 6]; 6];
}

/// F(4×4, 3×3) with interpolation points 0, ±1, ±2 and ∞ (Lavin's).
struct F43;

impl Algorithm for F43 {
    const R: usize = 3;
    const ALPHA: usize = 6;
    const AT: [[f32; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];
    const G: [[f32; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    const BT: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
}

/// F(4×4, 2×2) with interpolation points 0, ±1, 2 and ∞.
struct F42;

impl Algorithm for F42 {
    const R: usize = 2;
    const ALPHA: usize = 5;
    const AT: [[f32; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, 1.0, 0.0],
    ];
    const G: [[f32; 3]; 6] = [
        [1.0 / 2.0, 0.0, 0.0],
        [-1.0 / 2.0, -1.0 / 2.0, 0.0],
        [-1.0 / 6.0, 1.0 / 6.0, 0.0],
        [1.0 / 6.0, 1.0 / 3.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0],
    ];
    const BT: [[f32; 6]; 6] = [
        [2.0, -1.0, -2.0, 1.0, 0.0, 0.0],
        [0.0, -2.0, -1.0, 1.0, 0.0, 0.0],
        [0.0, 2.0, -3.0, 1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ];
}

/// Whether `g` has a shape this module computes, on this CPU: f32 is the
/// caller's check.
pub(super) fn applies(g: &Geometry) -> bool {
    let shape = match (g.k, g.stride, g.padding) {
        (3, 1, 1) => true,
        (4, 2, 1) => g.h.is_multiple_of(2) && g.w.is_multiple_of(2),
        _ => false,
    };
    shape && g.n > 0 && g.n.is_multiple_of(LANES) && super::shifted::avx512()
}

/// One stride-1 problem on staged planes: `c_in` planes of the staged
/// input to `c_out` planes of `ho × wo`, in tiles of 4×4 outputs.
#[derive(Clone, Copy, Debug)]
struct Problem {
    n: usize,
    c_in: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
    /// Rows and columns of each staged input plane.
    hp: usize,
    wp: usize,
}

impl Problem {
    fn new(
        n: usize,
        (c_in, c_out): (usize, usize),
        (ho, wo): (usize, usize),
        alpha: usize,
    ) -> Self {
        // One more row and column than the last tile's patch needs, for
        // the parity problems' patches, which start one pixel in.
        let (th, tw) = (ho.div_ceil(TILE), wo.div_ceil(TILE));
        Problem {
            n,
            c_in,
            c_out,
            ho,
            wo,
            hp: (th - 1) * TILE + alpha + 1,
            wp: (tw - 1) * TILE + alpha + 1,
        }
    }

    fn tiles(&self) -> (usize, usize) {
        (self.ho.div_ceil(TILE), self.wo.div_ceil(TILE))
    }

    /// Columns of each GEMM: every tile of every sample.
    fn columns(&self) -> usize {
        let (th, tw) = self.tiles();
        th * tw * self.n
    }

    fn plane(&self) -> usize {
        self.hp * self.wp * self.n
    }
}

/// How staged channel `c` is read from the source tensor `(N, C, H, W)`:
/// staged pixel `(Y, X)` is source pixel `(step·Y + dy − pad, step·X + dx −
/// pad)` of channel `c / step²` with `(dy, dx)` the position of `c` within
/// its group of `step²` (the space-to-depth view for step 2).
#[derive(Clone, Copy, Debug)]
struct View {
    step: usize,
    pad: usize,
}

/// `dst` `(C', hp, wp, N)`: the view of `src` `(N, C, h, w)`, zeros outside.
fn stage(src: &[f32], (c, h, w): (usize, usize, usize), view: View, p: &Problem, dst: &mut [f32]) {
    let groups = view.step * view.step;
    assert!(src.len() >= p.n * c * h * w && p.c_in == groups * c);
    assert!((h + view.pad) / view.step < p.hp && (w + view.pad) / view.step < p.wp);
    dst[..p.c_in * p.plane()]
        .par_chunks_mut(groups * p.plane())
        .enumerate()
        .for_each(|(ci, planes)| {
            for (pos, plane) in planes.chunks_exact_mut(p.plane()).enumerate() {
                zero_outside(plane, (h, w), view, (pos / view.step, pos % view.step), p);
            }
            // SAFETY: `applies` checked the CPU for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                stage_channel(src, (ci, c, h, w), view, p, planes)
            };
        });
}

/// Zeros the pixels of a staged plane of view position `(dy, dx)` that no
/// source pixel fills.
fn zero_outside(
    plane: &mut [f32],
    (h, w): (usize, usize),
    view: View,
    (dy, dx): (usize, usize),
    p: &Problem,
) {
    let inside = |i: usize, d: usize, len: usize| {
        (view.step * i + d)
            .checked_sub(view.pad)
            .is_some_and(|v| v < len)
    };
    for (yy, row) in plane.chunks_exact_mut(p.wp * p.n).enumerate() {
        if !inside(yy, dy, h) {
            row.fill(0.0);
            continue;
        }
        for (xx, pixel) in row.chunks_exact_mut(p.n).enumerate() {
            if !inside(xx, dx, w) {
                pixel.fill(0.0);
            }
        }
    }
}

/// The 16×16 transpose of `rows`: element `j` of output `i` is element `i`
/// of row `j`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(rows: &[__m512; 16]) -> [__m512; 16] {
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    // Pairs of rows interleaved by element, then by element pairs: within
    // each 128-bit lane k, u[4g + j] holds element 4k + j of rows 4g..4g+4.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Lanes (0, 2) and (1, 3) of row groups 0 and 1, and of 2 and 3.
    let mut v = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        v[j] = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        v[4 + j] = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
        v[8 + j] = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        v[12 + j] = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        out[j] = _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]);
        out[8 + j] = _mm512_shuffle_f32x4::<0xdd>(v[j], v[8 + j]);
        out[4 + j] = _mm512_shuffle_f32x4::<0x88>(v[4 + j], v[12 + j]);
        out[12 + j] = _mm512_shuffle_f32x4::<0xdd>(v[4 + j], v[12 + j]);
    }
    out
}

/// Writes the pixels of source channel `ci` into its staged `planes` (its
/// `step²` view planes), sixteen samples and sixteen columns at a time
/// through a transpose.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stage_channel(
    src: &[f32],
    (ci, c, h, w): (usize, usize, usize, usize),
    view: View,
    p: &Problem,
    planes: &mut [f32],
) {
    let (n, step) = (p.n, view.step);
    assert!(src.len() >= n * c * h * w && ci < c && planes.len() >= step * step * p.plane());
    assert!((h + view.pad) / step < p.hp && (w + view.pad) / step < p.wp);
    for b0 in (0..n).step_by(LANES) {
        for y in 0..h {
            let (yy, dy) = ((y + view.pad) / step, (y + view.pad) % step);
            for x0 in (0..w).step_by(LANES) {
                let count = LANES.min(w - x0);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (b, row) in rows.iter_mut().enumerate() {
                    // SAFETY: `count` columns from x0 of a row of sample
                    // b0 + b < n, inside src (asserted).
                    *row = unsafe {
                        _mm512_maskz_loadu_ps(
                            first_lanes(count),
                            src.as_ptr().add((((b0 + b) * c + ci) * h + y) * w + x0),
                        )
                    };
                }
                let columns = transpose16(&rows);
                for (i, column) in columns.iter().enumerate().take(count) {
                    let (xx, dx) = ((x0 + i + view.pad) / step, (x0 + i + view.pad) % step);
                    let at = (dy * step + dx) * p.plane() + (yy * p.wp + xx) * n + b0;
                    // SAFETY: staged pixel (yy, xx) lies inside its plane
                    // (asserted), and b0 + 16 ≤ n.
                    unsafe { _mm512_storeu_ps(planes.as_mut_ptr().add(at), *column) };
                }
            }
        }
    }
}

/// `out[b][c][i][j] = staged[c][i][j][b]` for the staged result `(C, ho,
/// wo, N)` of `p`, into `out` `(N, C, ho, wo)`.
fn unstage(staged: &[f32], p: &Problem, out: &mut [f32]) {
    let n = p.n;
    assert!(out.len() >= n * p.c_out * p.ho * p.wo);
    let ptr = SyncPtr(out.as_mut_ptr());
    staged[..p.c_out * p.ho * p.wo * n]
        .par_chunks(p.ho * p.wo * n)
        .enumerate()
        .for_each(|(c, plane)| {
            // SAFETY: `applies` checked the CPU for AVX-512F; `out` holds
            // the whole output (asserted), and only the task of channel c
            // writes the planes (b, c).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                unstage_channel(plane, p, c, ptr)
            };
        });
}

/// `out[b][c][i][j] = plane[i][j][b]` for output channel `c`, sixteen
/// samples and sixteen columns at a time through a transpose.
///
/// # Safety
/// The CPU must have AVX-512F; `out` is the whole `(N, C, ho, wo)` output,
/// and no other thread accesses channel `c`'s planes meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unstage_channel(plane: &[f32], p: &Problem, c: usize, out: SyncPtr<f32>) {
    let n = p.n;
    assert!(plane.len() >= p.ho * p.wo * n);
    for b0 in (0..n).step_by(LANES) {
        for i in 0..p.ho {
            for j0 in (0..p.wo).step_by(LANES) {
                let count = LANES.min(p.wo - j0);
                let mut columns = [_mm512_setzero_ps(); 16];
                for (jj, column) in columns.iter_mut().enumerate().take(count) {
                    // SAFETY: pixel (i, j0 + jj) of the plane (asserted).
                    *column = unsafe {
                        _mm512_loadu_ps(plane.as_ptr().add((i * p.wo + j0 + jj) * n + b0))
                    };
                }
                let rows = transpose16(&columns);
                for (b, row) in rows.iter().enumerate() {
                    // SAFETY: `count` pixels of row i of plane (b0 + b, c),
                    // inside `out` by the contract.
                    unsafe {
                        let at = (((b0 + b) * p.c_out + c) * p.ho + i) * p.wo + j0;
                        _mm512_mask_storeu_ps(out.get().add(at), first_lanes(count), *row);
                    }
                }
            }
        }
    }
}

/// `out[b][c][2i + py][2j + px] = staged[2py + px][c][i][j][b]`: the four
/// parity results `(4, C, ho, wo, N)` of `p` interleaved into `out` `(N, C,
/// 2ho, 2wo)`.
fn unstage_parities(staged: &[f32], p: &Problem, out: &mut [f32]) {
    let n = p.n;
    let block = p.c_out * p.ho * p.wo * n;
    assert!(out.len() >= 4 * block && staged.len() >= 4 * block);
    let ptr = SyncPtr(out.as_mut_ptr());
    (0..p.c_out).into_par_iter().for_each(|c| {
        // SAFETY: `applies` checked the CPU for AVX-512F; `out` holds the
        // whole output (asserted), and only the task of channel c writes
        // the planes (b, c).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            unstage_parities_channel(staged, p, c, ptr)
        };
    });
}

/// [`unstage_parities`] for output channel `c`: per output row, the two
/// column parities' transposed blocks interleaved by two permutes.
///
/// # Safety
/// The CPU must have AVX-512F; `out` is the whole `(N, C, 2ho, 2wo)`
/// output, and no other thread accesses channel `c`'s planes meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unstage_parities_channel(staged: &[f32], p: &Problem, c: usize, out: SyncPtr<f32>) {
    let n = p.n;
    let block = p.c_out * p.ho * p.wo * n;
    let (h, w) = (2 * p.ho, 2 * p.wo);
    assert!(staged.len() >= 4 * block && c < p.c_out);
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for b0 in (0..n).step_by(LANES) {
        for py in 0..2 {
            for i in 0..p.ho {
                for j0 in (0..p.wo).step_by(LANES) {
                    let count = LANES.min(p.wo - j0);
                    let mut halves = [[_mm512_setzero_ps(); 16]; 2];
                    for (px, half) in halves.iter_mut().enumerate() {
                        let plane = (2 * py + px) * block + c * p.ho * p.wo * n;
                        let mut columns = [_mm512_setzero_ps(); 16];
                        for (jj, column) in columns.iter_mut().enumerate().take(count) {
                            // SAFETY: pixel (i, j0 + jj) of this parity's
                            // plane c, inside staged (asserted).
                            *column = unsafe {
                                _mm512_loadu_ps(
                                    staged.as_ptr().add(plane + (i * p.wo + j0 + jj) * n + b0),
                                )
                            };
                        }
                        *half = transpose16(&columns);
                    }
                    let y = 2 * i + py;
                    for b in 0..LANES {
                        let (even, odd) = (halves[0][b], halves[1][b]);
                        let at = (((b0 + b) * p.c_out + c) * h + y) * w + 2 * j0;
                        // SAFETY: 2·count pixels of row y of plane (b0 + b,
                        // c), inside `out` by the contract.
                        unsafe {
                            let dst = out.get().add(at);
                            _mm512_mask_storeu_ps(
                                dst,
                                first_lanes(2 * count),
                                _mm512_permutex2var_ps(even, low, odd),
                            );
                            if count > 8 {
                                _mm512_mask_storeu_ps(
                                    dst.add(16),
                                    first_lanes(2 * count - 16),
                                    _mm512_permutex2var_ps(even, high, odd),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `acc + c·x` for a constant `c`, without a multiply for 0 and ±1 (the
/// branches fold away once the constant is known).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn mul_add(acc: __m512, c: f32, x: __m512) -> __m512 {
    if c == 0.0 {
        acc
    } else if c == 1.0 {
        _mm512_add_ps(acc, x)
    } else if c == -1.0 {
        _mm512_sub_ps(acc, x)
    } else {
        _mm512_fmadd_ps(_mm512_set1_ps(c), x, acc)
    }
}

/// `mat (rows × cols) @ v`, column `cols` of `v` at most 6, rows at most 6.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn apply<const W: usize>(mat: &[[f32; W]], cols: usize, v: &[__m512; 6]) -> [__m512; 6] {
    let mut out = [_mm512_setzero_ps(); 6];
    for (o, row) in out.iter_mut().zip(mat) {
        for (c, x) in row.iter().zip(v).take(cols) {
            *o = mul_add(*o, *c, *x);
        }
    }
    out
}

/// `matᵀ @ v`: output `j` is `Σ_i mat[i][j]·v[i]` over the first `rows`
/// rows.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn apply_transposed<const W: usize>(mat: &[[f32; W]], rows: usize, v: &[__m512; 6]) -> [__m512; 6] {
    let mut out = [_mm512_setzero_ps(); 6];
    for (row, x) in mat.iter().zip(v).take(rows) {
        for (o, c) in out.iter_mut().zip(row) {
            *o = mul_add(*o, *c, *x);
        }
    }
    out
}

/// `mat @ v` (`TRANSPOSED`: `matᵀ @ v`) over the first `size` entries of
/// `v`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn one_side<const W: usize, const TRANSPOSED: bool>(
    mat: &[[f32; W]],
    size: usize,
    v: &[__m512; 6],
) -> [__m512; 6] {
    if TRANSPOSED {
        apply_transposed(mat, size, v)
    } else {
        apply(mat, size, v)
    }
}

/// `mat · tile · matᵀ` (`TRANSPOSED`: `matᵀ · tile · mat`) of a
/// `size`×`size` tile: the matrix on the tile's columns, then on the rows
/// of the result.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn sandwich<const W: usize, const TRANSPOSED: bool>(
    mat: &[[f32; W]],
    size: usize,
    tile: &[[__m512; 6]; 6],
) -> [[__m512; 6]; 6] {
    let mut rows = [[_mm512_setzero_ps(); 6]; 6];
    for j in 0..size {
        let mut column = [_mm512_setzero_ps(); 6];
        for i in 0..size {
            column[i] = tile[i][j];
        }
        let mixed = one_side::<W, TRANSPOSED>(mat, size, &column);
        for (row, value) in rows.iter_mut().zip(mixed) {
            row[j] = value;
        }
    }
    // The result has as many rows as the matrix (or as its transpose).
    let out_rows = if TRANSPOSED { W } else { mat.len() };
    let mut out = [[_mm512_setzero_ps(); 6]; 6];
    for (o, row) in out.iter_mut().zip(&rows).take(out_rows) {
        *o = one_side::<W, TRANSPOSED>(mat, size, row);
    }
    out
}

/// The α×α transform of each tile's patch of the staged planes `staged`
/// `(C, hp, wp, N)` into `out[c][ξ][t·N + b]` `(C, α², tiles·N)`: for the
/// input, `V = Bᵀ d B` of the α×α patch read from staged pixel `(4·ty +
/// oy, 4·tx + ox)`; for the upstream gradient (`GRADIENT`), `dM = A dY Aᵀ`
/// of the 4×4 tile itself, the adjoint of the output transform.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_patches<A: Algorithm, const GRADIENT: bool>(
    staged: &[f32],
    p: &Problem,
    (oy, ox): (usize, usize),
    out: &mut [f32],
) {
    let (th, tw) = p.tiles();
    let (n, alpha) = (p.n, A::ALPHA);
    let size = if GRADIENT { TILE } else { alpha };
    let cols = p.columns();
    assert!((th - 1) * TILE + oy + size <= p.hp && (tw - 1) * TILE + ox + size <= p.wp);
    assert!(staged.len() >= p.c_in * p.plane() && out.len() >= p.c_in * alpha * alpha * cols);
    for (plane, block) in staged
        .chunks_exact(p.plane())
        .zip(out.chunks_exact_mut(alpha * alpha * cols))
        .take(p.c_in)
    {
        for t in 0..th * tw {
            let (y0, x0) = ((t / tw) * TILE + oy, (t % tw) * TILE + ox);
            for b0 in (0..n).step_by(LANES) {
                let mut patch = [[_mm512_setzero_ps(); 6]; 6];
                for (i, row) in patch.iter_mut().enumerate().take(size) {
                    for (j, d) in row.iter_mut().enumerate().take(size) {
                        // SAFETY: the patch lies inside the plane (asserted).
                        *d = unsafe {
                            _mm512_loadu_ps(plane.as_ptr().add(((y0 + i) * p.wp + x0 + j) * n + b0))
                        };
                    }
                }
                let transformed = if GRADIENT {
                    sandwich::<6, true>(&A::AT, TILE, &patch)
                } else {
                    sandwich::<6, false>(&A::BT, alpha, &patch)
                };
                for (i, row) in transformed.iter().enumerate().take(alpha) {
                    for (j, value) in row.iter().enumerate().take(alpha) {
                        // SAFETY: inside this channel's block (asserted).
                        unsafe {
                            _mm512_storeu_ps(
                                block.as_mut_ptr().add((i * alpha + j) * cols + t * n + b0),
                                *value,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// Writes `Aᵀ M A + bias` of output channels `o` into `out` `(ho, wo, N)`
/// from `m` `(α², C_out, tiles·N)`, cropping tiles at the edges.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_output<A: Algorithm>(
    m: &[f32],
    p: &Problem,
    o: usize,
    bias: f32,
    out: &mut [f32],
) {
    let (th, tw) = p.tiles();
    let (n, alpha) = (p.n, A::ALPHA);
    let cols = p.columns();
    assert!(m.len() >= alpha * alpha * p.c_out * cols && out.len() >= p.ho * p.wo * n);
    let add = _mm512_set1_ps(bias);
    for t in 0..th * tw {
        let (y0, x0) = ((t / tw) * TILE, (t % tw) * TILE);
        for b0 in (0..n).step_by(LANES) {
            let mut tile = [[_mm512_setzero_ps(); 6]; 6];
            for (i, row) in tile.iter_mut().enumerate().take(alpha) {
                for (j, d) in row.iter_mut().enumerate().take(alpha) {
                    // SAFETY: inside m (asserted).
                    *d = unsafe {
                        _mm512_loadu_ps(
                            m.as_ptr()
                                .add(((i * alpha + j) * p.c_out + o) * cols + t * n + b0),
                        )
                    };
                }
            }
            let rows = sandwich::<6, false>(&A::AT, alpha, &tile);
            for (i, values) in rows.iter().enumerate().take(TILE) {
                let y = y0 + i;
                if y >= p.ho {
                    break;
                }
                for (j, value) in values.iter().enumerate().take(TILE) {
                    let x = x0 + j;
                    if x >= p.wo {
                        break;
                    }
                    // SAFETY: (y, x) is an output pixel (checked), inside out.
                    unsafe {
                        _mm512_storeu_ps(
                            out.as_mut_ptr().add((y * p.wo + x) * n + b0),
                            _mm512_add_ps(*value, add),
                        )
                    };
                }
            }
        }
    }
}

/// `U[o][ξ][c]` `(C_out, α², C)` = `G g Gᵀ` of `kernel(o, c, tap)` (taps
/// row-major over r×r), sixteen input channels at a time.
fn transform_weights<A: Algorithm>(
    c_out: usize,
    c_in: usize,
    kernel: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let (r, alpha) = (A::R, A::ALPHA);
    let padded = c_in.next_multiple_of(LANES);
    // Every element is written below.
    let mut u = take_scratch::<f32>(c_out * alpha * alpha * c_in);
    u[..c_out * alpha * alpha * c_in]
        .par_chunks_mut(alpha * alpha * c_in)
        .enumerate()
        .for_each_init(
            // Taps-major, so that sixteen channels of a tap are one vector;
            // zeros past c_in.
            || vec![0f32; r * r * padded],
            |taps, (o, uo)| {
                for (t, tap) in taps.chunks_exact_mut(padded).enumerate() {
                    for (c, v) in tap.iter_mut().enumerate().take(c_in) {
                        *v = kernel(o, c, t);
                    }
                }
                // SAFETY: `applies` checked the CPU for AVX-512F.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    transform_kernels::<A>(taps, c_in, uo)
                };
            },
        );
    u
}

/// `cells (α², c)` = `G g Gᵀ` of `taps (r², c rounded up to 16)`.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_kernels<A: Algorithm>(taps: &[f32], c: usize, cells: &mut [f32]) {
    let (r, alpha) = (A::R, A::ALPHA);
    let padded = c.next_multiple_of(LANES);
    assert!(taps.len() >= r * r * padded && cells.len() >= alpha * alpha * c);
    for c0 in (0..c).step_by(LANES) {
        let lanes = first_lanes(c - c0);
        let mut kernel = [[_mm512_setzero_ps(); 6]; 6];
        for (i, row) in kernel.iter_mut().enumerate().take(r) {
            for (j, g) in row.iter_mut().enumerate().take(r) {
                // SAFETY: inside taps (asserted).
                *g = unsafe { _mm512_loadu_ps(taps.as_ptr().add((i * r + j) * padded + c0)) };
            }
        }
        let rows = sandwich::<3, false>(&A::G, r, &kernel);
        for (i, values) in rows.iter().enumerate().take(alpha) {
            for (j, value) in values.iter().enumerate().take(alpha) {
                // SAFETY: the lanes below c of row ξ, inside cells (asserted).
                unsafe {
                    _mm512_mask_storeu_ps(
                        cells.as_mut_ptr().add((i * alpha + j) * c + c0),
                        lanes,
                        *value,
                    )
                };
            }
        }
    }
}

/// `v` `(C, α², tiles·N)`: [`transform_patches`] of every staged channel, in
/// parallel.
fn transform_inputs<A: Algorithm>(
    staged: &[f32],
    p: &Problem,
    origin: (usize, usize),
    v: &mut [f32],
) {
    let per_channel = A::ALPHA * A::ALPHA * p.columns();
    v[..p.c_in * per_channel]
        .par_chunks_mut(per_channel)
        .zip(staged.par_chunks(p.plane()))
        .for_each(|(vc, plane)| {
            let one = Problem { c_in: 1, ..*p };
            // SAFETY: `applies` checked the CPU for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                transform_patches::<A, false>(plane, &one, origin, vc)
            };
        });
}

/// `out (C_out, ho, wo, N)` = the conv of the staged input with kernels
/// `u` (see [`transform_weights`]) plus `bias`, patches read from staged
/// pixel `origin` on.
fn run<A: Algorithm>(
    staged: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    p: &Problem,
    origin: (usize, usize),
    out: &mut [f32],
) {
    let alpha2 = A::ALPHA * A::ALPHA;
    let cols = p.columns();
    let mut v = take_scratch::<f32>(p.c_in * alpha2 * cols);
    let mut m = take_scratch::<f32>(alpha2 * p.c_out * cols);
    transform_inputs::<A>(staged, p, origin, &mut v);
    let (c_in, v_all) = (p.c_in, &v[..]);
    m[..alpha2 * p.c_out * cols]
        .par_chunks_mut(p.c_out * cols)
        .enumerate()
        .for_each(|(xi, mx)| {
            // SAFETY: U[ξ] is (C_out × C) with row stride α²·C from
            // u[ξ·C]; V[ξ] (C × columns) with row stride α²·columns from
            // v[ξ·columns]; M[ξ] (C_out × columns), all inside their buffers.
            unsafe {
                matmul(
                    mx,
                    cols,
                    false,
                    &u[xi * c_in..],
                    (alpha2 * c_in, 1),
                    &v_all[xi * cols..],
                    (alpha2 * cols, 1),
                    (p.c_out, c_in, cols),
                );
            }
        });
    let m_all = &m[..];
    out[..p.c_out * p.ho * p.wo * p.n]
        .par_chunks_mut(p.ho * p.wo * p.n)
        .enumerate()
        .for_each(|(o, plane)| {
            let add = bias.map_or(0.0, |b| b[o]);
            // SAFETY: `applies` checked the CPU for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                transform_output::<A>(m_all, p, o, add, plane)
            };
        });
    give_scratch(v);
    give_scratch(m);
}

/// The forward of `g` (see [`applies`]) into `out` `(N, C_out, H_out, W_out)`.
pub(super) fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, out: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let k = g.k;
    let mut staged_out = take_scratch::<f32>(g.c_out * ho * wo * g.n);
    if g.stride == 1 {
        let p = Problem::new(g.n, (g.c, g.c_out), (ho, wo), F43::ALPHA);
        let mut staged = take_scratch::<f32>(p.c_in * p.plane());
        stage(
            x,
            (g.c, g.h, g.w),
            View { step: 1, pad: 1 },
            &p,
            &mut staged,
        );
        let u = transform_weights::<F43>(g.c_out, g.c, |o, c, t| weight[(o * g.c + c) * k * k + t]);
        run::<F43>(&staged, &u, Some(bias), &p, (0, 0), &mut staged_out);
        give_scratch(u);
        unstage(&staged_out, &p, out);
        give_scratch(staged);
    } else {
        // Channel 4c + 2dy + dx of the view holds the pixels (2i + dy,
        // 2j + dx) of channel c: its tap (a, b) is tap (2a + dy, 2b + dx).
        let p = Problem::new(g.n, (4 * g.c, g.c_out), (ho, wo), F42::ALPHA);
        let mut staged = take_scratch::<f32>(p.c_in * p.plane());
        stage(
            x,
            (g.c, g.h, g.w),
            View { step: 2, pad: 1 },
            &p,
            &mut staged,
        );
        let u = transform_weights::<F42>(g.c_out, 4 * g.c, |o, cv, t| {
            let (c, dy, dx, a, b) = (cv / 4, (cv / 2) % 2, cv % 2, t / 2, t % 2);
            weight[((o * g.c + c) * k + 2 * a + dy) * k + 2 * b + dx]
        });
        run::<F42>(&staged, &u, Some(bias), &p, (0, 0), &mut staged_out);
        give_scratch(u);
        unstage(&staged_out, &p, out);
        give_scratch(staged);
    }
    give_scratch(staged_out);
}

/// The input gradient of `g` (see [`applies`]) into `dx` `(N, C, H, W)`.
/// Stride 1: the conv of `dy` with the flipped kernels, channels swapped.
/// Stride 2: for each row and column parity `(py, px)` of the input, the
/// 2×2 conv of `dy` (padded by one) whose patches start at `(py, px)`, with
/// the view channel `4c + 2·(1 − py) + (1 − px)` of the flipped kernels.
pub(super) fn input_grad(dy: &[f32], weight: &[f32], g: Geometry, dx: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let k = g.k;
    let pad = View { step: 1, pad: 1 };
    if g.stride == 1 {
        let p = Problem::new(g.n, (g.c_out, g.c), (g.h, g.w), F43::ALPHA);
        let mut staged = take_scratch::<f32>(p.c_in * p.plane());
        stage(dy, (g.c_out, ho, wo), pad, &p, &mut staged);
        let u = transform_weights::<F43>(g.c, g.c_out, |c, o, t| {
            weight[(o * g.c + c) * k * k + k * k - 1 - t]
        });
        let mut staged_out = take_scratch::<f32>(g.c * g.h * g.w * g.n);
        run::<F43>(&staged, &u, None, &p, (0, 0), &mut staged_out);
        give_scratch(u);
        unstage(&staged_out, &p, dx);
        give_scratch(staged);
        give_scratch(staged_out);
        return;
    }
    // Input pixel (2i + py, 2j + px) is padded pixel (2i + py + 1, ...): view
    // channel parity dy = 1 − py at view row i + py, which the upstream
    // gradient's rows i + py − 1 + a' feed through view tap 1 − a'.
    let p = Problem::new(g.n, (g.c_out, g.c), (ho, wo), F42::ALPHA);
    let mut staged = take_scratch::<f32>(p.c_in * p.plane());
    stage(dy, (g.c_out, ho, wo), pad, &p, &mut staged);
    let block = g.c * ho * wo * g.n;
    let mut staged_out = take_scratch::<f32>(4 * block);
    for (parity, result) in staged_out[..4 * block].chunks_exact_mut(block).enumerate() {
        let (py, px) = (parity / 2, parity % 2);
        let (vy, vx) = (1 - py, 1 - px);
        let u = transform_weights::<F42>(g.c, g.c_out, |c, o, t| {
            let (a, b) = (1 - t / 2, 1 - t % 2);
            weight[((o * g.c + c) * k + 2 * a + vy) * k + 2 * b + vx]
        });
        run::<F42>(&staged, &u, None, &p, (py, px), result);
        give_scratch(u);
    }
    assert_eq!(
        (g.h, g.w),
        (2 * ho, 2 * wo),
        "winograd4 input gradient size"
    );
    unstage_parities(&staged_out, &p, dx);
    give_scratch(staged);
    give_scratch(staged_out);
}

/// `dst (cols × rows)` = the transpose of `src (rows × cols)` read with row
/// stride `stride`, in 16×16 blocks.
///
/// # Safety
/// The CPU must have AVX-512F; `src` holds `(rows − 1)·stride + cols`
/// elements and `dst` `cols·rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_into(
    src: &[f32],
    stride: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
) {
    assert!(src.len() >= (rows - 1) * stride + cols && dst.len() >= rows * cols);
    for r0 in (0..rows).step_by(LANES) {
        let height = LANES.min(rows - r0);
        for c0 in (0..cols).step_by(LANES) {
            let width = LANES.min(cols - c0);
            let mut block = [_mm512_setzero_ps(); 16];
            for (i, row) in block.iter_mut().enumerate().take(height) {
                // SAFETY: `width` elements of row r0 + i, inside src.
                *row = unsafe {
                    _mm512_maskz_loadu_ps(
                        first_lanes(width),
                        src.as_ptr().add((r0 + i) * stride + c0),
                    )
                };
            }
            let columns = transpose16(&block);
            for (j, column) in columns.iter().enumerate().take(width) {
                // SAFETY: `height` elements of row c0 + j, inside dst.
                unsafe {
                    _mm512_mask_storeu_ps(
                        dst.as_mut_ptr().add((c0 + j) * rows + r0),
                        first_lanes(height),
                        *column,
                    )
                };
            }
        }
    }
}

/// Most GEMM columns (tiles × samples) one f32 sum of the weight gradient
/// holds before it is added in f64, as the F(2×2, 3×3) weight gradient's
/// 512 tiles.
const SUM_COLUMNS: usize = 512;

/// `Gᵀ dU G` `(r², 16)` for sixteen input channels from `du` `(α², ·)`
/// read at `at + ξ·stride`.
///
/// # Safety
/// The CPU must have AVX-512F; every read lies inside `du`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_back<A: Algorithm>(
    du: &[f32],
    at: usize,
    stride: usize,
    lanes: u16,
    out: &mut [[f32; 16]; 9],
) {
    let (r, alpha) = (A::R, A::ALPHA);
    let mut rows = [[_mm512_setzero_ps(); 6]; 6];
    for (x, row) in rows.iter_mut().enumerate().take(alpha) {
        let mut values = [_mm512_setzero_ps(); 6];
        for (y, v) in values.iter_mut().enumerate().take(alpha) {
            // SAFETY: the contract.
            *v = unsafe {
                _mm512_maskz_loadu_ps(lanes, du.as_ptr().add(at + (x * alpha + y) * stride))
            };
        }
        // dU G on each row: r values.
        *row = apply_transposed(&A::G, alpha, &values);
    }
    for b in 0..r {
        let mut column = [_mm512_setzero_ps(); 6];
        for (x, c) in column.iter_mut().enumerate().take(alpha) {
            *c = rows[x][b];
        }
        let values = apply_transposed(&A::G, alpha, &column);
        for (a, v) in values.iter().enumerate().take(r) {
            // SAFETY: a 16-lane array.
            unsafe { _mm512_storeu_ps(out[a * r + b].as_mut_ptr(), *v) };
        }
    }
}

/// The weight gradient of `g` (see [`applies`]) into `dw` `(C_out, C, k,
/// k)`: the adjoint of the forward's transforms. With `V` the input
/// transform and `dM` the upstream gradient's ([`transform_patches`]), `dU[ξ]
/// = Σ_t dM[ξ][·][t] · V[ξ][·][t]ᵀ` is a GEMM over the tiles of all samples
/// per ξ (in f32 over at most [`SUM_COLUMNS`] columns, in f64 across them),
/// and `dW = Gᵀ dU G`.
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: Geometry, dw: &mut [f32]) {
    if g.stride == 1 {
        weight_grad_with::<F43>(x, dy, &g, View { step: 1, pad: 1 }, dw);
    } else {
        weight_grad_with::<F42>(x, dy, &g, View { step: 2, pad: 1 }, dw);
    }
}

fn weight_grad_with<A: Algorithm>(x: &[f32], dy: &[f32], g: &Geometry, view: View, dw: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let c_in = view.step * view.step * g.c;
    let p = Problem::new(g.n, (c_in, g.c_out), (ho, wo), A::ALPHA);
    let (alpha2, cols) = (A::ALPHA * A::ALPHA, p.columns());
    let mut staged = take_scratch::<f32>(c_in * p.plane());
    stage(x, (g.c, g.h, g.w), view, &p, &mut staged);
    let mut v = take_scratch::<f32>(c_in * alpha2 * cols);
    transform_inputs::<A>(&staged, &p, (0, 0), &mut v);
    give_scratch(staged);
    // The upstream gradient's tiles, staged without padding.
    let pg = Problem { c_in: g.c_out, ..p };
    let mut staged_dy = take_scratch::<f32>(g.c_out * pg.plane());
    stage(
        dy,
        (g.c_out, ho, wo),
        View { step: 1, pad: 0 },
        &pg,
        &mut staged_dy,
    );
    let mut dm = take_scratch::<f32>(g.c_out * alpha2 * cols);
    dm[..g.c_out * alpha2 * cols]
        .par_chunks_mut(alpha2 * cols)
        .zip(staged_dy.par_chunks(pg.plane()))
        .for_each(|(d, plane)| {
            // SAFETY: `applies` checked the CPU for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                transform_patches::<A, true>(plane, &Problem { c_in: 1, ..pg }, (0, 0), d)
            };
        });
    give_scratch(staged_dy);
    let per_xi = g.c_out * c_in;
    // dUᵀ[ξ] (C × C_out) = V[ξ] (C × columns) @ dM[ξ]ᵀ, with dM[ξ]
    // transposed first (the `gemm` crate is slowest when both operands run
    // along the sum).
    let mut du = take_scratch::<f32>(alpha2 * per_xi);
    let (v_all, dm_all) = (&v[..], &dm[..]);
    du[..alpha2 * per_xi]
        .par_chunks_mut(per_xi)
        .enumerate()
        .for_each(|(xi, d)| {
            let mut dmt = take_scratch::<f32>(cols * g.c_out);
            // SAFETY: `applies` checked the CPU for AVX-512F; dM[ξ] is
            // (C_out × columns) with row stride α²·columns from
            // dm[ξ·columns], inside dm.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                transpose_into(
                    &dm_all[xi * cols..],
                    alpha2 * cols,
                    (g.c_out, cols),
                    &mut dmt,
                )
            };
            let mut part = take_scratch::<f32>(per_xi);
            let mut sum = if cols > SUM_COLUMNS {
                vec![0f64; per_xi]
            } else {
                Vec::new()
            };
            for k0 in (0..cols).step_by(SUM_COLUMNS) {
                let kb = SUM_COLUMNS.min(cols - k0);
                // SAFETY: V[ξ] is (C × columns) with row stride α²·columns
                // from v[ξ·columns], read from column k0; dMᵀ (columns ×
                // C_out) from row k0; kb terms; all inside their buffers.
                unsafe {
                    matmul(
                        &mut part[..per_xi],
                        g.c_out,
                        false,
                        &v_all[xi * cols + k0..],
                        (alpha2 * cols, 1),
                        &dmt[k0 * g.c_out..],
                        (g.c_out, 1),
                        (c_in, kb, g.c_out),
                    );
                }
                if sum.is_empty() {
                    d.copy_from_slice(&part[..per_xi]);
                } else {
                    for (s, q) in sum.iter_mut().zip(&part[..per_xi]) {
                        *s += f64::from(*q);
                    }
                }
            }
            if !sum.is_empty() {
                for (o, s) in d.iter_mut().zip(&sum) {
                    *o = *s as f32;
                }
            }
            give_scratch(part);
            give_scratch(dmt);
        });
    give_scratch(v);
    give_scratch(dm);
    let (r, k) = (A::R, g.k);
    let du_all = &du[..];
    let per_o = g.c * k * k;
    dw[..g.c_out * per_o]
        .par_chunks_mut(LANES * per_o)
        .enumerate()
        .for_each(|(block, dwo)| {
            let (o0, count) = (block * LANES, dwo.len() / per_o);
            let mut out = [[0f32; 16]; 9];
            for cv in 0..c_in {
                // SAFETY: `applies` checked the CPU for AVX-512F; lanes
                // o0..o0 + count of row cv of every dUᵀ[ξ] lie inside du.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    transform_back::<A>(
                        du_all,
                        cv * g.c_out + o0,
                        per_xi,
                        first_lanes(count),
                        &mut out,
                    )
                };
                for a in 0..r {
                    for b in 0..r {
                        let at = if view.step == 1 {
                            (cv * k + a) * k + b
                        } else {
                            // View channel 4c + 2dy + dx, tap (a, b) is tap
                            // (2a + dy, 2b + dx) of channel c.
                            let (c, dy, dx) = (cv / 4, (cv / 2) % 2, cv % 2);
                            (c * k + 2 * a + dy) * k + 2 * b + dx
                        };
                        for (lane, v) in out[a * r + b].iter().enumerate().take(count) {
                            dwo[lane * per_o + at] = *v;
                        }
                    }
                }
            }
        });
    give_scratch(du);
}

/// The first-order bound on an output's rounding error, in units of the
/// roundoff per input channel with inputs and weights of magnitude at most
/// 1: `|Aᵀ| (|G| 1 |G|ᵀ ⊙ |Bᵀ| 1 |B|) |A|` at its largest (the direct
/// conv's is `r²`).
#[cfg(test)]
pub(super) fn rounding_bound(stride: usize) -> f64 {
    fn bound<A: Algorithm>() -> f64 {
        let (r, alpha) = (A::R, A::ALPHA);
        let abs_sum = |row: &[f32], len: usize| {
            row.iter()
                .take(len)
                .map(|v| f64::from(v.abs()))
                .sum::<f64>()
        };
        let (mut worst, g_sums, b_sums): (f64, Vec<f64>, Vec<f64>) = (
            0.0,
            A::G.iter().take(alpha).map(|row| abs_sum(row, r)).collect(),
            A::BT
                .iter()
                .take(alpha)
                .map(|row| abs_sum(row, alpha))
                .collect(),
        );
        for ai in &A::AT {
            for aj in &A::AT {
                let mut total = 0.0;
                for x in 0..alpha {
                    for y in 0..alpha {
                        let a = f64::from(ai[x].abs()) * f64::from(aj[y].abs());
                        total += a * g_sums[x] * g_sums[y] * b_sums[x] * b_sums[y];
                    }
                }
                worst = f64::max(worst, total);
            }
        }
        worst
    }
    if stride == 1 {
        bound::<F43>()
    } else {
        bound::<F42>()
    }
}

/// The weight gradient's bound per tile, as [`rounding_bound`]: `|G|ᵀ
/// (|A| 1 |A|ᵀ ⊙ |Bᵀ| 1 |B|) |G|` at its largest, with upstream gradients
/// and inputs of magnitude at most 1.
#[cfg(test)]
pub(super) fn weight_grad_bound(stride: usize) -> f64 {
    fn bound<A: Algorithm>() -> f64 {
        let (r, alpha) = (A::R, A::ALPHA);
        // |dM[x][y]| ≤ (Σ_i |Aᵀ[i][x]|)(Σ_j |Aᵀ[j][y]|); |V[x][y]| likewise with Bᵀ's rows.
        let a_sums: Vec<f64> = (0..alpha)
            .map(|x| A::AT.iter().map(|row| f64::from(row[x].abs())).sum())
            .collect();
        let b_sums: Vec<f64> = A::BT
            .iter()
            .take(alpha)
            .map(|row| row.iter().take(alpha).map(|v| f64::from(v.abs())).sum())
            .collect();
        let mut worst: f64 = 0.0;
        for a in 0..r {
            for b in 0..r {
                let mut total = 0.0;
                for x in 0..alpha {
                    for y in 0..alpha {
                        total += f64::from(A::G[x][a].abs())
                            * f64::from(A::G[y][b].abs())
                            * a_sums[x]
                            * a_sums[y]
                            * b_sums[x]
                            * b_sums[y];
                    }
                }
                worst = worst.max(total);
            }
        }
        worst
    }
    if stride == 1 {
        bound::<F43>()
    } else {
        bound::<F42>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose16_transposes() {
        if !super::super::shifted::avx512() {
            eprintln!("note: no AVX-512 on this CPU; the transpose is not tested");
            return;
        }
        let data: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: the CPU has AVX-512F (checked above).
        let out = unsafe {
            let rows: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(data.as_ptr().add(16 * i)));
            transpose16(&rows)
        };
        for (i, v) in out.iter().enumerate() {
            let mut lanes = [0f32; 16];
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
            for (j, x) in lanes.iter().enumerate() {
                assert_eq!(*x, data[16 * j + i], "output {i} lane {j}");
            }
        }
    }

    /// Each algorithm's constants compute the correlation of an α×α patch
    /// with an r×r kernel, in f64, up to the f32 rounding of the
    /// coefficients that are not dyadic (1/3, 1/6, 1/12, 1/24; relative
    /// error below ε each, so below ε times the rounding bound on an
    /// output): a wrong or misplaced coefficient fails.
    fn check_exact<A: Algorithm>(bound: f64) {
        let tol = f64::from(f32::EPSILON) * bound;
        let (r, alpha) = (A::R, A::ALPHA);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for _ in 0..20 {
            let d: Vec<Vec<f64>> = (0..alpha)
                .map(|_| (0..alpha).map(|_| next()).collect())
                .collect();
            let g: Vec<Vec<f64>> = (0..r).map(|_| (0..r).map(|_| next()).collect()).collect();
            let mat = |m: &[f32], i: usize| f64::from(m[i]);
            // U = G g Gᵀ, V = Bᵀ d B.
            let u = |x: usize, y: usize| {
                let mut s = 0.0;
                for a in 0..r {
                    for b in 0..r {
                        s += mat(&A::G[x], a) * g[a][b] * mat(&A::G[y], b);
                    }
                }
                s
            };
            let v = |x: usize, y: usize| {
                let mut s = 0.0;
                for a in 0..alpha {
                    for b in 0..alpha {
                        s += mat(&A::BT[x], a) * d[a][b] * mat(&A::BT[y], b);
                    }
                }
                s
            };
            for i in 0..TILE {
                for j in 0..TILE {
                    let mut ours = 0.0;
                    for x in 0..alpha {
                        for y in 0..alpha {
                            ours += mat(&A::AT[i], x) * u(x, y) * v(x, y) * mat(&A::AT[j], y);
                        }
                    }
                    let mut direct = 0.0;
                    for a in 0..r {
                        for b in 0..r {
                            direct += d[i + a][j + b] * g[a][b];
                        }
                    }
                    assert!(
                        (ours - direct).abs() < tol,
                        "F(4, {r}) output ({i}, {j}): {ours} against {direct}"
                    );
                }
            }
        }
    }

    /// The forward and both gradients give the same bits on 1, 2 and 3
    /// threads (each GEMM runs on one thread, each transform per channel),
    /// as ARCHITECTURE.md states for every conv path.
    #[test]
    fn results_are_the_same_on_any_number_of_threads() {
        if !super::super::shifted::avx512() {
            eprintln!("skipped: this CPU has no AVX-512F, so the kernels do not run");
            return;
        }
        // More tile columns than one f32 weight-gradient sum for the first.
        for (n, c, c_out, h, k, stride) in [(48, 5, 18, 16, 3, 1), (16, 6, 17, 16, 4, 2)] {
            let g = Geometry {
                n,
                c,
                h,
                w: h,
                c_out,
                k,
                stride,
                padding: 1,
                budget: usize::MAX,
                direct: false,
                shifted: false,
                winograd: false,
                winograd4: true,
                winograd4_weight_grad: true,
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
                let mut dx = vec![0f32; x.len()];
                pool.install(|| {
                    weight_grad(&x, &dy, g, &mut dw);
                    forward(&x, &weight, &bias, g, &mut y);
                    input_grad(&dy, &weight, g, &mut dx);
                });
                [dw, y, dx]
            };
            let one = on(1);
            assert!(one.iter().all(|part| part.iter().any(|v| *v != 0.0)));
            for threads in [2, 3] {
                let many = on(threads);
                for (part, (a, b)) in one.iter().zip(&many).enumerate() {
                    for (u, v) in a.iter().zip(b) {
                        assert_eq!(
                            u.to_bits(),
                            v.to_bits(),
                            "{g:?} part {part} on {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn both_algorithms_compute_the_correlation_exactly() {
        check_exact::<F43>(rounding_bound(1));
        check_exact::<F42>(rounding_bound(2));
    }

    #[test]
    fn the_rounding_bounds_are_those_of_the_module_doc() {
        assert_eq!(rounding_bound(1).round(), 2304.0);
        assert_eq!(rounding_bound(2).round(), 400.0);
    }
}
