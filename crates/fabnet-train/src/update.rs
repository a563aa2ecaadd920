//! The optimisers' per-element updates as in-place CPU kernels.
//!
//! Written with candle's tensor ops, one Adam update is a dozen passes over
//! every parameter, each allocating a new buffer; on the `tiny` preset that
//! was 15 % of a training step. Each kernel here is one parallel pass that
//! writes into the state it updates. The arithmetic follows PyTorch's
//! `torch.optim` (1.13) operation by operation, in f64 for every element,
//! rounded once to the tensor's dtype.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `buf ← momentum · buf + grad` (SGD's momentum buffer).
pub fn momentum(buf: &Tensor, grad: &Tensor, momentum: f64) -> Result<()> {
    buf.inplace_op2(
        &grad.contiguous()?,
        &Blend {
            keep: momentum,
            add: 1.0,
            square: false,
        },
    )
}

/// `moment ← beta · moment + (1 − beta) · grad` (Adam's first moment), or of
/// `grad²` with `square` (its second moment).
pub fn moment(moment: &Tensor, grad: &Tensor, beta: f64, square: bool) -> Result<()> {
    moment.inplace_op2(
        &grad.contiguous()?,
        &Blend {
            keep: beta,
            add: 1.0 - beta,
            square,
        },
    )
}

/// `param ← param − lr · direction` (SGD's step).
pub fn descend(param: &Tensor, direction: &Tensor, lr: f64) -> Result<()> {
    param.inplace_op2(&direction.contiguous()?, &Descend { lr })
}

/// Adam's step with bias-corrected moments:
/// `param ← param − step_size · m / (√v / √bias2 + eps)`.
pub fn adam(
    param: &Tensor,
    first: &Tensor,
    second: &Tensor,
    step_size: f64,
    bias2_sqrt: f64,
    eps: f64,
) -> Result<()> {
    param.inplace_op3(
        first,
        second,
        &AdamStep {
            step_size,
            bias2_sqrt,
            eps,
        },
    )
}

struct Blend {
    keep: f64,
    add: f64,
    square: bool,
}

struct Descend {
    lr: f64,
}

struct AdamStep {
    step_size: f64,
    bias2_sqrt: f64,
    eps: f64,
}

/// The contiguous elements of `l` in `s`.
fn span<'a, T>(s: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("{op}: the tensor {:?} is not contiguous", l.dims()),
    }
}

fn span_mut<'a, T>(s: &'a mut [T], l: &Layout, op: &str) -> Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut s[a..b]),
        None => bail!("{op}: the tensor {:?} is not contiguous", l.dims()),
    }
}

fn same_len(op: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        bail!("{op}: {a} elements updated from {b}");
    }
    Ok(())
}

/// `f` on every (destination, source) pair of elements, in parallel.
fn zip_apply<T: WithDType>(dst: &mut [T], src: &[T], f: impl Fn(f64, f64) -> f64 + Sync) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d = T::from_f64(f(d.to_f64(), s.to_f64()));
            }
        });
}

/// A per-element update of a destination from a source of the same length.
trait Pairwise {
    fn run<T: WithDType>(&self, dst: &mut [T], src: &[T]);
}

impl Pairwise for Blend {
    fn run<T: WithDType>(&self, dst: &mut [T], grad: &[T]) {
        let (keep, add) = (self.keep, self.add);
        if self.square {
            zip_apply(dst, grad, |m, g| m * keep + g * g * add);
        } else {
            zip_apply(dst, grad, |m, g| m * keep + g * add);
        }
    }
}

impl Pairwise for Descend {
    fn run<T: WithDType>(&self, dst: &mut [T], direction: &[T]) {
        let lr = self.lr;
        zip_apply(dst, direction, |p, d| p + d * -lr);
    }
}

/// Runs `kernel` on the contiguous f32 or f64 storages of an in-place op.
fn dispatch_pairwise<K: Pairwise>(
    kernel: &K,
    op: &str,
    (s1, l1): (&mut CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<()> {
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            let (a, b) = (span_mut(a, l1, op)?, span(b, l2, op)?);
            same_len(op, a.len(), b.len())?;
            kernel.run(a, b);
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            let (a, b) = (span_mut(a, l1, op)?, span(b, l2, op)?);
            same_len(op, a.len(), b.len())?;
            kernel.run(a, b);
        }
        _ => bail!("{op}: f32 or f64 tensors of one dtype"),
    }
    Ok(())
}

impl InplaceOp2 for Blend {
    fn name(&self) -> &'static str {
        "optimizer-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        dispatch_pairwise(self, self.name(), (s1, l1), (s2, l2))
    }
}

impl InplaceOp2 for Descend {
    fn name(&self) -> &'static str {
        "optimizer-descend"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        dispatch_pairwise(self, self.name(), (s1, l1), (s2, l2))
    }
}

impl AdamStep {
    fn run<T: WithDType>(&self, param: &mut [T], first: &[T], second: &[T]) {
        let (step, bias2_sqrt, eps) = (self.step_size, self.bias2_sqrt, self.eps);
        param
            .par_chunks_mut(CHUNK)
            .zip(first.par_chunks(CHUNK).zip(second.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                    let denom = v.to_f64().sqrt() / bias2_sqrt + eps;
                    *p = T::from_f64(p.to_f64() + (m.to_f64() / denom) * -step);
                }
            });
    }
}

impl InplaceOp3 for AdamStep {
    fn name(&self) -> &'static str {
        "optimizer-adam-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let op = self.name();
        match (s1, s2, s3) {
            (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                let (p, m, v) = (span_mut(p, l1, op)?, span(m, l2, op)?, span(v, l3, op)?);
                same_len(op, p.len(), m.len())?;
                same_len(op, p.len(), v.len())?;
                self.run(p, m, v);
            }
            (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                let (p, m, v) = (span_mut(p, l1, op)?, span(m, l2, op)?, span(v, l3, op)?);
                same_len(op, p.len(), m.len())?;
                same_len(op, p.len(), v.len())?;
                self.run(p, m, v);
            }
            _ => bail!("{op}: f32 or f64 tensors of one dtype"),
        }
        Ok(())
    }
}
