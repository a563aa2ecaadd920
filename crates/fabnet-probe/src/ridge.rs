//! Closed-form ridge regression on standardised features, with λ chosen by k-fold cross-validation on
//! the training rows only. Deterministic: folds come from a seeded permutation.
//!
//! Objective per target column, on features standardised with the training rows' mean and (biased) std:
//! `(1/n) Σ (y − b − x̂·β)² + λ ‖β‖²`, solved by Cholesky as `(X̂ᵀX̂ + nλI) β = X̂ᵀ(y − ȳ)`.
//! The fitted map is stored in raw feature space (`ŷ = x·W + b`), so prediction needs no statistics.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::linalg::{cholesky, cholesky_solve, Matrix};

/// Ridge settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RidgeConfig {
    /// Candidate λ values (see the module docs for the scaling).
    pub lambdas: Vec<f64>,
    /// Number of cross-validation folds (≥ 2).
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for RidgeConfig {
    /// λ from 1e-6 to 1e2 in half-decade steps, 5 folds, seed 0.
    fn default() -> Self {
        RidgeConfig {
            lambdas: (0..=16)
                .map(|i| 10f64.powf(-6.0 + 0.5 * f64::from(i)))
                .collect(),
            folds: 5,
            seed: 0,
        }
    }
}

/// The cross-validation curve of one group of target columns that share their known rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RidgeCv {
    /// The target columns of this group.
    pub columns: Vec<usize>,
    /// `(λ, mean held-out squared error per target value)` for every candidate.
    pub curve: Vec<(f64, f64)>,
    /// The chosen λ (lowest error; ties go to the larger λ).
    pub lambda: f64,
}

/// A fitted ridge probe: `ŷ = x·W + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RidgeProbe {
    /// `(D, K)` weights in raw feature space.
    pub weights: Matrix,
    /// `(K,)` intercepts.
    pub intercept: Vec<f64>,
    /// One cross-validation record per group of columns.
    pub cv: Vec<RidgeCv>,
}

/// Sufficient statistics of a block of rows: count, feature sums, Gram matrix, cross-products.
struct Stats {
    n: f64,
    sx: Vec<f64>,
    sy: Vec<f64>,
    gram: Matrix,
    xy: Matrix,
}

impl Stats {
    fn of(x: &Matrix, y: &Matrix) -> Result<Stats> {
        let mut sx = vec![0.0; x.cols];
        let mut sy = vec![0.0; y.cols];
        for i in 0..x.rows {
            sx.iter_mut().zip(x.row(i)).for_each(|(s, v)| *s += v);
            sy.iter_mut().zip(y.row(i)).for_each(|(s, v)| *s += v);
        }
        Ok(Stats {
            n: x.rows as f64,
            sx,
            sy,
            gram: x.t_matmul(x)?,
            xy: x.t_matmul(y)?,
        })
    }

    fn minus(&self, o: &Stats) -> Stats {
        let sub = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a - b).collect::<Vec<_>>();
        Stats {
            n: self.n - o.n,
            sx: sub(&self.sx, &o.sx),
            sy: sub(&self.sy, &o.sy),
            gram: Matrix {
                data: sub(&self.gram.data, &o.gram.data),
                ..self.gram.clone()
            },
            xy: Matrix {
                data: sub(&self.xy.data, &o.xy.data),
                ..self.xy.clone()
            },
        }
    }

    /// Solves the standardised ridge system and maps the solution back to raw space: `(W, b)`.
    fn solve(&self, lambda: f64) -> Result<(Matrix, Vec<f64>)> {
        let d = self.sx.len();
        let k = self.sy.len();
        let n = self.n;
        let mu: Vec<f64> = self.sx.iter().map(|s| s / n).collect();
        let ybar: Vec<f64> = self.sy.iter().map(|s| s / n).collect();
        // A constant feature has zero spread; scaling it by 1 keeps it harmlessly at zero after centring.
        let sd: Vec<f64> = (0..d)
            .map(|j| {
                let v = (self.gram.get(j, j) - n * mu[j] * mu[j]) / n;
                if v > 1e-12 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let mut a = Matrix::zeros(d, d);
        for i in 0..d {
            for j in 0..d {
                a.data[i * d + j] = (self.gram.get(i, j) - n * mu[i] * mu[j]) / (sd[i] * sd[j]);
            }
            a.data[i * d + i] += n * lambda;
        }
        let mut rhs = Matrix::zeros(d, k);
        for (i, (&m, &s)) in mu.iter().zip(&sd).enumerate() {
            for (c, &yb) in ybar.iter().enumerate() {
                rhs.data[i * k + c] = (self.xy.get(i, c) - n * m * yb) / s;
            }
        }
        let beta = cholesky_solve(&cholesky(&a)?, &rhs)?;
        let mut w = beta;
        for (i, &s) in sd.iter().enumerate() {
            w.row_mut(i).iter_mut().for_each(|v| *v /= s);
        }
        let b = (0..k)
            .map(|c| ybar[c] - (0..d).map(|i| mu[i] * w.get(i, c)).sum::<f64>())
            .collect();
        Ok((w, b))
    }
}

fn predict_raw(x: &Matrix, w: &Matrix, b: &[f64]) -> Result<Matrix> {
    let mut out = x.matmul(w)?;
    for i in 0..out.rows {
        out.row_mut(i).iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    Ok(out)
}

impl RidgeProbe {
    /// Fits `x` `(N, D)` to `y` `(N, K)`. NaN targets are unknown: columns are grouped by their set of
    /// known rows and each group is cross-validated and solved on those rows only.
    pub fn fit(x: &Matrix, y: &Matrix, cfg: &RidgeConfig) -> Result<RidgeProbe> {
        if x.rows != y.rows {
            return Err(ProbeError::Shape(format!(
                "{} feature rows for {} target rows",
                x.rows, y.rows
            )));
        }
        if cfg.folds < 2
            || cfg.lambdas.is_empty()
            || cfg.lambdas.iter().any(|l| !(l.is_finite() && *l > 0.0))
        {
            return Err(ProbeError::Invalid(format!(
                "ridge needs >= 2 folds and positive finite lambdas, got {} folds and {:?}",
                cfg.folds, cfg.lambdas
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
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for c in 0..y.cols {
            let rows: Vec<usize> = (0..y.rows).filter(|&i| !y.get(i, c).is_nan()).collect();
            match groups.iter_mut().find(|(r, _)| *r == rows) {
                Some((_, cols)) => cols.push(c),
                None => groups.push((rows, vec![c])),
            }
        }
        let mut weights = Matrix::zeros(x.cols, y.cols);
        let mut intercept = vec![0.0; y.cols];
        let mut cv = Vec::new();
        for (rows, cols) in groups {
            let xs = x.select_rows(&rows);
            let ys = y.select_rows(&rows).select_cols(&cols);
            let (lambda, curve) = cross_validate(&xs, &ys, cfg)?;
            let (w, b) = Stats::of(&xs, &ys)?.solve(lambda)?;
            for (gc, &c) in cols.iter().enumerate() {
                for i in 0..x.cols {
                    weights.data[i * y.cols + c] = w.get(i, gc);
                }
                intercept[c] = b[gc];
            }
            tracing::debug!(?cols, lambda, "ridge: lambda chosen by cross-validation");
            cv.push(RidgeCv {
                columns: cols,
                curve,
                lambda,
            });
        }
        Ok(RidgeProbe {
            weights,
            intercept,
            cv,
        })
    }

    /// Predictions `(N, K)` for features `(N, D)`.
    pub fn predict(&self, x: &Matrix) -> Result<Matrix> {
        predict_raw(x, &self.weights, &self.intercept)
    }
}

/// The rows of each fold: a seeded permutation dealt round-robin, each fold sorted.
fn fold_indices(n: usize, folds: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    (0..folds)
        .map(|f| {
            let mut idx: Vec<usize> = perm.iter().skip(f).step_by(folds).copied().collect();
            idx.sort_unstable();
            idx
        })
        .collect()
}

/// Returns the chosen λ and the curve of mean held-out squared error.
fn cross_validate(x: &Matrix, y: &Matrix, cfg: &RidgeConfig) -> Result<(f64, Vec<(f64, f64)>)> {
    let n = x.rows;
    if n < 2 * cfg.folds {
        return Err(ProbeError::Invalid(format!(
            "ridge cross-validation needs at least {} labelled rows for {} folds, got {n}",
            2 * cfg.folds,
            cfg.folds
        )));
    }
    let folds = fold_indices(n, cfg.folds, cfg.seed);
    let fold_data: Vec<(Matrix, Matrix)> = folds
        .iter()
        .map(|idx| (x.select_rows(idx), y.select_rows(idx)))
        .collect();
    let fold_stats = fold_data
        .iter()
        .map(|(fx, fy)| Stats::of(fx, fy))
        .collect::<Result<Vec<_>>>()?;
    let total = Stats::of(x, y)?;
    let mut sse = vec![0.0; cfg.lambdas.len()];
    for ((fx, fy), fs) in fold_data.iter().zip(&fold_stats) {
        let train = total.minus(fs);
        for (l, &lambda) in cfg.lambdas.iter().enumerate() {
            let (w, b) = train.solve(lambda)?;
            let pred = predict_raw(fx, &w, &b)?;
            sse[l] += pred
                .data
                .iter()
                .zip(&fy.data)
                .map(|(p, t)| (p - t).powi(2))
                .sum::<f64>();
        }
    }
    let count = (n * y.cols) as f64;
    let curve: Vec<(f64, f64)> = cfg
        .lambdas
        .iter()
        .zip(&sse)
        .map(|(&l, &s)| (l, s / count))
        .collect();
    let mut best = curve[0];
    for &(l, e) in &curve[1..] {
        if e < best.1 || (e == best.1 && l > best.0) {
            best = (l, e);
        }
    }
    Ok((best.0, curve))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::normal;

    fn planted(n: usize, d: usize, k: usize, noise: f64, seed: u64) -> (Matrix, Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = Matrix::new(d, k, (0..d * k).map(|_| normal(&mut rng)).collect()).unwrap();
        // Features with different scales and offsets, so standardisation matters.
        let x = Matrix::new(
            n,
            d,
            (0..n * d)
                .map(|i| 3.0 + (1.0 + (i % d) as f64) * normal(&mut rng))
                .collect(),
        )
        .unwrap();
        let mut y = x.matmul(&w).unwrap();
        y.data
            .iter_mut()
            .for_each(|v| *v += 0.5 + noise * normal(&mut rng));
        (x, y, w)
    }

    #[test]
    fn recovers_planted_map_and_picks_small_lambda() {
        let (x, y, w) = planted(400, 8, 3, 0.1, 1);
        let probe = RidgeProbe::fit(&x, &y, &RidgeConfig::default()).unwrap();
        for (a, b) in probe.weights.data.iter().zip(&w.data) {
            assert!((a - b).abs() < 0.02, "weight {a} vs planted {b}");
        }
        for b in &probe.intercept {
            assert!((b - 0.5).abs() < 0.1, "intercept {b}");
        }
        // Plenty of data and little noise: the chosen penalty must be small, and the CV error near the
        // noise variance (0.01).
        let cv = &probe.cv[0];
        assert!(cv.lambda <= 1e-3, "lambda {}", cv.lambda);
        let best = cv.curve.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        assert!(best < 0.013 && best > 0.007, "cv mse {best}");
        // Deterministic: a second fit is identical.
        assert_eq!(
            RidgeProbe::fit(&x, &y, &RidgeConfig::default()).unwrap(),
            probe
        );
    }

    #[test]
    fn solve_matches_explicit_standardisation() {
        let (x, y, _) = planted(50, 3, 2, 0.3, 5);
        let lambda = 0.3;
        let (w, b) = Stats::of(&x, &y).unwrap().solve(lambda).unwrap();
        // Direct route: standardise explicitly, solve (X̂ᵀX̂ + nλI) β = X̂ᵀ(y − ȳ), map back.
        let n = 50.0;
        let mu: Vec<f64> = (0..3)
            .map(|j| (0..50).map(|i| x.get(i, j)).sum::<f64>() / n)
            .collect();
        let sd: Vec<f64> = (0..3)
            .map(|j| ((0..50).map(|i| (x.get(i, j) - mu[j]).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        let ybar: Vec<f64> = (0..2)
            .map(|c| (0..50).map(|i| y.get(i, c)).sum::<f64>() / n)
            .collect();
        let xs = Matrix::new(
            50,
            3,
            (0..150)
                .map(|k| (x.data[k] - mu[k % 3]) / sd[k % 3])
                .collect(),
        )
        .unwrap();
        let yc = Matrix::new(50, 2, (0..100).map(|k| y.data[k] - ybar[k % 2]).collect()).unwrap();
        let mut a = xs.t_matmul(&xs).unwrap();
        for j in 0..3 {
            a.data[j * 3 + j] += n * lambda;
        }
        let beta = cholesky_solve(&cholesky(&a).unwrap(), &xs.t_matmul(&yc).unwrap()).unwrap();
        for (j, s) in sd.iter().enumerate() {
            for c in 0..2 {
                let want = beta.get(j, c) / s;
                assert!(
                    (w.get(j, c) - want).abs() < 1e-9,
                    "w[{j},{c}] {} vs {want}",
                    w.get(j, c)
                );
            }
        }
        for c in 0..2 {
            let want = ybar[c] - (0..3).map(|j| mu[j] * w.get(j, c)).sum::<f64>();
            assert!((b[c] - want).abs() < 1e-9);
        }
    }

    #[test]
    fn cv_curve_matches_refitting_each_fold() {
        let (x, y, _) = planted(60, 4, 2, 1.0, 6);
        let cfg = RidgeConfig {
            lambdas: vec![1e-3, 0.1, 10.0],
            folds: 3,
            seed: 9,
        };
        let (chosen, curve) = cross_validate(&x, &y, &cfg).unwrap();
        let folds = fold_indices(60, 3, 9);
        let mut seen: Vec<usize> = folds.concat();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..60).collect::<Vec<_>>(),
            "folds partition the rows"
        );
        for (l, &lambda) in cfg.lambdas.iter().enumerate() {
            let mut sse = 0.0;
            for held in &folds {
                let train: Vec<usize> = (0..60).filter(|i| !held.contains(i)).collect();
                let (w, b) = Stats::of(&x.select_rows(&train), &y.select_rows(&train))
                    .unwrap()
                    .solve(lambda)
                    .unwrap();
                let pred = predict_raw(&x.select_rows(held), &w, &b).unwrap();
                sse += pred
                    .data
                    .iter()
                    .zip(&y.select_rows(held).data)
                    .map(|(p, t)| (p - t).powi(2))
                    .sum::<f64>();
            }
            assert!(
                (curve[l].1 - sse / 120.0).abs() < 1e-9,
                "lambda {lambda}: {} vs {}",
                curve[l].1,
                sse / 120.0
            );
        }
        let best = curve.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(chosen, best.0);
    }

    #[test]
    fn pure_noise_targets_choose_a_large_lambda() {
        let (x, _, _) = planted(200, 20, 1, 0.0, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let y = Matrix::new(200, 1, (0..200).map(|_| normal(&mut rng)).collect()).unwrap();
        let probe = RidgeProbe::fit(&x, &y, &RidgeConfig::default()).unwrap();
        assert!(probe.cv[0].lambda >= 1.0, "lambda {}", probe.cv[0].lambda);
    }

    #[test]
    fn nan_targets_are_fitted_on_known_rows_only() {
        let (x, mut y, w) = planted(300, 4, 2, 0.05, 4);
        // Column 1 loses a third of its rows, replaced by NaN: its fit must still recover the map.
        for i in (0..300).step_by(3) {
            y.data[i * 2 + 1] = f64::NAN;
        }
        let probe = RidgeProbe::fit(&x, &y, &RidgeConfig::default()).unwrap();
        assert_eq!(probe.cv.len(), 2);
        for i in 0..4 {
            for c in 0..2 {
                assert!((probe.weights.get(i, c) - w.get(i, c)).abs() < 0.02);
            }
        }
        assert!(probe
            .predict(&x)
            .unwrap()
            .data
            .iter()
            .all(|v| v.is_finite()));
    }
}
