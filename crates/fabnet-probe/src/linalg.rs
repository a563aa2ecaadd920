//! Dense row-major f64 matrices and the few routines the probes need (Gram products, Cholesky solve).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};

/// A dense row-major matrix of f64, shape `(rows, cols)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f64>,
}

impl Matrix {
    /// Wraps `data` (row-major) as a `(rows, cols)` matrix; errors if the length does not match.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ProbeError::Shape(format!(
                "matrix of {rows}x{cols} needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A `(rows, cols)` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Converts a row-major float32 buffer of shape `(rows, cols)`.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        Matrix::new(rows, cols, data.iter().map(|&v| f64::from(v)).collect())
    }

    /// Row `i` as a slice of length `cols`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row `i` as a mutable slice of length `cols`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Element `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// The rows listed in `idx`, in that order, as a new matrix.
    pub fn select_rows(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// The columns listed in `idx`, in that order, as a new matrix.
    pub fn select_cols(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.rows);
        for i in 0..self.rows {
            let r = self.row(i);
            data.extend(idx.iter().map(|&j| r[j]));
        }
        Matrix {
            rows: self.rows,
            cols: idx.len(),
            data,
        }
    }

    /// `self · other`, shapes `(n, m) · (m, p) → (n, p)`.
    pub fn matmul(&self, other: &Matrix) -> Result<Matrix> {
        if self.cols != other.rows {
            return Err(ProbeError::Shape(format!(
                "cannot multiply {}x{} by {}x{}",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let p = other.cols;
        let mut out = Matrix::zeros(self.rows, p);
        out.data
            .par_chunks_mut(p.max(1))
            .enumerate()
            .for_each(|(i, o)| {
                for (k, &a) in self.row(i).iter().enumerate() {
                    if a != 0.0 {
                        for (o, &b) in o.iter_mut().zip(other.row(k)) {
                            *o += a * b;
                        }
                    }
                }
            });
        Ok(out)
    }

    /// `selfᵀ · other`, shapes `(n, m)ᵀ · (n, p) → (m, p)`: the cross-product used for Gram matrices.
    pub fn t_matmul(&self, other: &Matrix) -> Result<Matrix> {
        if self.rows != other.rows {
            return Err(ProbeError::Shape(format!(
                "cannot form AᵀB for A {}x{} and B {}x{}",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let (m, p) = (self.cols, other.cols);
        // Row blocks are summed in parallel, then reduced; the block size keeps the partial sums few.
        let block = 256;
        let partials: Vec<Vec<f64>> = (0..self.rows.div_ceil(block))
            .into_par_iter()
            .map(|b| {
                let mut acc = vec![0.0; m * p];
                for i in b * block..((b + 1) * block).min(self.rows) {
                    let o = other.row(i);
                    for (k, &a) in self.row(i).iter().enumerate() {
                        if a != 0.0 {
                            for (acc, &v) in acc[k * p..(k + 1) * p].iter_mut().zip(o) {
                                *acc += a * v;
                            }
                        }
                    }
                }
                acc
            })
            .collect();
        let mut out = Matrix::zeros(m, p);
        for part in partials {
            for (o, v) in out.data.iter_mut().zip(part) {
                *o += v;
            }
        }
        Ok(out)
    }

    /// The transpose, shape `(cols, rows)`.
    pub fn transpose(&self) -> Matrix {
        let mut out = Matrix::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        out
    }
}

/// Cholesky factor `L` (lower triangular, row-major) of a symmetric positive-definite `(n, n)` matrix.
pub fn cholesky(a: &Matrix) -> Result<Matrix> {
    if a.rows != a.cols {
        return Err(ProbeError::Shape(format!(
            "cholesky needs a square matrix, got {}x{}",
            a.rows, a.cols
        )));
    }
    let n = a.rows;
    let mut l = Matrix::zeros(n, n);
    for j in 0..n {
        let mut d = a.get(j, j);
        for k in 0..j {
            d -= l.get(j, k) * l.get(j, k);
        }
        if d.is_nan() || d <= 0.0 || d.is_infinite() {
            return Err(ProbeError::Numeric(format!(
                "matrix is not positive definite (pivot {j} is {d})"
            )));
        }
        let d = d.sqrt();
        l.data[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a.get(i, j);
            for k in 0..j {
                s -= l.get(i, k) * l.get(j, k);
            }
            l.data[i * n + j] = s / d;
        }
    }
    Ok(l)
}

/// Solves `A X = B` for `X` given the Cholesky factor `L` of `A`; `B` is `(n, p)`, so is `X`.
pub fn cholesky_solve(l: &Matrix, b: &Matrix) -> Result<Matrix> {
    let n = l.rows;
    if b.rows != n {
        return Err(ProbeError::Shape(format!(
            "cholesky solve: factor {n}x{n}, right side {}x{}",
            b.rows, b.cols
        )));
    }
    let p = b.cols;
    let mut x = b.clone();
    for c in 0..p {
        // Forward substitution L y = b, then back substitution Lᵀ x = y, in place on column c.
        for i in 0..n {
            let mut s = x.data[i * p + c];
            for k in 0..i {
                s -= l.get(i, k) * x.data[k * p + c];
            }
            x.data[i * p + c] = s / l.get(i, i);
        }
        for i in (0..n).rev() {
            let mut s = x.data[i * p + c];
            for k in i + 1..n {
                s -= l.get(k, i) * x.data[k * p + c];
            }
            x.data[i * p + c] = s / l.get(i, i);
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solve_matches_hand_solution() {
        // A = [[4, 2], [2, 3]], b = [2, 1]: det 8, A⁻¹ = [[3, -2], [-2, 4]] / 8, x = [4/8, 0/8] = [0.5, 0].
        let a = Matrix::new(2, 2, vec![4.0, 2.0, 2.0, 3.0]).unwrap();
        let l = cholesky(&a).unwrap();
        assert!((l.get(0, 0) - 2.0).abs() < 1e-12 && (l.get(1, 0) - 1.0).abs() < 1e-12);
        assert!((l.get(1, 1) - 2f64.sqrt()).abs() < 1e-12);
        let x = cholesky_solve(&l, &Matrix::new(2, 1, vec![2.0, 1.0]).unwrap()).unwrap();
        assert!((x.data[0] - 0.5).abs() < 1e-12 && x.data[1].abs() < 1e-12);
        let bad = Matrix::new(2, 2, vec![1.0, 2.0, 2.0, 1.0]).unwrap();
        assert!(matches!(cholesky(&bad), Err(ProbeError::Numeric(_))));
    }

    #[test]
    fn t_matmul_equals_transpose_then_matmul() {
        let a = Matrix::new(
            600,
            3,
            (0..1800).map(|v| ((v * 37) % 11) as f64 - 5.0).collect(),
        )
        .unwrap();
        let b = Matrix::new(600, 2, (0..1200).map(|v| ((v * 13) % 7) as f64).collect()).unwrap();
        let fast = a.t_matmul(&b).unwrap();
        let slow = a.transpose().matmul(&b).unwrap();
        assert_eq!(fast.rows, 3);
        for (x, y) in fast.data.iter().zip(&slow.data) {
            assert!((x - y).abs() < 1e-9);
        }
    }
}
