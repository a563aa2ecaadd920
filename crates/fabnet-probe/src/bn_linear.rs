//! The paper's probe (§5): BatchNorm1d(D) → Linear(D→K, no bias) on frozen embeddings, trained
//! full-batch with Adam and early stopping on a seeded validation split carved from the training rows.
//!
//! Written with hand-derived gradients in f64. The embeddings are constants, so in training mode the
//! batch statistics are constants too and the normalised inputs `x̂` are computed once; only γ, β and W
//! receive gradients (checked against central finite differences in the tests):
//! `y = x̂·γ + β`, `z = y Wᵀ`, `∂W = ∂zᵀ y`, `∂y = ∂z W`, `∂γ = Σᵢ ∂y ⊙ x̂`, `∂β = Σᵢ ∂y`.
//! PyTorch's semantics are mirrored: training normalises with the biased batch variance; the running
//! statistics (momentum 0.1, unbiased variance) are updated once per step and used in eval mode, which is
//! how validation loss and predictions are computed.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::linalg::Matrix;

/// The training loss, averaged over the known (non-NaN) target entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeLoss {
    /// Mean squared error (landmarks, pose).
    Mse,
    /// Binary cross-entropy on logits, one sigmoid per output (action units).
    BceWithLogits,
}

/// How BatchNorm's γ starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GammaInit {
    /// γ = 1 (PyTorch ≥ 1.2).
    Ones,
    /// γ ~ U(0, 1) (PyTorch 0.4, which the paper used).
    Uniform01,
}

/// Settings of the BN→Linear probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BnLinearConfig {
    /// The loss.
    pub loss: ProbeLoss,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam (β1, β2).
    pub betas: (f64, f64),
    /// Adam ε.
    pub adam_eps: f64,
    /// L2 penalty added to the gradient of every parameter (PyTorch Adam's `weight_decay`).
    pub weight_decay: f64,
    /// Maximum number of full-batch steps.
    pub max_steps: usize,
    /// Stop after this many steps without a lower validation loss.
    pub patience: usize,
    /// Fraction of the training rows held out for early stopping (0 disables early stopping).
    pub val_fraction: f64,
    /// Seed of the validation split and of the initialisation.
    pub seed: u64,
    /// BatchNorm ε.
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum.
    pub bn_momentum: f64,
    /// BatchNorm γ initialisation.
    pub gamma_init: GammaInit,
}

impl BnLinearConfig {
    /// Defaults for `loss`: Adam lr 1e-2, up to 3000 steps, patience 100, 10 % validation, seed 0,
    /// BN ε 1e-5 and momentum 0.1, γ ~ U(0, 1).
    pub fn new(loss: ProbeLoss) -> Self {
        BnLinearConfig {
            loss,
            lr: 1e-2,
            betas: (0.9, 0.999),
            adam_eps: 1e-8,
            weight_decay: 0.0,
            max_steps: 3000,
            patience: 100,
            val_fraction: 0.1,
            seed: 0,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            gamma_init: GammaInit::Uniform01,
        }
    }
}

/// A BatchNorm1d → Linear (no bias) probe; the field names follow the released probes'
/// `0.weight, 0.bias, 0.running_mean, 0.running_var, 1.weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BnLinearProbe {
    /// BN scale γ, `(D,)`.
    pub gamma: Vec<f64>,
    /// BN shift β, `(D,)`.
    pub beta: Vec<f64>,
    /// BN running mean, `(D,)`.
    pub running_mean: Vec<f64>,
    /// BN running variance, `(D,)`.
    pub running_var: Vec<f64>,
    /// BN ε.
    pub eps: f64,
    /// Linear weight, `(K, D)`.
    pub weight: Matrix,
}

/// What happened during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BnLinearFit {
    /// Training rows used for the gradient.
    pub n_train: usize,
    /// Rows held out for early stopping.
    pub n_val: usize,
    /// Steps taken.
    pub steps: usize,
    /// The step whose parameters were kept (1-based; the last one without a validation split).
    pub best_step: usize,
    /// Validation loss at `best_step` (eval mode); `None` without a validation split.
    pub best_val_loss: Option<f64>,
    /// Training loss (training mode) at the last step.
    pub final_train_loss: f64,
}

/// Loss and gradients for the probe in training mode: returns `(loss, ∂γ, ∂β, ∂W)`.
/// `xhat` `(N, D)` is the batch-normalised input, `y` `(N, K)` the targets (NaN = unknown).
pub(crate) fn train_loss_grad(
    xhat: &Matrix,
    y: &Matrix,
    gamma: &[f64],
    beta: &[f64],
    w: &Matrix,
    loss: ProbeLoss,
) -> (f64, Vec<f64>, Vec<f64>, Matrix) {
    let (d, k) = (xhat.cols, w.rows);
    let count = y.data.iter().filter(|v| !v.is_nan()).count().max(1) as f64;
    let zero = || (0.0, vec![0.0; d], vec![0.0; d], vec![0.0; k * d]);
    let (l, dg, db, dw) = (0..xhat.rows)
        .into_par_iter()
        .fold(zero, |(mut l, mut dg, mut db, mut dw), i| {
            let xr = xhat.row(i);
            let yr: Vec<f64> = xr
                .iter()
                .zip(gamma)
                .zip(beta)
                .map(|((x, g), b)| x * g + b)
                .collect();
            let t = y.row(i);
            let mut dz = vec![0.0; k];
            for c in 0..k {
                if t[c].is_nan() {
                    continue;
                }
                let z: f64 = w.row(c).iter().zip(&yr).map(|(a, b)| a * b).sum();
                let (li, gi) = elementwise_loss(z, t[c], loss);
                l += li / count;
                dz[c] = gi / count;
            }
            let mut dy = vec![0.0; d];
            for (c, &g) in dz.iter().enumerate() {
                if g == 0.0 {
                    continue;
                }
                let wr = w.row(c);
                for j in 0..d {
                    dw[c * d + j] += g * yr[j];
                    dy[j] += g * wr[j];
                }
            }
            for j in 0..d {
                dg[j] += dy[j] * xr[j];
                db[j] += dy[j];
            }
            (l, dg, db, dw)
        })
        .reduce(zero, |a, b| {
            let add = |u: Vec<f64>, v: Vec<f64>| {
                u.into_iter().zip(v).map(|(p, q)| p + q).collect::<Vec<_>>()
            };
            (a.0 + b.0, add(a.1, b.1), add(a.2, b.2), add(a.3, b.3))
        });
    (
        l,
        dg,
        db,
        Matrix {
            rows: k,
            cols: d,
            data: dw,
        },
    )
}

/// Loss of one prediction `z` against target `t` and its derivative in `z`.
fn elementwise_loss(z: f64, t: f64, loss: ProbeLoss) -> (f64, f64) {
    match loss {
        ProbeLoss::Mse => ((z - t).powi(2), 2.0 * (z - t)),
        ProbeLoss::BceWithLogits => {
            // softplus(z) − t·z, written to stay finite for large |z|.
            let l = z.max(0.0) - t * z + (-z.abs()).exp().ln_1p();
            let s = 1.0 / (1.0 + (-z).exp());
            (l, s - t)
        }
    }
}

/// Mean loss of `(N, K)` predictions against targets, NaN targets skipped.
fn mean_loss(z: &Matrix, y: &Matrix, loss: ProbeLoss) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for (z, t) in z.data.iter().zip(&y.data) {
        if !t.is_nan() {
            s += elementwise_loss(*z, *t, loss).0;
            n += 1;
        }
    }
    s / n.max(1) as f64
}

struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    fn step(&mut self, p: &mut [f64], g: &[f64], cfg: &BnLinearConfig) {
        let (b1, b2) = cfg.betas;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for i in 0..p.len() {
            let gi = g[i] + cfg.weight_decay * p[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * gi;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * gi * gi;
            p[i] -= cfg.lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + cfg.adam_eps);
        }
    }
}

impl BnLinearProbe {
    /// A freshly initialised `(D → K)` probe, as PyTorch would make it: γ by `cfg.gamma_init`, β = 0,
    /// running mean 0 and variance 1, W ~ U(±1/√D); seeded by `cfg.seed`.
    pub fn init(d: usize, k: usize, cfg: &BnLinearConfig) -> BnLinearProbe {
        // A stream separate from the validation split's, so changing one does not move the other.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_1a17);
        let bound = 1.0 / (d.max(1) as f64).sqrt();
        BnLinearProbe {
            gamma: (0..d)
                .map(|_| match cfg.gamma_init {
                    GammaInit::Ones => 1.0,
                    GammaInit::Uniform01 => rng.random::<f64>(),
                })
                .collect(),
            beta: vec![0.0; d],
            running_mean: vec![0.0; d],
            running_var: vec![1.0; d],
            eps: cfg.bn_eps,
            weight: Matrix {
                rows: k,
                cols: d,
                data: (0..k * d)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect(),
            },
        }
    }

    /// Trains a freshly initialised probe ([`BnLinearProbe::init`]) on features `x` `(N, D)` and
    /// targets `y` `(N, K)` (NaN = unknown, skipped).
    pub fn fit(
        x: &Matrix,
        y: &Matrix,
        cfg: &BnLinearConfig,
    ) -> Result<(BnLinearProbe, BnLinearFit)> {
        Self::fit_from(Self::init(x.cols, y.cols, cfg), x, y, cfg)
    }

    /// Trains starting from `init` (e.g. a released probe, or fixed values for a parity test).
    pub fn fit_from(
        init: BnLinearProbe,
        x: &Matrix,
        y: &Matrix,
        cfg: &BnLinearConfig,
    ) -> Result<(BnLinearProbe, BnLinearFit)> {
        if x.rows != y.rows {
            return Err(ProbeError::Shape(format!(
                "{} feature rows for {} target rows",
                x.rows, y.rows
            )));
        }
        if !(0.0..1.0).contains(&cfg.val_fraction)
            || cfg.lr.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || cfg.max_steps == 0
        {
            return Err(ProbeError::Invalid(format!(
                "probe needs 0 <= val_fraction < 1, lr > 0 and max_steps > 0, got {}, {}, {}",
                cfg.val_fraction, cfg.lr, cfg.max_steps
            )));
        }
        if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
            return Err(ProbeError::Numeric(format!(
                "feature ({}, {}) is {}",
                i / x.cols,
                i % x.cols,
                x.data[i]
            )));
        }
        let (d, k) = (x.cols, y.cols);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut perm: Vec<usize> = (0..x.rows).collect();
        perm.shuffle(&mut rng);
        let n_val = if cfg.val_fraction > 0.0 {
            ((x.rows as f64 * cfg.val_fraction).round() as usize).max(1)
        } else {
            0
        };
        let (val_idx, train_idx) = perm.split_at(n_val);
        let (mut val_idx, mut train_idx) = (val_idx.to_vec(), train_idx.to_vec());
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        if train_idx.len() < 2 {
            return Err(ProbeError::Invalid(format!(
                "probe needs at least 2 training rows after the validation split, got {}",
                train_idx.len()
            )));
        }
        let (xt, yt) = (x.select_rows(&train_idx), y.select_rows(&train_idx));
        let (xv, yv) = (x.select_rows(&val_idx), y.select_rows(&val_idx));

        let n = xt.rows as f64;
        let mut mean = vec![0.0; d];
        for i in 0..xt.rows {
            mean.iter_mut()
                .zip(xt.row(i))
                .for_each(|(m, v)| *m += v / n);
        }
        let mut var = vec![0.0; d];
        for i in 0..xt.rows {
            var.iter_mut()
                .zip(xt.row(i))
                .zip(&mean)
                .for_each(|((s, v), m)| *s += (v - m) * (v - m) / n);
        }
        let mut xhat = xt.clone();
        for i in 0..xhat.rows {
            for (j, v) in xhat.row_mut(i).iter_mut().enumerate() {
                *v = (*v - mean[j]) / (var[j] + cfg.bn_eps).sqrt();
            }
        }
        let unbiased: Vec<f64> = var.iter().map(|v| v * n / (n - 1.0)).collect();

        let lens = [
            init.gamma.len(),
            init.beta.len(),
            init.running_mean.len(),
            init.running_var.len(),
        ];
        if lens.iter().any(|&l| l != d) || init.weight.rows != k || init.weight.cols != d {
            return Err(ProbeError::Shape(format!(
                "initial probe is {}-d with a ({}, {}) weight, data is {d}-d with {k} targets",
                init.gamma.len(),
                init.weight.rows,
                init.weight.cols
            )));
        }
        let mut probe = BnLinearProbe {
            eps: cfg.bn_eps,
            ..init
        };
        let new_adam = |len: usize| Adam {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        };
        let (mut ag, mut ab, mut aw) = (new_adam(d), new_adam(d), new_adam(k * d));
        let mut best: Option<(f64, usize, BnLinearProbe)> = None;
        let mut last_loss = f64::NAN;
        let mut steps = 0;
        for step in 1..=cfg.max_steps {
            steps = step;
            let (l, dg, db, dw) = train_loss_grad(
                &xhat,
                &yt,
                &probe.gamma,
                &probe.beta,
                &probe.weight,
                cfg.loss,
            );
            if !l.is_finite() {
                return Err(ProbeError::Numeric(format!(
                    "probe training loss is {l} at step {step}"
                )));
            }
            last_loss = l;
            let m = cfg.bn_momentum;
            for j in 0..d {
                probe.running_mean[j] = (1.0 - m) * probe.running_mean[j] + m * mean[j];
                probe.running_var[j] = (1.0 - m) * probe.running_var[j] + m * unbiased[j];
            }
            for a in [&mut ag, &mut ab, &mut aw] {
                a.t += 1;
            }
            ag.step(&mut probe.gamma, &dg, cfg);
            ab.step(&mut probe.beta, &db, cfg);
            aw.step(&mut probe.weight.data, &dw.data, cfg);
            if step % 500 == 0 {
                tracing::info!(step, train_loss = l, "bn-linear probe training");
            }
            if n_val == 0 {
                continue;
            }
            let vl = mean_loss(&probe.predict(&xv)?, &yv, cfg.loss);
            match &best {
                Some((b, _, _)) if vl >= *b => {}
                _ => best = Some((vl, step, probe.clone())),
            }
            if let Some((_, bs, _)) = &best {
                if step - bs >= cfg.patience {
                    break;
                }
            }
        }
        let (best_val_loss, best_step) = match best {
            Some((vl, bs, p)) => {
                probe = p;
                (Some(vl), bs)
            }
            None => (None, steps),
        };
        tracing::debug!(steps, best_step, ?best_val_loss, "bn-linear probe trained");
        Ok((
            probe,
            BnLinearFit {
                n_train: train_idx.len(),
                n_val,
                steps,
                best_step,
                best_val_loss,
                final_train_loss: last_loss,
            },
        ))
    }

    /// Eval-mode outputs `(N, K)` for features `(N, D)`: regression values, or logits for
    /// [`ProbeLoss::BceWithLogits`].
    pub fn predict(&self, x: &Matrix) -> Result<Matrix> {
        let d = self.gamma.len();
        if x.cols != d || self.weight.cols != d {
            return Err(ProbeError::Shape(format!(
                "probe expects {d}-d features and a (K, {d}) weight, got {}-d and ({}, {})",
                x.cols, self.weight.rows, self.weight.cols
            )));
        }
        let scale: Vec<f64> = (0..d)
            .map(|j| self.gamma[j] / (self.running_var[j] + self.eps).sqrt())
            .collect();
        let k = self.weight.rows;
        let mut out = Matrix::zeros(x.rows, k);
        out.data
            .par_chunks_mut(k.max(1))
            .enumerate()
            .for_each(|(i, o)| {
                let yr: Vec<f64> = x
                    .row(i)
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (v - self.running_mean[j]) * scale[j] + self.beta[j])
                    .collect();
                for (c, o) in o.iter_mut().enumerate() {
                    *o = self.weight.row(c).iter().zip(&yr).map(|(a, b)| a * b).sum();
                }
            });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::normal;

    fn random(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Matrix {
        Matrix::new(rows, cols, (0..rows * cols).map(|_| normal(rng)).collect()).unwrap()
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, d, k) = (9, 5, 3);
        let xhat = random(n, d, &mut rng);
        let gamma: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let beta: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let w = random(k, d, &mut rng);
        for loss in [ProbeLoss::Mse, ProbeLoss::BceWithLogits] {
            let mut y = random(n, k, &mut rng);
            if loss == ProbeLoss::BceWithLogits {
                y.data
                    .iter_mut()
                    .for_each(|v| *v = if *v > 0.0 { 1.0 } else { 0.0 });
            }
            y.data[4] = f64::NAN;
            let (_, dg, db, dw) = train_loss_grad(&xhat, &y, &gamma, &beta, &w, loss);
            let h = 1e-6;
            let f = |g: &[f64], b: &[f64], w: &Matrix| train_loss_grad(&xhat, &y, g, b, w, loss).0;
            let check = |num: f64, ana: f64| {
                assert!(
                    (num - ana).abs() <= 1e-7 * (1.0 + ana.abs()),
                    "{loss:?}: numeric {num} vs analytic {ana}"
                );
            };
            for j in 0..d {
                let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
                gp[j] += h;
                gm[j] -= h;
                check((f(&gp, &beta, &w) - f(&gm, &beta, &w)) / (2.0 * h), dg[j]);
                let (mut bp, mut bm) = (beta.clone(), beta.clone());
                bp[j] += h;
                bm[j] -= h;
                check((f(&gamma, &bp, &w) - f(&gamma, &bm, &w)) / (2.0 * h), db[j]);
            }
            for i in 0..k * d {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp.data[i] += h;
                wm.data[i] -= h;
                check(
                    (f(&gamma, &beta, &wp) - f(&gamma, &beta, &wm)) / (2.0 * h),
                    dw.data[i],
                );
            }
        }
    }

    #[test]
    fn learns_a_planted_linear_map() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (n, d, k) = (600, 16, 4);
        let mut x = random(n, d, &mut rng);
        x.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 2.0 + *v * (1 + i % 3) as f64);
        let w = random(d, k, &mut rng);
        let mut y = x.matmul(&w).unwrap();
        y.data
            .iter_mut()
            .for_each(|v| *v = 0.1 * (*v - 2.0) + 0.01 * normal(&mut rng));
        let (xtr, ytr) = (
            x.select_rows(&(0..500).collect::<Vec<_>>()),
            y.select_rows(&(0..500).collect::<Vec<_>>()),
        );
        let test: Vec<usize> = (500..600).collect();
        let (probe, fit) =
            BnLinearProbe::fit(&xtr, &ytr, &BnLinearConfig::new(ProbeLoss::Mse)).unwrap();
        let pred = probe.predict(&x.select_rows(&test)).unwrap();
        let mse = mean_loss(&pred, &y.select_rows(&test), ProbeLoss::Mse);
        let var = {
            let t = y.select_rows(&test);
            let m = t.data.iter().sum::<f64>() / t.data.len() as f64;
            t.data.iter().map(|v| (v - m).powi(2)).sum::<f64>() / t.data.len() as f64
        };
        // The noise variance is 1e-4 against a target variance of order 0.1: a good fit is near 1e-4.
        assert!(
            mse < 5e-4,
            "test mse {mse} (target variance {var}), fit {fit:?}"
        );
        assert_eq!((fit.n_train, fit.n_val), (450, 50));
        assert!(fit.best_step <= fit.steps);
    }

    #[test]
    fn logistic_outputs_separate_planted_classes() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (n, d) = (400, 8);
        let x = random(n, d, &mut rng);
        let w = random(d, 2, &mut rng);
        let z = x.matmul(&w).unwrap();
        let mut y = Matrix::new(
            n,
            2,
            z.data
                .iter()
                .map(|v| f64::from(u8::from(*v > 0.0)))
                .collect(),
        )
        .unwrap();
        y.data[0] = f64::NAN;
        let cfg = BnLinearConfig::new(ProbeLoss::BceWithLogits);
        let tr: Vec<usize> = (0..300).collect();
        let te: Vec<usize> = (300..400).collect();
        let (probe, _) =
            BnLinearProbe::fit(&x.select_rows(&tr), &y.select_rows(&tr), &cfg).unwrap();
        let s = probe.predict(&x.select_rows(&te)).unwrap();
        let auc =
            crate::metrics::au_auc(&s, &y.select_rows(&te), &["a".into(), "b".into()]).unwrap();
        assert!(auc.mean_auc.unwrap() > 0.97, "{auc:?}");
    }
}
