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

use super::{conv2d, forward, geometry, Geometry, InputGrad, Path, WeightGrad, TILE_BUDGET};
use crate::model::storage::fused_cpu;
use crate::ops::kernel::{upsample_fwd, Real};
use crate::ops::upsample::UpsampleBackward;
use crate::ops::upsample_bilinear2d;
use candle_core::backend::BackendStorage;
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

fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    crate::model::storage::contiguous(s, l, what)
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
        let dx = if x.track_op() {
            let d_up = grad.apply_op2_no_bwd(weight, &InputGrad(g))?;
            let (h, w) = self.from;
            Some(d_up.apply_op1_no_bwd(&UpsampleBackward {
                in_h: h,
                in_w: w,
                align_corners: self.align_corners,
            })?)
        } else {
            None
        };
        if !weight.track_op() && !bias.track_op() {
            return Ok((dx, None, None));
        }
        let packed = self.upsampled(x)?.apply_op2_no_bwd(&grad, &WeightGrad(g))?;
        let dw = packed
            .narrow(0, 0, g.c_out * g.depth())?
            .reshape((g.c_out, g.c, g.k, g.k))?;
        let db = packed.narrow(0, g.c_out * g.depth(), g.c_out)?;
        Ok((dx, Some(dw), Some(db)))
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
}
