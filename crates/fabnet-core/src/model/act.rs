//! (Leaky) ReLU as one fused CPU op with a one-pass backward.
//!
//! candle composes LeakyReLU from `maximum` and `minimum`, whose backward
//! builds equality masks and divisions: profiled on a training step it cost
//! about 5× PyTorch's. Here the forward is one pass and the backward one
//! pass over (input, upstream gradient). PyTorch's conventions are kept: the
//! slope at exactly 0 is the negative one. Other devices use candle's
//! primitives with the same semantics.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel chunk: large enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

/// `max(x, 0) + slope · min(x, 0)` elementwise, any shape, f32 or f64;
/// `slope = 0` is ReLU. Differentiable; the gradient is 1 where `x > 0` and
/// `slope` elsewhere, as in PyTorch.
pub fn leaky_relu(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    if !super::storage::fused_cpu(x) {
        let pos = x.gt(0.0)?;
        return pos.where_cond(x, &(x * slope)?);
    }
    x.contiguous()?.apply_op1(LeakyRelu { slope })
}

struct LeakyRelu {
    slope: f64,
}

fn contiguous_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input {:?} is not contiguous", l.dims()),
    }
}

fn fwd<T: WithDType>(x: &[T], slope: T) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = vec![zero; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = if v > zero { v } else { v * slope };
            }
        });
    out
}

fn bwd<T: WithDType>(x: &[T], g: &[T], slope: T) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut out = vec![zero; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| {
            for ((o, &v), &d) in o.iter_mut().zip(x).zip(g) {
                *o = if v > zero { d } else { d * slope };
            }
        });
    out
}

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky_relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(fwd(
                contiguous_slice::<f32>(s, l, self.name())?,
                self.slope as f32,
            )),
            CpuStorage::F64(_) => {
                CpuStorage::F64(fwd(contiguous_slice::<f64>(s, l, self.name())?, self.slope))
            }
            other => candle_core::bail!("leaky_relu: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(
            &grad,
            &LeakyReluGrad { slope: self.slope },
        )?))
    }
}

/// `(x, dy) -> dy · (x > 0 ? 1 : slope)`.
struct LeakyReluGrad {
    slope: f64,
}

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "leaky_relu_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "leaky_relu_backward: input {:?} and gradient {:?} differ",
                l1.dims(),
                l2.dims()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(bwd(
                contiguous_slice::<f32>(s1, l1, self.name())?,
                contiguous_slice::<f32>(s2, l2, self.name())?,
                self.slope as f32,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(bwd(
                contiguous_slice::<f64>(s1, l1, self.name())?,
                contiguous_slice::<f64>(s2, l2, self.name())?,
                self.slope,
            )),
            _ => candle_core::bail!(
                "leaky_relu_backward: unsupported dtypes {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::leaky_relu;
    use candle_core::{DType, Device, Tensor, Var};

    #[test]
    fn matches_pytorch_values_and_gradients_including_at_zero() {
        let x = Var::new(&[-2.0f32, -0.5, 0.0, 0.25, 3.0], &Device::Cpu).unwrap();
        let y = leaky_relu(x.as_tensor(), 0.2).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [-0.4, -0.1, 0.0, 0.25, 3.0]);
        let up = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0, 5.0], &Device::Cpu).unwrap();
        let grads = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        // torch.nn.functional.leaky_relu: slope where x <= 0.
        let g = grads.get(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, [0.2, 0.4, 3.0 * 0.2, 4.0, 5.0]);
        let relu = leaky_relu(x.as_tensor(), 0.0).unwrap().sum_all().unwrap();
        let g = relu
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [0.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn handles_f64_and_strided_inputs() {
        let x = Tensor::arange(-6i64, 6, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .reshape((3, 4))
            .unwrap()
            .t()
            .unwrap();
        let y = leaky_relu(&x, 0.5).unwrap();
        let expected: Vec<Vec<f64>> = x
            .to_vec2::<f64>()
            .unwrap()
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| if v > 0.0 { v } else { 0.5 * v })
                    .collect()
            })
            .collect();
        assert_eq!(y.to_vec2::<f64>().unwrap(), expected);
        assert!(leaky_relu(&x.to_dtype(DType::U8).unwrap(), 0.1).is_err());
    }
}
