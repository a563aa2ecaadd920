//! 2-D convolution on the CPU as chunked im2col + GEMM (the `gemm` crate
//! candle itself uses), with a hand-written backward of two GEMMs and a
//! col2im, so that no column matrix outlives the call.
//!
//! candle's CPU conv backward is a direct `conv_transpose2d` loop that
//! dominated the training step. Here, for a chunk of samples at a time,
//! `cols = im2col(x)` is `(C·k·k, n·H_out·W_out)` with rows ordered
//! (c, ky, kx) so that the weight `(C_out, C_in, k, k)` is already the
//! `(C_out, C_in·k·k)` left operand; the forward is `W @ cols` plus bias,
//! scattered to `(N, C_out, H_out, W_out)`. The backward is
//! `dW = Σ dY @ colsᵀ` (the columns recomputed chunk by chunk instead of
//! kept alive) and `dx = col2im(Wᵀ @ dY)`. Chunks bound the column buffer
//! to [`COLS_BUDGET`] elements, and the column and GEMM buffers are per-thread
//! scratch reused from call to call. Other devices use candle's conv2d.

use super::storage::{
    dispatch2, dispatch3, give_scratch, min_items, take_scratch, Kernel2, Kernel3,
};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Most elements of one column buffer: a chunk holds as many samples as fit
/// (at least one), so buffers stay under glibc's mmap threshold and are
/// reused from the heap instead of page-faulted in on every call.
const COLS_BUDGET: usize = 1 << 22;

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
    /// Most elements of one column buffer ([`COLS_BUDGET`] outside tests).
    budget: usize,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.k) / self.stride + 1
    }

    fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.k) / self.stride + 1
    }

    /// Output pixels of one sample.
    fn out_plane(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Rows of the column matrix, `C·k·k`.
    fn depth(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Samples per chunk.
    fn chunk(&self) -> usize {
        (self.budget / (self.depth() * self.out_plane()).max(1)).clamp(1, self.n)
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
    conv2d_chunked(x, weight, bias, stride, padding, COLS_BUDGET)
}

/// [`conv2d`] with a column buffer of at most `budget` elements.
fn conv2d_chunked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    budget: usize,
) -> candle_core::Result<Tensor> {
    let (cout, cin, kh, kw) = weight.dims4()?;
    if !x.device().is_cpu() {
        return x
            .conv2d(weight, padding, stride, 1, 1)?
            .broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    let (n, c, h, w) = x.dims4()?;
    if c != cin
        || kh != kw
        || h + 2 * padding < kh
        || w + 2 * padding < kw
        || stride == 0
        || bias.dims() != [cout]
    {
        candle_core::bail!(
            "conv2d: input {:?} does not fit kernel {:?} and bias {:?} with stride {stride} and padding {padding}",
            x.dims(),
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
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Conv(g))
}

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst (m×n, row-major, row stride dst_rs) = [dst +] lhs (m×k) @ rhs (k×n)`
/// where each operand is given by its (row, column) strides.
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
            parallelism(),
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

/// Fills `cols` `(C·k·k, nb·P)` from samples `b0..b0 + nb` of `x`, zeros
/// in the padding.
fn im2col<T: WithDType>(x: &[T], g: Geometry, b0: usize, nb: usize, cols: &mut [T]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let row = nb * ho * wo;
    let zero = T::from_f64(0.0);
    cols[..g.depth() * row]
        .par_chunks_mut(row)
        .enumerate()
        .with_min_len(min_items(row))
        .for_each(|(r, out)| {
            let (c, tap) = (r / (g.k * g.k), r % (g.k * g.k));
            let (ky, kx) = (tap / g.k, tap % g.k);
            let (ylo, yhi) = g.valid(ky, g.h, ho);
            let (xlo, xhi) = g.valid(kx, g.w, wo);
            for (bi, dst) in out.chunks_exact_mut(ho * wo).enumerate() {
                let plane = &x[((b0 + bi) * g.c + c) * g.h * g.w..][..g.h * g.w];
                for (oy, d) in dst.chunks_exact_mut(wo).enumerate() {
                    if oy < ylo || oy >= yhi {
                        d.fill(zero);
                        continue;
                    }
                    let src = &plane[(oy * g.stride + ky - g.padding) * g.w..][..g.w];
                    d[..xlo].fill(zero);
                    d[xhi..].fill(zero);
                    let first = xlo * g.stride + kx - g.padding;
                    gather_strided(&mut d[xlo..xhi], &src[first..], g.stride);
                }
            }
        });
}

/// Adds `cols` `(C·k·k, nb·P)` back onto the input gradient `dx` of
/// samples `b0..b0 + nb` (im2col's adjoint), channels in parallel.
fn col2im<T: WithDType>(cols: &[T], g: Geometry, b0: usize, nb: usize, dx: &mut [T]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let row = nb * ho * wo;
    let plane = g.h * g.w;
    // dx is (N, C, H, W): hand each channel its planes of this chunk.
    let mut planes: Vec<Vec<&mut [T]>> = (0..g.c).map(|_| Vec::with_capacity(nb)).collect();
    for (i, p) in dx.chunks_exact_mut(plane).enumerate() {
        let (b, c) = (i / g.c, i % g.c);
        if (b0..b0 + nb).contains(&b) {
            planes[c].push(p);
        }
    }
    planes
        .par_iter_mut()
        .enumerate()
        .with_min_len(min_items(g.k * g.k * row))
        .for_each(|(c, ps)| {
            for tap in 0..g.k * g.k {
                let (ky, kx) = (tap / g.k, tap % g.k);
                let (ylo, yhi) = g.valid(ky, g.h, ho);
                let (xlo, xhi) = g.valid(kx, g.w, wo);
                let src_row = &cols[(c * g.k * g.k + tap) * row..][..row];
                for (p, src) in ps.iter_mut().zip(src_row.chunks_exact(ho * wo)) {
                    for oy in ylo..yhi {
                        let s = &src[oy * wo..][xlo..xhi];
                        let y = oy * g.stride + ky - g.padding;
                        let first = xlo * g.stride + kx - g.padding;
                        let d = &mut p[y * g.w..][..g.w];
                        scatter_add_strided(&mut d[first..], s, g.stride);
                    }
                }
            }
        });
}

/// The forward op over (x, weight, bias).
struct Conv(Geometry);

fn forward<T: WithDType>(x: &[T], weight: &[T], bias: &[T], g: Geometry) -> Vec<T> {
    let p = g.out_plane();
    let chunk = g.chunk();
    let mut out = vec![T::from_f64(0.0); g.n * g.c_out * p];
    // Scratch: im2col and the GEMM write every element they later read.
    let mut cols = take_scratch::<T>(g.depth() * chunk * p);
    let mut prod = take_scratch::<T>(g.c_out * chunk * p);
    for b0 in (0..g.n).step_by(chunk) {
        let nb = chunk.min(g.n - b0);
        let width = nb * p;
        im2col(x, g, b0, nb, &mut cols);
        // SAFETY: weight is (C_out, depth), cols (depth, width), prod (C_out, width).
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
        // (C_out, nb·P) -> (nb, C_out, P), adding the bias on the way.
        out[b0 * g.c_out * p..(b0 + nb) * g.c_out * p]
            .par_chunks_mut(p)
            .enumerate()
            .with_min_len(min_items(p))
            .for_each(|(i, dst)| {
                let (bi, o) = (i / g.c_out, i % g.c_out);
                let src = &prod[o * width + bi * p..][..p];
                let b = bias[o];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s + b;
                }
            });
    }
    give_scratch(cols);
    give_scratch(prod);
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
        let packed = x.apply_op2_no_bwd(&grad, &WeightGrad(g))?;
        let dw = packed
            .narrow(0, 0, g.c_out * g.depth())?
            .reshape((g.c_out, g.c, g.k, g.k))?;
        let db = packed.narrow(0, g.c_out * g.depth(), g.c_out)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// Gathers samples `b0..b0 + nb` of `dy` `(N, C_out, P)` into `(C_out, nb·P)`.
fn gather_grad<T: WithDType>(dy: &[T], g: Geometry, b0: usize, nb: usize, dst: &mut [T]) {
    let p = g.out_plane();
    dst[..g.c_out * nb * p]
        .par_chunks_mut(nb * p)
        .enumerate()
        .with_min_len(min_items(nb * p))
        .for_each(|(o, row)| {
            for (bi, d) in row.chunks_exact_mut(p).enumerate() {
                d.copy_from_slice(&dy[((b0 + bi) * g.c_out + o) * p..][..p]);
            }
        });
}

/// `dx` from (upstream gradient, weight): `col2im(Wᵀ @ dY)`.
struct InputGrad(Geometry);

fn input_grad<T: WithDType>(dy: &[T], weight: &[T], g: Geometry) -> Vec<T> {
    let p = g.out_plane();
    let chunk = g.chunk();
    let mut dx = vec![T::from_f64(0.0); g.n * g.c * g.h * g.w];
    let mut cols = take_scratch::<T>(g.depth() * chunk * p);
    let mut dyc = take_scratch::<T>(g.c_out * chunk * p);
    for b0 in (0..g.n).step_by(chunk) {
        let nb = chunk.min(g.n - b0);
        let width = nb * p;
        gather_grad(dy, g, b0, nb, &mut dyc);
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
        col2im(&cols, g, b0, nb, &mut dx);
    }
    give_scratch(cols);
    give_scratch(dyc);
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
/// channels, long sums), then transposed.
struct WeightGrad(Geometry);

fn weight_grad<T: WithDType>(x: &[T], dy: &[T], g: Geometry) -> Vec<T> {
    let p = g.out_plane();
    let chunk = g.chunk();
    let mut part = take_scratch::<T>(g.depth() * g.c_out);
    let mut cols = take_scratch::<T>(g.depth() * chunk * p);
    let mut dyc = take_scratch::<T>(g.c_out * chunk * p);
    // Sums over thousands of output pixels lose precision in f32, so each
    // block of SUM_BLOCK pixels is a GEMM whose partial result is added in
    // f64. When the whole batch is one chunk and one block (the deep
    // layers' few pixels), the GEMM result is the sum itself.
    let one_block = chunk >= g.n && g.n * p <= SUM_BLOCK;
    let mut sum = if one_block {
        Vec::new()
    } else {
        vec![0f64; g.depth() * g.c_out]
    };
    for b0 in (0..g.n).step_by(chunk) {
        let nb = chunk.min(g.n - b0);
        let width = nb * p;
        im2col(x, g, b0, nb, &mut cols);
        gather_grad(dy, g, b0, nb, &mut dyc);
        for k0 in (0..width).step_by(SUM_BLOCK) {
            let kb = SUM_BLOCK.min(width - k0);
            // SAFETY: cols[.., k0..k0 + kb] is (depth, kb) with row stride
            // width; dYᵀ is (kb, C_out) read from dyc (C_out, width) at
            // column k0; part is (depth, C_out).
            unsafe {
                matmul(
                    &mut part,
                    g.c_out,
                    false,
                    &cols[k0..],
                    (width, 1),
                    &dyc[k0..],
                    (1, width),
                    (g.depth(), kb, g.c_out),
                );
            }
            if !one_block {
                sum.par_chunks_mut(1 << 14)
                    .zip(part.par_chunks(1 << 14))
                    .for_each(|(s, p)| {
                        for (s, v) in s.iter_mut().zip(p) {
                            *s += v.to_f64();
                        }
                    });
            }
        }
    }
    // [dW (C_out, depth), db (C_out)]
    let mut out = vec![T::from_f64(0.0); g.c_out * g.depth() + g.c_out];
    let (dw, db) = out.split_at_mut(g.c_out * g.depth());
    if one_block {
        // The scratch may be longer than this layer's (depth, C_out).
        transpose_into(dw, &part[..g.depth() * g.c_out], g, |v: &T| *v);
    } else {
        transpose_into(dw, &sum, g, |v: &f64| T::from_f64(*v));
    }
    db.par_iter_mut()
        .enumerate()
        .with_min_len(min_items(g.n * p))
        .for_each(|(o, d)| {
            let sum: f64 = dy
                .chunks_exact(p)
                .skip(o)
                .step_by(g.c_out)
                .map(|plane| plane.iter().map(|v| v.to_f64()).sum::<f64>())
                .sum();
            *d = T::from_f64(sum);
        });
    give_scratch(part);
    give_scratch(cols);
    give_scratch(dyc);
    out
}

/// `dw` (C_out, depth) from `sum` (depth, C_out), in bands of TILE output
/// channels, so that each task writes whole rows and reads short contiguous
/// runs.
fn transpose_into<S: Sync, T: WithDType>(
    dw: &mut [T],
    sum: &[S],
    g: Geometry,
    cast: impl Fn(&S) -> T + Sync,
) {
    const TILE: usize = 16;
    dw.par_chunks_mut(TILE * g.depth())
        .enumerate()
        .with_min_len(min_items(TILE * g.depth()))
        .for_each(|(t, rows)| {
            let o0 = t * TILE;
            let n_o = rows.len() / g.depth();
            for (r, src) in sum.chunks_exact(g.c_out).enumerate() {
                for (i, v) in src[o0..o0 + n_o].iter().enumerate() {
                    rows[i * g.depth() + r] = cast(v);
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

#[cfg(test)]
mod tests {
    use super::super::storage::{max_abs_diff as max_diff, poison_scratch};
    use super::{conv2d, conv2d_chunked};
    use candle_core::{DType, Device, Tensor, Var};

    /// Against candle's own conv2d and its backward, in f64, for the
    /// model's two kernels and odd sizes, whole and in chunks of one and
    /// two samples (square ones for stride 2: candle's
    /// backward gives the wrong input-gradient shape when H and W need
    /// different output paddings).
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
        ] {
            let x = Var::rand(-1f64, 1f64, (n, cin, h, w), &dev).unwrap();
            let wt = Var::rand(-1f64, 1f64, (cout, cin, k, k), &dev).unwrap();
            let b = Var::rand(-1f64, 1f64, cout, &dev).unwrap();
            let (ho, wo) = (
                (h + 2 * padding - k) / stride + 1,
                (w + 2 * padding - k) / stride + 1,
            );
            let up = Tensor::rand(-1f64, 1f64, (n, cout, ho, wo), &dev).unwrap();
            let theirs = x
                .conv2d(wt.as_tensor(), padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let gb = (&theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let sample = cin * k * k * ho * wo;
            for budget in [usize::MAX, sample, 2 * sample + 1] {
                // Whatever earlier calls left in the reused buffers must not
                // reach a result.
                poison_scratch();
                let ours = conv2d_chunked(
                    x.as_tensor(),
                    wt.as_tensor(),
                    b.as_tensor(),
                    stride,
                    padding,
                    budget,
                )
                .unwrap();
                assert!(
                    max_diff(&ours, &theirs) < 1e-12,
                    "forward {k}x{k} budget {budget}"
                );
                poison_scratch();
                let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &wt, &b] {
                    let (a, e) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                    assert!(
                        max_diff(a, e) < 1e-12,
                        "gradient of {:?} for {k}x{k} budget {budget}",
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
}
