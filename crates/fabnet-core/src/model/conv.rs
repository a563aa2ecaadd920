//! 2-D convolution as im2col + one GEMM, so that its backward is two GEMMs
//! and a col2im instead of candle's CPU `conv_transpose2d`, a direct loop
//! that dominated the training step's profile.
//!
//! `cols = im2col(x)` is `(k·k·C_in, N·H_out·W_out)`, rows ordered (ky, kx,
//! c) like candle's own conv so that sums run in the same order; the output
//! is `W (C_out, k·k·C_in) @ cols`, rearranged to `(N, C_out, H_out,
//! W_out)`. candle's matmul backward gives the weight gradient and
//! `W^T @ dY`, which col2im (im2col's adjoint) scatters back onto the
//! input. Other devices use candle's conv2d.
//!
//! The trade: a training step's conv fwd+bwd is about a quarter faster, but
//! the column matrices (k² times each input for stride 1) stay alive for
//! the backward pass, which about doubles a step's peak memory.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Geometry of a square-kernel convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.k) / self.stride + 1
    }

    fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.k) / self.stride + 1
    }

    /// Input coordinate of output position `o` and kernel tap `t` along an
    /// axis of length `len`, or `None` in the padding.
    fn source(&self, o: usize, t: usize, len: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.padding)
            .filter(|&i| i < len)
    }

    /// Row of `cols` for channel `c` and kernel tap `(i, j)`.
    fn row(&self, c: usize, i: usize, j: usize) -> usize {
        (i * self.k + j) * self.c + c
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
    let (cout, cin, kh, kw) = weight.dims4()?;
    let bias = bias.reshape((1, cout, 1, 1))?;
    if !x.device().is_cpu() {
        return x
            .conv2d(weight, padding, stride, 1, 1)?
            .broadcast_add(&bias);
    }
    let (n, c, h, w) = x.dims4()?;
    if c != cin || kh != kw || h + 2 * padding < kh || w + 2 * padding < kw || stride == 0 {
        candle_core::bail!(
            "conv2d: input {:?} does not fit kernel {:?} with stride {stride} and padding {padding}",
            x.dims(),
            weight.dims()
        );
    }
    let g = Geometry {
        n,
        c,
        h,
        w,
        k: kh,
        stride,
        padding,
    };
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let w2 = weight
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((cout, cin * kh * kw))?;
    let y = w2.matmul(&cols)?;
    y.reshape((cout, n, g.out_h(), g.out_w()))?
        .transpose(0, 1)?
        .broadcast_add(&bias)
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("im2col: operand {:?} is not contiguous", l.dims()),
    }
}

/// `(N, C, H, W) -> (k·k·C, N·H_out·W_out)`.
struct Im2Col(Geometry);

fn im2col<T: WithDType>(x: &[T], g: Geometry) -> Vec<T> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let row = g.n * ho * wo;
    let mut cols = vec![T::from_f64(0.0); g.c * g.k * g.k * row];
    cols.par_chunks_mut(row).enumerate().for_each(|(r, out)| {
        let (tap, c) = (r / g.c, r % g.c);
        let (i, j) = (tap / g.k, tap % g.k);
        for b in 0..g.n {
            let plane = &x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
            for oy in 0..ho {
                let Some(y) = g.source(oy, i, g.h) else {
                    continue;
                };
                let dst = &mut out[(b * ho + oy) * wo..][..wo];
                for (ox, d) in dst.iter_mut().enumerate() {
                    if let Some(xx) = g.source(ox, j, g.w) {
                        *d = plane[y * g.w + xx];
                    }
                }
            }
        }
    });
    cols
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(im2col(slice::<f32>(s, l)?, g)),
            CpuStorage::F64(_) => CpuStorage::F64(im2col(slice::<f64>(s, l)?, g)),
            other => candle_core::bail!("im2col: unsupported dtype {:?}", other.dtype()),
        };
        Ok((
            out,
            Shape::from((g.c * g.k * g.k, g.n * g.out_h() * g.out_w())),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = self.0;
        // col2im writes channel-major (C, N, H, W) so that channels fill in parallel.
        let dx = grad.contiguous()?.apply_op1_no_bwd(&Col2Im(g))?;
        Ok(Some(dx.transpose(0, 1)?))
    }
}

/// The adjoint of [`Im2Col`]: `(k·k·C, N·H_out·W_out) -> (C, N, H, W)`,
/// summing every column entry into the input pixel it was read from.
struct Col2Im(Geometry);

fn col2im<T: WithDType>(cols: &[T], g: Geometry) -> Vec<T> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let row = g.n * ho * wo;
    let mut dx = vec![T::from_f64(0.0); g.c * g.n * g.h * g.w];
    dx.par_chunks_mut(g.n * g.h * g.w)
        .enumerate()
        .for_each(|(c, out)| {
            for i in 0..g.k {
                for j in 0..g.k {
                    let src = &cols[g.row(c, i, j) * row..][..row];
                    for b in 0..g.n {
                        let plane = &mut out[b * g.h * g.w..][..g.h * g.w];
                        for oy in 0..ho {
                            let Some(y) = g.source(oy, i, g.h) else {
                                continue;
                            };
                            let s = &src[(b * ho + oy) * wo..][..wo];
                            for (ox, &v) in s.iter().enumerate() {
                                if let Some(xx) = g.source(ox, j, g.w) {
                                    plane[y * g.w + xx] += v;
                                }
                            }
                        }
                    }
                }
            }
        });
    dx
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(col2im(slice::<f32>(s, l)?, g)),
            CpuStorage::F64(_) => CpuStorage::F64(col2im(slice::<f64>(s, l)?, g)),
            other => candle_core::bail!("col2im: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from((g.c, g.n, g.h, g.w))))
    }
}

#[cfg(test)]
mod tests {
    use super::conv2d;
    use candle_core::{DType, Device, Tensor, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Against candle's own conv2d and its backward, in f64, for the
    /// model's two kernels and odd sizes (square ones for stride 2: candle's
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
        ] {
            let x = Var::rand(-1f64, 1f64, (n, cin, h, w), &dev).unwrap();
            let wt = Var::rand(-1f64, 1f64, (cout, cin, k, k), &dev).unwrap();
            let b = Var::rand(-1f64, 1f64, cout, &dev).unwrap();
            let (ho, wo) = (
                (h + 2 * padding - k) / stride + 1,
                (w + 2 * padding - k) / stride + 1,
            );
            let up = Tensor::rand(-1f64, 1f64, (n, cout, ho, wo), &dev).unwrap();
            let ours = conv2d(
                x.as_tensor(),
                wt.as_tensor(),
                b.as_tensor(),
                stride,
                padding,
            )
            .unwrap();
            let theirs = x
                .conv2d(wt.as_tensor(), padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-12, "forward {k}x{k}");
            let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &wt, &b] {
                let (a, e) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(
                    max_diff(a, e) < 1e-12,
                    "gradient of {:?} for {k}x{k}",
                    v.dims()
                );
            }
        }
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
