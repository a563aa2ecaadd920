//! A decoder level's bilinear upsampling and the conv after it as one op on
//! the CPU. Its values and gradients are those of the two ops in turn, bit
//! for bit (the same kernels run in the same order); what changes is that
//! the upsampled input, the largest tensor of the level, is not a tensor of
//! candle's graph. So backward hands its gradient from the conv's input
//! gradient straight to the upsampling's backward, without the zero-filled
//! accumulator and the sum candle's backprop makes for every tensor of the
//! graph (about 30 MB each way for a `small` flow decoder at batch 32).
//! The op keeps the upsampled input from the forward for its weight
//! gradient, as the graph kept it before.
//!
//! A level whose input is a single pixel (the decoders' first, on the
//! embedding) takes a shorter path ([`point`]): every upsampled pixel is
//! that pixel, so output pixel `p` of the conv is `Σ_c S_p[o][c]·x[c]`, with
//! `S_p` the sum of the kernel taps that fall inside the upsampled plane.
//! One GEMM over `S` replaces the conv's nine taps, five of them zero
//! padding on the decoders' 2×2 plane; the sums are the same up to rounding
//! (the test bounds the difference).

use super::{
    bias_grad, conv2d, forward, geometry, matmul, unpack_weight_grad, Geometry, InputGrad, Path,
    SyncPtr, WeightGrad, SUM_BLOCK, TILE_BUDGET,
};
use crate::model::storage::{contiguous, dispatch2, fused_cpu, Kernel2};
use crate::ops::kernel::{upsample_fwd, Real};
use crate::ops::upsample::UpsampleBackward;
use crate::ops::upsample_bilinear2d;
use candle_core::backend::BackendStorage;
use candle_core::CustomOp2;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, WithDType};
use std::any::Any;
use std::sync::Mutex;

/// `conv2d(upsample_bilinear2d(x, out_h, out_w, align_corners), weight,
/// bias, stride, padding)`, differentiable in all three, as one op on the
/// CPU (elsewhere as the two ops).
pub fn upsample_conv2d(
    x: &Tensor,
    (out_h, out_w): (usize, usize),
    align_corners: bool,
    (weight, bias): (&Tensor, &Tensor),
    (stride, padding): (usize, usize),
) -> candle_core::Result<Tensor> {
    if !fused_cpu(x) {
        let up = upsample_bilinear2d(x, out_h, out_w, align_corners)?;
        return conv2d(&up, weight, bias, stride, padding);
    }
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!(
            "upsample_conv2d: expected a non-empty input and output, got input {:?} and output size {out_h}x{out_w}",
            x.dims()
        );
    }
    let g = geometry(
        (n, c, out_h, out_w),
        weight,
        bias,
        (stride, padding),
        TILE_BUDGET,
        Path::Fastest,
    )?;
    let op = UpsampleConv {
        conv: g,
        from: (h, w),
        align_corners,
        upsampled: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

/// The fused op over (x, weight, bias).
struct UpsampleConv {
    /// The conv, on the upsampled input.
    conv: Geometry,
    /// The input's height and width.
    from: (usize, usize),
    align_corners: bool,
    /// The forward's upsampled input (a `Vec` of the input's dtype), for
    /// backward.
    upsampled: Mutex<Option<Box<dyn Any + Send>>>,
}

impl UpsampleConv {
    fn upsample<T: Real>(&self, x: &[T]) -> Vec<T> {
        let g = self.conv;
        upsample_fwd(x, g.n * g.c, self.from, (g.h, g.w), self.align_corners)
    }

    fn run<T: Real>(&self, x: &[T], weight: &[T], bias: &[T]) -> Vec<T> {
        if self.from == (1, 1) {
            return point::forward(x, weight, bias, self.conv);
        }
        let up = self.upsample(x);
        let out = forward(&up, weight, bias, self.conv);
        if let Ok(mut kept) = self.upsampled.lock() {
            *kept = Some(Box::new(up));
        }
        out
    }

    /// The upsampled input as a tensor on `x`'s device: the forward's, or
    /// computed again if it is gone (a second backward through the graph).
    fn upsampled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.conv;
        let shape = (g.n, g.c, g.h, g.w);
        let kept = self.upsampled.lock().ok().and_then(|mut k| k.take());
        if let Some(kept) = kept {
            let kept = match kept.downcast::<Vec<f32>>() {
                Ok(v) => return Tensor::from_vec(*v, shape, x.device()),
                Err(other) => other,
            };
            if let Ok(v) = kept.downcast::<Vec<f64>>() {
                return Tensor::from_vec(*v, shape, x.device());
            }
        }
        upsample_bilinear2d(&x.detach(), g.h, g.w, self.align_corners)
    }
}

impl CustomOp3 for UpsampleConv {
    fn name(&self) -> &'static str {
        "upsample-conv2d"
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
        let g = self.conv;
        let name = self.name();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.run::<f32>(
                    contiguous(s1, l1, name)?,
                    contiguous(s2, l2, name)?,
                    contiguous(s3, l3, name)?,
                ))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.run::<f64>(
                    contiguous(s1, l1, name)?,
                    contiguous(s2, l2, name)?,
                    contiguous(s3, l3, name)?,
                ))
            }
            _ => candle_core::bail!(
                "{name}: unsupported dtypes {:?}, {:?}, {:?} (f32 or f64, all alike)",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
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
        let g = self.conv;
        let single_pixel = self.from == (1, 1);
        let dx = if !x.track_op() {
            None
        } else if single_pixel {
            Some(grad.apply_op2_no_bwd(weight, &point::InputGrad(g))?)
        } else {
            let d_up = grad.apply_op2_no_bwd(weight, &InputGrad(g))?;
            let (h, w) = self.from;
            Some(d_up.apply_op1_no_bwd(&UpsampleBackward {
                in_h: h,
                in_w: w,
                align_corners: self.align_corners,
            })?)
        };
        if !weight.track_op() && !bias.track_op() {
            return Ok((dx, None, None));
        }
        let packed = if single_pixel {
            x.apply_op2_no_bwd(&grad, &point::WeightGrad(g))?
        } else {
            self.upsampled(x)?.apply_op2_no_bwd(&grad, &WeightGrad(g))?
        };
        let (dw, db) = unpack_weight_grad(&packed, &g)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// The level of a single-pixel input (see the module doc). `g` is the conv
/// on the upsampled plane; its input `x` is `(N, C)`, one pixel a channel.
/// With `P` output pixels, `S` is `(C_out·P, C)`, so that the output `(N,
/// C_out, P)` is `x @ Sᵀ` and the input gradient `dY @ S`, each operand in
/// its natural layout.
mod point {
    use super::*;
    use rayon::prelude::*;

    /// For each output pixel `p` of `g`, the taps `t` whose input falls
    /// inside the upsampled plane.
    fn taps(g: &Geometry) -> Vec<Vec<usize>> {
        let (ho, wo) = (g.out_h(), g.out_w());
        let inside = |o: usize, t: usize, len: usize| {
            (o * g.stride + t)
                .checked_sub(g.padding)
                .is_some_and(|v| v < len)
        };
        (0..ho * wo)
            .map(|p| {
                (0..g.k * g.k)
                    .filter(|t| inside(p / wo, t / g.k, g.h) && inside(p % wo, t % g.k, g.w))
                    .collect()
            })
            .collect()
    }

    /// `S` `(C_out·P, C)`: row `o·P + p` sums the taps of output pixel `p`
    /// of the kernels `(o, ·)`, tap by tap over whole rows of channels.
    fn summed_kernels<T: WithDType>(weight: &[T], g: &Geometry) -> Vec<T> {
        let (kk, taps) = (g.k * g.k, taps(g));
        let pixels = taps.len();
        let mut s = vec![T::zero(); g.c_out * pixels * g.c];
        s.par_chunks_mut(pixels * g.c)
            .zip(weight.par_chunks(g.c * kk))
            .for_each_init(
                || vec![T::zero(); kk * g.c],
                |by_tap, (rows, kernels)| {
                    // The kernels of output channel o, taps-major.
                    for (ci, kernel) in kernels.chunks_exact(kk).enumerate() {
                        for (t, v) in kernel.iter().enumerate() {
                            by_tap[t * g.c + ci] = *v;
                        }
                    }
                    for (row, valid) in rows.chunks_exact_mut(g.c).zip(&taps) {
                        for &t in valid {
                            for (acc, v) in row.iter_mut().zip(&by_tap[t * g.c..(t + 1) * g.c]) {
                                *acc += *v;
                            }
                        }
                    }
                },
            );
        s
    }

    /// `out (N × C_out·P)` = `x (N × C) @ Sᵀ`, computed as its transpose
    /// `S @ xᵀ` into `out` read column-major (the `gemm` crate's fast
    /// layouts), the rows of `S` split across the cores.
    fn times_summed<T: WithDType>(
        x: &[T],
        s: &[T],
        (n, c, width): (usize, usize, usize),
    ) -> Vec<T> {
        let mut out = vec![T::zero(); n * width];
        assert!(x.len() >= n * c && s.len() >= width * c);
        let dst = SyncPtr(out.as_mut_ptr());
        let half = width.div_ceil(2);
        (0..width)
            .step_by(half.max(1))
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|r0| {
                let rows = half.min(width - r0);
                // SAFETY: rows r0..r0 + rows of S (rows × C, row-major), xᵀ
                // (C × N) read from x with row stride 1 and column stride C,
                // and the destination's rows r0.. are out's columns r0..,
                // element (r, j) at j·width + r: all inside their buffers, and
                // no other task writes these columns.
                unsafe {
                    gemm::gemm(
                        rows,
                        n,
                        c,
                        dst.get().add(r0),
                        width as isize,
                        1,
                        false,
                        s.as_ptr().add(r0 * c),
                        1,
                        c as isize,
                        x.as_ptr(),
                        c as isize,
                        1,
                        T::from_f64(1.0),
                        T::from_f64(1.0),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
            });
        out
    }

    /// The forward: `out (N, C_out·P) = x @ Sᵀ + b`.
    pub(super) fn forward<T: WithDType>(x: &[T], weight: &[T], bias: &[T], g: Geometry) -> Vec<T> {
        let s = summed_kernels(weight, &g);
        let width = s.len() / g.c;
        let mut out = times_summed(x, &s, (g.n, g.c, width));
        let pixels = width / g.c_out;
        for sample in out.chunks_exact_mut(width) {
            for (plane, b) in sample.chunks_exact_mut(pixels).zip(bias) {
                for v in plane {
                    *v += *b;
                }
            }
        }
        out
    }

    /// `dx (N, C, 1, 1)` from (upstream gradient, weight): `dY @ S`.
    pub(super) struct InputGrad(pub(super) Geometry);

    impl Kernel2 for InputGrad {
        const NAME: &'static str = "upsample-conv2d-point-input-grad";

        fn run<T: WithDType>(&self, dy: &[T], weight: &[T]) -> Vec<T> {
            let g = self.0;
            let s = summed_kernels(weight, &g);
            let width = s.len() / g.c;
            let mut dx = vec![T::zero(); g.n * g.c];
            // SAFETY: dY is (N × C_out·P) and S (C_out·P × C), row-major;
            // dx is (N × C).
            unsafe {
                matmul(
                    &mut dx,
                    g.c,
                    false,
                    dy,
                    (width, 1),
                    &s,
                    (g.c, 1),
                    (g.n, width, g.c),
                )
            };
            dx
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
            Ok((
                dispatch2(self, (s1, l1), (s2, l2))?,
                Shape::from((g.n, g.c, 1, 1)),
            ))
        }
    }

    /// `[dW (C_out, C·k·k), db (C_out)]` from (input, upstream gradient):
    /// `G = dYᵀ @ x` `(C_out·P, C)` over at most [`SUM_BLOCK`] samples in
    /// the working type (added in f64 across blocks), then each tap sums
    /// the pixels it reaches, in f64.
    pub(super) struct WeightGrad(pub(super) Geometry);

    impl Kernel2 for WeightGrad {
        const NAME: &'static str = "upsample-conv2d-point-weight-grad";

        fn run<T: WithDType>(&self, x: &[T], dy: &[T]) -> Vec<T> {
            let g = self.0;
            let (c, kk, taps) = (g.c, g.k * g.k, taps(&g));
            let width = g.c_out * taps.len();
            let mut part = vec![T::zero(); width * c];
            let mut sum = if g.n > SUM_BLOCK {
                vec![0f64; width * c]
            } else {
                Vec::new()
            };
            for b0 in (0..g.n).step_by(SUM_BLOCK) {
                let nb = SUM_BLOCK.min(g.n - b0);
                let dyt = &dy[b0 * width..];
                part.par_chunks_mut(width.div_ceil(2) * c)
                    .enumerate()
                    .for_each(|(half, d)| {
                        let r0 = half * width.div_ceil(2);
                        // SAFETY: dYᵀ rows r0.. (width × nb) are read from
                        // dy at sample b0 with row stride 1 and column
                        // stride C_out·P; x (nb × C) from sample b0; d is
                        // (rows × C).
                        unsafe {
                            matmul(
                                d,
                                c,
                                false,
                                &dyt[r0..],
                                (1, width),
                                &x[b0 * c..],
                                (c, 1),
                                (d.len() / c, nb, c),
                            );
                        }
                    });
                if !sum.is_empty() {
                    for (s, v) in sum.iter_mut().zip(&part) {
                        *s += v.to_f64();
                    }
                }
            }
            let pixels = taps.len();
            let mut out = vec![T::zero(); g.c_out * c * kk + g.c_out];
            let (dw, db) = out.split_at_mut(g.c_out * c * kk);
            let (part, sum) = (&part, &sum);
            // For each tap, the pixels it reaches.
            let reached: Vec<Vec<usize>> = (0..kk)
                .map(|t| (0..pixels).filter(|p| taps[*p].contains(&t)).collect())
                .collect();
            dw.par_chunks_mut(c * kk)
                .enumerate()
                .for_each(|(o, kernels)| {
                    let mut total = vec![0f64; c];
                    for (t, pixels_of_t) in reached.iter().enumerate() {
                        total.fill(0.0);
                        for p in pixels_of_t {
                            let at = (o * pixels + p) * c;
                            if sum.is_empty() {
                                for (acc, v) in total.iter_mut().zip(&part[at..at + c]) {
                                    *acc += v.to_f64();
                                }
                            } else {
                                for (acc, v) in total.iter_mut().zip(&sum[at..at + c]) {
                                    *acc += v;
                                }
                            }
                        }
                        for (kernel, v) in kernels.chunks_exact_mut(kk).zip(&total) {
                            kernel[t] = T::from_f64(*v);
                        }
                    }
                });
            bias_grad(dy, pixels, db);
            out
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
            let len = g.c_out * g.depth() + g.c_out;
            Ok((dispatch2(self, (s1, l1), (s2, l2))?, Shape::from(len)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The fused op gives the two ops' values and gradients bit for bit, in
    /// f32 (through the model's fast paths: Winograd at 8×8 and the
    /// shifted kernel at 16×16) and f64, also on a second backward through
    /// the same graph, which recomputes the upsampled input.
    #[test]
    fn equals_upsampling_then_conv_bit_for_bit() {
        let dev = Device::Cpu;
        for (dtype, (n, c, c_out, side), align_corners) in [
            (DType::F32, (16, 16, 16, 4), false),
            (DType::F32, (2, 4, 8, 8), true),
            (DType::F64, (2, 3, 5, 3), false),
        ] {
            let var = |shape: &[usize]| {
                Var::from_tensor(
                    &Tensor::randn(0f64, 1f64, shape, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap()
            };
            let (x, w, b) = (
                var(&[n, c, side, side]),
                var(&[c_out, c, 3, 3]),
                var(&[c_out]),
            );
            let size = (2 * side, 2 * side);
            let up = upsample_bilinear2d(x.as_tensor(), size.0, size.1, align_corners).unwrap();
            let two_ops = conv2d(&up, w.as_tensor(), b.as_tensor(), 1, 1).unwrap();
            let fused = upsample_conv2d(
                x.as_tensor(),
                size,
                align_corners,
                (w.as_tensor(), b.as_tensor()),
                (1, 1),
            )
            .unwrap();
            let bits = |t: &Tensor| -> Vec<u64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .into_iter()
                    .map(f64::to_bits)
                    .collect()
            };
            assert_eq!(bits(&two_ops), bits(&fused), "forward {dtype:?} {side}");
            let r = Tensor::randn(0f64, 1f64, two_ops.dims(), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let expected = (&two_ops * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let loss = (&fused * &r).unwrap().sum_all().unwrap();
            for pass in 0..2 {
                let got = loss.backward().unwrap();
                for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                    assert_eq!(
                        bits(expected.get(v).unwrap()),
                        bits(got.get(v).unwrap()),
                        "gradient of {name}, {dtype:?} {side}, backward {pass}"
                    );
                }
            }
        }
    }

    /// A single-pixel input takes the summed-kernel path: the same values
    /// and gradients as the two ops up to rounding (inputs and weights in
    /// [-1, 1], so each output sums at most C·k² products of magnitude
    /// below 1, and each weight-gradient entry N·P), in f64 and f32, for the
    /// decoders' 1×1 → 2×2 level and a larger plane, batches of one and
    /// over [`SUM_BLOCK`] samples.
    #[test]
    fn single_pixel_input_matches_upsampling_then_conv() {
        let dev = Device::Cpu;
        for (dtype, eps) in [
            (DType::F64, f64::EPSILON),
            (DType::F32, f64::from(f32::EPSILON)),
        ] {
            for (n, c, c_out, out_side, align_corners) in [
                (4, 6, 5, 2, false),
                (1, 3, 2, 4, true),
                (SUM_BLOCK + 3, 2, 3, 2, false),
            ] {
                let var = |shape: &[usize]| {
                    Var::from_tensor(
                        &Tensor::rand(-1f64, 1f64, shape, &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    )
                    .unwrap()
                };
                let (x, w, b) = (var(&[n, c, 1, 1]), var(&[c_out, c, 3, 3]), var(&[c_out]));
                let size = (out_side, out_side);
                let up = upsample_bilinear2d(x.as_tensor(), size.0, size.1, align_corners).unwrap();
                let two_ops = conv2d(&up, w.as_tensor(), b.as_tensor(), 1, 1).unwrap();
                let fused = upsample_conv2d(
                    x.as_tensor(),
                    size,
                    align_corners,
                    (w.as_tensor(), b.as_tensor()),
                    (1, 1),
                )
                .unwrap();
                let what = format!("{dtype:?} {n}x{c}->{c_out} to {out_side}x{out_side}");
                let diff = |a: &Tensor, b: &Tensor| {
                    (a - b)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .max(0)
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let tol = 4.0 * eps * (c * 9) as f64;
                assert!(
                    diff(&two_ops, &fused) < tol,
                    "forward {what}: {}",
                    diff(&two_ops, &fused)
                );
                let r = Tensor::rand(-1f64, 1f64, two_ops.dims(), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let expected = (&two_ops * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let got = (&fused * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let pixels = out_side * out_side;
                for (name, v, bound) in [
                    ("x", &x, c_out * 9 * pixels),
                    ("weight", &w, n * pixels),
                    ("bias", &b, n * pixels),
                ] {
                    let d = diff(expected.get(v).unwrap(), got.get(v).unwrap());
                    assert!(
                        d < 4.0 * eps * bound as f64,
                        "gradient of {name}, {what}: {d}"
                    );
                }
            }
        }
    }
}
