//! PCA: exact eigenpairs of the covariance, orthonormal components in
//! decreasing variance, and recovery of a planted low-dimensional subspace.

use fabnet_probe::pca::symmetric_eigen;
use fabnet_probe::{Matrix, Pca};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// N points in D dims: 3 latent factors with standard deviations 5, 3 and 2
/// along random directions, plus isotropic noise of 0.1, plus an offset.
fn planted(n: usize, d: usize, seed: u64) -> (Matrix, Vec<Vec<f64>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let directions: Vec<Vec<f64>> = (0..3)
        .map(|_| (0..d).map(|_| rng.random::<f64>() - 0.5).collect())
        .collect();
    let scales = [5.0, 3.0, 2.0];
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = scales
            .iter()
            .map(|s| s * (rng.random::<f64>() - 0.5) * 12f64.sqrt())
            .collect();
        for j in 0..d {
            let noise = 0.1 * (rng.random::<f64>() - 0.5) * 12f64.sqrt();
            let signal: f64 = z.iter().zip(&directions).map(|(zf, dir)| zf * dir[j]).sum();
            data.push(7.0 + noise + signal);
        }
    }
    (Matrix::new(n, d, data).unwrap(), directions)
}

fn covariance(x: &Matrix) -> Matrix {
    let n = x.rows as f64;
    let mut mean = vec![0.0; x.cols];
    for i in 0..x.rows {
        for (m, v) in mean.iter_mut().zip(x.row(i)) {
            *m += v / n;
        }
    }
    let mut c = x.clone();
    for i in 0..c.rows {
        for (v, m) in c.row_mut(i).iter_mut().zip(&mean) {
            *v -= m;
        }
    }
    let mut cov = c.t_matmul(&c).unwrap();
    for v in &mut cov.data {
        *v /= n - 1.0;
    }
    cov
}

#[test]
fn jacobi_gives_exact_eigenpairs() {
    let (x, _) = planted(50, 8, 1);
    let cov = covariance(&x);
    let (values, vectors) = symmetric_eigen(&cov);
    for (j, &lambda) in values.iter().enumerate() {
        let v: Vec<f64> = (0..8).map(|i| vectors.get(i, j)).collect();
        for (i, &vi) in v.iter().enumerate() {
            let cv: f64 = v.iter().enumerate().map(|(k, vk)| cov.get(i, k) * vk).sum();
            assert!((cv - lambda * vi).abs() < 1e-9, "C v != λ v for pair {j}");
        }
    }
}

#[test]
fn components_are_orthonormal_eigenvectors_by_decreasing_variance() {
    let (x, _) = planted(400, 40, 2);
    let cov = covariance(&x);
    let pca = Pca::fit(&x, 6).unwrap();
    assert_eq!((pca.components.rows, pca.components.cols), (6, 40));
    for a in 0..6 {
        for b in 0..6 {
            let dot: f64 = pca
                .components
                .row(a)
                .iter()
                .zip(pca.components.row(b))
                .map(|(p, q)| p * q)
                .sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-9, "components {a} and {b}: {dot}");
        }
    }
    for w in pca.explained_variance.windows(2) {
        assert!(
            w[0] >= w[1],
            "variances not decreasing: {:?}",
            pca.explained_variance
        );
    }
    // The three planted factors dominate: their eigenpairs are exact.
    for c in 0..3 {
        let v = pca.components.row(c);
        let lambda = pca.explained_variance[c];
        for i in 0..40 {
            let cv: f64 = (0..40).map(|k| cov.get(i, k) * v[k]).sum();
            assert!(
                (cv - lambda * v[i]).abs() < 1e-6 * lambda,
                "component {c} is not an eigenvector"
            );
        }
    }
}

#[test]
fn planted_subspace_is_recovered_and_projection_is_centred() {
    let (x, directions) = planted(500, 30, 3);
    let pca = Pca::fit(&x, 3).unwrap();
    // Each planted direction lies in the span of the 3 components.
    for (f, dir) in directions.iter().enumerate() {
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
        let captured: f64 = (0..3)
            .map(|c| {
                let dot: f64 = pca
                    .components
                    .row(c)
                    .iter()
                    .zip(dir)
                    .map(|(a, b)| a * b)
                    .sum();
                (dot / norm).powi(2)
            })
            .sum();
        assert!(
            captured > 0.999,
            "direction {f}: only {captured} of it is in the span"
        );
    }
    let y = pca.transform(&x).unwrap();
    assert_eq!((y.rows, y.cols), (500, 3));
    for c in 0..3 {
        let mean: f64 = (0..500).map(|i| y.get(i, c)).sum::<f64>() / 500.0;
        let var: f64 = (0..500).map(|i| (y.get(i, c) - mean).powi(2)).sum::<f64>() / 499.0;
        assert!(mean.abs() < 1e-9, "projection {c} is not centred: {mean}");
        assert!(
            (var - pca.explained_variance[c]).abs() < 1e-6 * var,
            "variance {c}"
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let one_row = Matrix::new(1, 3, vec![1.0, 2.0, 3.0]).unwrap();
    assert!(Pca::fit(&one_row, 2).is_err());
    let (x, _) = planted(20, 5, 4);
    let pca = Pca::fit(&x, 2).unwrap();
    let wrong = Matrix::zeros(2, 4);
    let err = pca.transform(&wrong).unwrap_err().to_string();
    assert!(err.contains("5 columns"), "{err}");
    // More components than columns are capped at the column count.
    assert_eq!(Pca::fit(&x, 9).unwrap().components.rows, 5);
}
