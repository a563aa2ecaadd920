//! BatchNorm2d as one fused CPU op with a two-pass backward.
//!
//! candle-nn's BatchNorm is a chain of broadcast ops whose backward walks
//! every intermediate; on a `small` training step it cost about 15× PyTorch's
//! fused kernel. Here the train-mode forward is one statistics pass and one
//! normalising pass per channel, and the backward one pass for the two
//! channel sums and one for the input gradient. Statistics are summed in f64.
//! The semantics are PyTorch's `BatchNorm2d`: batch statistics with the
//! biased variance in train mode, the running mean and unbiased variance
//! updated with `momentum`, running statistics in eval mode. Other devices
//! use candle-nn's BatchNorm with the same semantics.

use super::storage::{contiguous, dispatch3, min_items, sum_of_plane_sums, Kernel3};
use crate::memory::zeros;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, ModuleT, Result, Shape, Tensor, Var, WithDType};
use rayon::prelude::*;

/// Batch normalisation over the channels of `(N, C, H, W)` with a learned
/// scale γ and shift β `(C,)` and running statistics `(C,)`, as PyTorch's
/// `BatchNorm2d(C, eps, momentum)`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    running_mean: Var,
    running_var: Var,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    momentum: f64,
    /// The same layer for devices other than the CPU.
    fallback: candle_nn::BatchNorm,
}

impl BatchNorm2d {
    /// A layer over `running_mean`, `running_var` (updated in place in train
    /// mode when they are variables, as those of a `VarMap` are), γ `weight`
    /// and β `bias`, all `(C,)`.
    pub fn new(
        running_mean: Tensor,
        running_var: Tensor,
        weight: Tensor,
        bias: Tensor,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let channels = weight.dim(0)?;
        for (name, t) in [
            ("running_mean", &running_mean),
            ("running_var", &running_var),
            ("bias", &bias),
        ] {
            if t.dims() != [channels] {
                candle_core::bail!(
                    "batch norm: {name} has shape {:?}, expected ({channels},)",
                    t.dims()
                );
            }
        }
        let fallback = candle_nn::BatchNorm::new_with_momentum(
            channels,
            running_mean.clone(),
            running_var.clone(),
            weight.clone(),
            bias.clone(),
            eps,
            momentum,
        )?;
        Ok(Self {
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            weight,
            bias,
            eps,
            momentum,
            fallback,
        })
    }

    /// Normalises `x` `(N, C, H, W)`. In train mode with this call's batch
    /// statistics (N·H·W must exceed 1, as in PyTorch), updating the running
    /// statistics; in eval mode with the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act_t(x, train, None)
    }

    /// [`BatchNorm2d::forward_t`] followed by a leaky ReLU of negative
    /// slope `slope` (0 for ReLU; at least 0), as one op on the CPU: the activation is
    /// applied as each output is written, and the backward applies its
    /// derivative (read from the sign of the op's output) as it reads the
    /// upstream gradient. Values and gradients are those of the two ops in
    /// turn ([`leaky_relu`](super::act::leaky_relu)), bit for bit; this saves
    /// a pass over the activations and a buffer each way.
    pub fn forward_act_t(&self, x: &Tensor, train: bool, slope: Option<f64>) -> Result<Tensor> {
        if slope.is_some_and(|s| s < 0.0 || s.is_nan()) {
            candle_core::bail!("batch norm: the fused activation needs a slope of at least 0");
        }
        if !super::storage::fused_cpu(x) {
            let y = self.fallback.forward_t(x, train)?;
            return match slope {
                Some(s) => super::act::leaky_relu(&y, s),
                None => Ok(y),
            };
        }
        let (n, c, h, w) = x.dims4()?;
        if c != self.weight.dim(0)? {
            candle_core::bail!(
                "batch norm: input {:?} does not have {} channels",
                x.dims(),
                self.weight.dim(0)?
            );
        }
        let x = x.contiguous()?;
        let count = n * h * w;
        let (mean, var) = if train {
            if count < 2 {
                candle_core::bail!(
                    "batch norm: expected more than 1 value per channel in train mode, got input {:?}",
                    x.dims()
                );
            }
            let (mean, var) = batch_stats(&x, c, h * w)?;
            let unbiased = count as f64 / (count as f64 - 1.0);
            let m = self.momentum;
            let blend = |running: &Var, stat: &[f64], scale: f64| -> Result<()> {
                let old = running.as_tensor().to_dtype(candle_core::DType::F64)?;
                let old = old.to_vec1::<f64>()?;
                let new: Vec<f64> = old
                    .iter()
                    .zip(stat)
                    .map(|(o, s)| (1.0 - m) * o + m * s * scale)
                    .collect();
                let t = Tensor::from_vec(new, c, x.device())?.to_dtype(running.dtype())?;
                running.set(&t)
            };
            blend(&self.running_mean, &mean, 1.0)?;
            blend(&self.running_var, &var, unbiased)?;
            (mean, var)
        } else {
            let read = |t: &Var| -> Result<Vec<f64>> {
                t.as_tensor()
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1::<f64>()
            };
            (read(&self.running_mean)?, read(&self.running_var)?)
        };
        let inv_std = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        x.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            Normalize {
                mean,
                inv_std,
                batch_stats: train,
                plane: h * w,
                slope,
            },
        )
    }
}

/// Per-channel mean and biased variance of a contiguous `(N, C, H, W)`
/// tensor, two passes in f64.
fn batch_stats(x: &Tensor, c: usize, plane: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    fn stats<T: WithDType>(x: &[T], c: usize, plane: usize) -> (Vec<f64>, Vec<f64>) {
        let count = (x.len() / c.max(1)) as f64;
        (0..c)
            .into_par_iter()
            .with_min_len(min_items(x.len() / c.max(1)))
            .map(|ch| {
                let planes: Vec<&[T]> = x.chunks_exact(plane).skip(ch).step_by(c).collect();
                let mean = sum_of_plane_sums(&planes, |v| v.to_f64()) / count;
                let sq = sum_of_plane_sums(&planes, |v| {
                    let d = v.to_f64() - mean;
                    d * d
                });
                (mean, sq / count)
            })
            .unzip()
    }
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else {
        candle_core::bail!("batch norm: statistics need a CPU tensor");
    };
    match s {
        CpuStorage::F32(_) => Ok(stats(contiguous::<f32>(s, layout, "batch norm")?, c, plane)),
        CpuStorage::F64(_) => Ok(stats(contiguous::<f64>(s, layout, "batch norm")?, c, plane)),
        other => candle_core::bail!("batch norm: unsupported dtype {:?}", other.dtype()),
    }
}

/// `y = (x − mean) · inv_std · γ + β` per channel over (x, γ, β), with the
/// statistics fixed at construction; `batch_stats` says they are functions
/// of `x` (train mode), which the backward differentiates through.
struct Normalize {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    batch_stats: bool,
    plane: usize,
    /// A leaky ReLU of this negative slope on the output, if any.
    slope: Option<f64>,
}

/// `v` through a leaky ReLU of negative slope `slope`, in `T` as
/// [`leaky_relu`](super::act::leaky_relu) computes it.
fn activate<T: WithDType>(v: T, slope: Option<T>) -> T {
    match slope {
        Some(s) if v <= T::zero() => v * s,
        _ => v,
    }
}

/// The upstream gradient `g` of an output `a` through the activation:
/// `g` where `a > 0`, else `g · slope` (PyTorch's choice at 0), in `T`.
fn through_activation<T: WithDType>(g: T, a: T, slope: Option<T>) -> T {
    match slope {
        Some(s) if a <= T::zero() => g * s,
        _ => g,
    }
}

impl Normalize {
    fn forward<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let c = gamma.len();
        let slope = self.slope.map(T::from_f64);
        let mut y = zeros(x.len(), T::zero());
        y.par_chunks_mut(self.plane)
            .zip(x.par_chunks(self.plane))
            .enumerate()
            .with_min_len(min_items(self.plane))
            .for_each(|(i, (out, inp))| {
                let ch = i % c;
                let mean = self.mean[ch];
                let scale = self.inv_std[ch] * gamma[ch].to_f64();
                let shift = beta[ch].to_f64();
                for (o, v) in out.iter_mut().zip(inp) {
                    *o = activate(T::from_f64((v.to_f64() - mean) * scale + shift), slope);
                }
            });
        y
    }

    /// `[dx (N·C·H·W), dγ (C), dβ (C)]` from (x, the op's output, upstream
    /// gradient) and γ; the output gives the activation's derivative.
    fn backward<T: WithDType>(&self, x: &[T], out: &[T], grad: &[T], gamma: &[f64]) -> Vec<T> {
        let c = gamma.len();
        let count = (x.len() / c.max(1)) as f64;
        let plane = self.plane;
        let slope = self.slope.map(T::from_f64);
        // Per channel: Σ g and Σ g·x̂.
        let (sum_g, sum_gx): (Vec<f64>, Vec<f64>) = (0..c)
            .into_par_iter()
            .with_min_len(min_items(x.len() / c.max(1)))
            .map(|ch| {
                let (mean, inv) = (self.mean[ch], self.inv_std[ch]);
                let mut sg = 0.0;
                let mut sgx = 0.0;
                for ((xp, ap), gp) in x
                    .chunks_exact(plane)
                    .zip(out.chunks_exact(plane))
                    .zip(grad.chunks_exact(plane))
                    .skip(ch)
                    .step_by(c)
                {
                    for ((v, a), g) in xp.iter().zip(ap).zip(gp) {
                        let g = through_activation(*g, *a, slope).to_f64();
                        sg += g;
                        sgx += g * (v.to_f64() - mean) * inv;
                    }
                }
                (sg, sgx)
            })
            .unzip();
        let mut packed = zeros(x.len() + 2 * c, T::zero());
        let (dx, rest) = packed.split_at_mut(x.len());
        dx.par_chunks_mut(plane)
            .zip(
                x.par_chunks(plane)
                    .zip(out.par_chunks(plane).zip(grad.par_chunks(plane))),
            )
            .enumerate()
            .with_min_len(min_items(plane))
            .for_each(|(i, (d, (xp, (ap, gp))))| {
                let ch = i % c;
                let inv = self.inv_std[ch];
                let scale = inv * gamma[ch];
                let g_of = |(a, g): (&T, &T)| through_activation(*g, *a, slope).to_f64();
                if self.batch_stats {
                    // dx = (g − Σg/M − (x − mean)·k)·inv_std·γ, k = Σg·(x − mean)·inv_std²/M
                    let grad_mean = sum_g[ch] / count;
                    let k = sum_gx[ch] * inv / count;
                    let mean = self.mean[ch];
                    for ((o, v), ag) in d.iter_mut().zip(xp).zip(ap.iter().zip(gp)) {
                        *o = T::from_f64((g_of(ag) - grad_mean - (v.to_f64() - mean) * k) * scale);
                    }
                } else {
                    for (o, ag) in d.iter_mut().zip(ap.iter().zip(gp)) {
                        *o = T::from_f64(g_of(ag) * scale);
                    }
                }
            });
        for ch in 0..c {
            rest[ch] = T::from_f64(sum_gx[ch]);
            rest[c + ch] = T::from_f64(sum_g[ch]);
        }
        packed
    }
}

impl Kernel3 for Normalize {
    const NAME: &'static str = "batch-norm";

    fn run<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        self.forward(x, gamma, beta)
    }
}

impl CustomOp3 for Normalize {
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
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gamma_values = gamma.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let packed = x.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad.contiguous()?,
            &NormalizeBackward {
                forward: self,
                gamma: gamma_values,
            },
        )?;
        let (size, c) = (x.elem_count(), gamma.elem_count());
        let dx = packed.narrow(0, 0, size)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, size, c)?;
        let dbeta = packed.narrow(0, size + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward of [`Normalize`] over (x, its output, upstream gradient),
/// packed into one flat tensor `[dx, dγ, dβ]`.
struct NormalizeBackward<'a> {
    forward: &'a Normalize,
    /// γ, exactly (f32 and f64 values are f64 values).
    gamma: Vec<f64>,
}

impl Kernel3 for NormalizeBackward<'_> {
    const NAME: &'static str = "batch-norm-backward";

    fn run<T: WithDType>(&self, x: &[T], out: &[T], grad: &[T]) -> Vec<T> {
        self.forward.backward(x, out, grad, &self.gamma)
    }
}

impl CustomOp3 for NormalizeBackward<'_> {
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
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch3(self, (s1, l1), (s2, l2), (s3, l3))?;
        let len = l1.shape().elem_count() + 2 * self.gamma.len();
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::act::leaky_relu;
    use super::super::storage::max_abs_diff as max_diff;
    use super::BatchNorm2d;
    use candle_core::{DType, Device, ModuleT, Tensor, Var};

    /// Against candle-nn's composite BatchNorm in f64: outputs, the three
    /// gradients and the running statistics, in train and eval mode.
    #[test]
    fn matches_candle_nn_batch_norm_forward_backward_and_running_stats() {
        let dev = Device::Cpu;
        for (n, c, h, w) in [(4, 3, 5, 6), (8, 2, 1, 1), (2, 5, 3, 1)] {
            for train in [true, false] {
                let x = Var::rand(-2f64, 3f64, (n, c, h, w), &dev).unwrap();
                let gamma = Var::rand(0f64, 1f64, c, &dev).unwrap();
                let beta = Var::rand(-1f64, 1f64, c, &dev).unwrap();
                let rm0 = Tensor::rand(-1f64, 1f64, c, &dev).unwrap();
                let rv0 = Tensor::rand(0.5f64, 2f64, c, &dev).unwrap();
                let (rm_a, rv_a) = (
                    Var::from_tensor(&rm0).unwrap(),
                    Var::from_tensor(&rv0).unwrap(),
                );
                let (rm_b, rv_b) = (
                    Var::from_tensor(&rm0).unwrap(),
                    Var::from_tensor(&rv0).unwrap(),
                );
                let ours = BatchNorm2d::new(
                    rm_a.as_tensor().clone(),
                    rv_a.as_tensor().clone(),
                    gamma.as_tensor().clone(),
                    beta.as_tensor().clone(),
                    1e-5,
                    0.1,
                )
                .unwrap();
                let theirs = candle_nn::BatchNorm::new_with_momentum(
                    c,
                    rm_b.as_tensor().clone(),
                    rv_b.as_tensor().clone(),
                    gamma.as_tensor().clone(),
                    beta.as_tensor().clone(),
                    1e-5,
                    0.1,
                )
                .unwrap();
                let up = Tensor::rand(-1f64, 1f64, (n, c, h, w), &dev).unwrap();
                let ya = ours.forward_t(x.as_tensor(), train).unwrap();
                let yb = theirs.forward_t(x.as_tensor(), train).unwrap();
                assert!(max_diff(&ya, &yb) < 1e-12, "forward train={train}");
                let ga = (ya * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &gamma, &beta] {
                    let d = max_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                    assert!(d < 1e-11, "gradient of {:?} train={train}: {d}", v.dims());
                }
                assert!(max_diff(rm_a.as_tensor(), rm_b.as_tensor()) < 1e-12);
                assert!(max_diff(rv_a.as_tensor(), rv_b.as_tensor()) < 1e-12);
                if !train {
                    assert!(max_diff(rm_a.as_tensor(), &rm0).abs() == 0.0);
                }
            }
        }
    }

    /// The fused BatchNorm + (leaky) ReLU against the two ops in turn, in
    /// f32 and f64, train and eval mode: outputs, the three gradients and
    /// the running statistics must be equal bit for bit. In train mode the
    /// outputs include exact zeros (a constant channel normalises to β = 0),
    /// where the activation's slope applies.
    #[test]
    fn fused_activation_equals_batch_norm_then_leaky_relu_exactly() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for slope in [0.0, 0.2] {
                for train in [true, false] {
                    let (n, c, h, w) = (3, 4, 5, 2);
                    let x = Tensor::rand(-2f64, 3f64, (n, c, h, w), &dev).unwrap();
                    // Channel 0 constant: its normalised values are exactly β.
                    let mask =
                        Tensor::from_vec(vec![0f64, 1., 1., 1.], (1, c, 1, 1), &dev).unwrap();
                    let x =
                        Var::from_tensor(&x.broadcast_mul(&mask).unwrap().to_dtype(dtype).unwrap())
                            .unwrap();
                    let gamma = Var::rand(0f64, 1f64, c, &dev).unwrap();
                    let gamma = Var::from_tensor(&gamma.to_dtype(dtype).unwrap()).unwrap();
                    let beta = Tensor::from_vec(vec![0f64, 0.1, -0.3, 0.2], c, &dev).unwrap();
                    let beta = Var::from_tensor(&beta.to_dtype(dtype).unwrap()).unwrap();
                    let stats0 = (
                        Tensor::rand(-1f64, 1f64, c, &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                        Tensor::rand(0.5f64, 2f64, c, &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    );
                    let layer = || {
                        let (rm, rv) = (
                            Var::from_tensor(&stats0.0).unwrap(),
                            Var::from_tensor(&stats0.1).unwrap(),
                        );
                        let bn = BatchNorm2d::new(
                            rm.as_tensor().clone(),
                            rv.as_tensor().clone(),
                            gamma.as_tensor().clone(),
                            beta.as_tensor().clone(),
                            1e-5,
                            0.1,
                        )
                        .unwrap();
                        (bn, rm, rv)
                    };
                    let (fused, rm_a, rv_a) = layer();
                    let (plain, rm_b, rv_b) = layer();
                    let up = Tensor::rand(-1f64, 1f64, (n, c, h, w), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let ya = fused
                        .forward_act_t(x.as_tensor(), train, Some(slope))
                        .unwrap();
                    let yb =
                        leaky_relu(&plain.forward_t(x.as_tensor(), train).unwrap(), slope).unwrap();
                    let what = format!("{dtype:?} slope {slope} train {train}");
                    assert_eq!(max_diff(&ya, &yb), 0.0, "forward {what}");
                    let zeros = ya.flatten_all().unwrap().eq(0f64).unwrap();
                    let zeros = zeros.to_dtype(DType::F64).unwrap().sum_all().unwrap();
                    // The constant channel normalises to β = 0 exactly.
                    if train {
                        let count = zeros.to_scalar::<f64>().unwrap();
                        assert!(count > 0.0, "no exact zeros {what}");
                    }
                    let ga = (ya * &up).unwrap().sum_all().unwrap().backward().unwrap();
                    let gb = (yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                    for v in [&x, &gamma, &beta] {
                        let d = max_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                        assert_eq!(d, 0.0, "gradient of {:?} {what}", v.dims());
                    }
                    assert_eq!(max_diff(rm_a.as_tensor(), rm_b.as_tensor()), 0.0);
                    assert_eq!(max_diff(rv_a.as_tensor(), rv_b.as_tensor()), 0.0);
                }
            }
        }
        let ones = |shape: usize| Tensor::ones(shape, DType::F32, &dev).unwrap();
        let bn = BatchNorm2d::new(ones(2), ones(2), ones(2), ones(2), 1e-5, 0.1).unwrap();
        let x = Tensor::ones((2, 2, 1, 1), DType::F32, &dev).unwrap();
        assert!(bn.forward_act_t(&x, true, Some(-0.1)).is_err());
    }

    #[test]
    fn train_mode_needs_more_than_one_value_per_channel() {
        let dev = Device::Cpu;
        let ones = |shape: usize| Tensor::ones(shape, DType::F32, &dev).unwrap();
        let bn = BatchNorm2d::new(ones(2), ones(2), ones(2), ones(2), 1e-5, 0.1).unwrap();
        let x = Tensor::ones((1, 2, 1, 1), DType::F32, &dev).unwrap();
        let err = bn.forward_t(&x, true).unwrap_err().to_string();
        assert!(err.contains("more than 1 value"), "{err}");
        assert!(bn.forward_t(&x, false).is_ok());
        let bad = Tensor::ones((2, 3, 1, 1), DType::F32, &dev).unwrap();
        assert!(bn.forward_t(&bad, true).is_err());
    }
}
