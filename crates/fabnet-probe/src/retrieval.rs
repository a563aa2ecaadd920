//! Exact k-nearest-neighbour search over an embeddings matrix, streamed in row chunks (memory-mapped
//! files are never loaded whole), with a bounded top-k heap per query.
//!
//! Cosine scores are a chunk-by-query matrix product of L2-normalised rows; L2 distances are computed
//! from the differences directly, so a row's distance to itself is exactly 0.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embeddings::RowSource;
use crate::error::{ProbeError, Result};

/// The similarity used for retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Metric {
    /// Cosine similarity, higher is nearer (a zero vector scores 0 against everything).
    #[default]
    Cosine,
    /// Euclidean distance, lower is nearer.
    L2,
}

/// One retrieved row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Row in the embeddings matrix (0-based).
    pub row: usize,
    /// Cosine similarity in [-1, 1] or L2 distance ≥ 0, by [`Metric`].
    pub score: f64,
}

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Similarity.
    pub metric: Metric,
    /// Neighbours per query.
    pub k: usize,
    /// Rows read per chunk (memory: `chunk_rows · D · 4` bytes plus `chunk_rows · Q · 4` for scores).
    pub chunk_rows: usize,
}

impl Default for SearchOptions {
    /// Cosine, k = 8, 16384-row chunks.
    fn default() -> Self {
        SearchOptions {
            metric: Metric::Cosine,
            k: 8,
            chunk_rows: 16384,
        }
    }
}

/// A heap entry ordered so that the heap's maximum is the worst candidate kept.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    badness: f32,
    row: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        // Equal scores rank the lower row first, so results do not depend on chunking.
        self.badness
            .total_cmp(&o.badness)
            .then(self.row.cmp(&o.row))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>()
        + ra.iter()
            .zip(rb)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The `k` nearest rows of `source` to each of the `Q = queries.len() / D` queries (row-major `(Q, D)`),
/// nearest first; equal scores are ordered by row. Returns one list per query (shorter than k only if
/// N < k).
pub fn knn(
    source: &dyn RowSource,
    queries: &[f32],
    opts: &SearchOptions,
) -> Result<Vec<Vec<Neighbour>>> {
    let d = source.dim();
    if d == 0 || queries.len() % d != 0 {
        return Err(ProbeError::Shape(format!(
            "{} query values are not whole {d}-d rows",
            queries.len()
        )));
    }
    if opts.k == 0 || opts.chunk_rows == 0 {
        return Err(ProbeError::Invalid(format!(
            "k ({}) and chunk_rows ({}) must be > 0",
            opts.k, opts.chunk_rows
        )));
    }
    let nq = queries.len() / d;
    let mut q = queries.to_vec();
    if opts.metric == Metric::Cosine {
        q.chunks_mut(d).for_each(normalise);
    }
    let mut heaps: Vec<BinaryHeap<Candidate>> = (0..nq)
        .map(|_| BinaryHeap::with_capacity(opts.k + 1))
        .collect();
    let mut buf = Vec::new();
    let mut scores = Vec::new();
    let n = source.n_rows();
    let mut start = 0;
    while start < n {
        let end = (start + opts.chunk_rows).min(n);
        source.read_rows(start, end, &mut buf)?;
        let c = end - start;
        // Badness (chunk row major, (C, Q)): negated cosine or squared L2.
        scores.resize(c * nq, 0f32);
        scores
            .par_chunks_mut(nq.max(1))
            .zip(buf.par_chunks(d))
            .for_each(|(s, row)| match opts.metric {
                Metric::Cosine => {
                    let n = dot(row, row).sqrt();
                    let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
                    for (s, qv) in s.iter_mut().zip(q.chunks(d)) {
                        *s = -dot(qv, row) * inv;
                    }
                }
                Metric::L2 => {
                    for (s, qv) in s.iter_mut().zip(q.chunks(d)) {
                        *s = sq_dist(qv, row);
                    }
                }
            });
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(ProbeError::Numeric(format!(
                "row {} gives a NaN score",
                start + i / nq.max(1)
            )));
        }
        heaps.par_iter_mut().enumerate().for_each(|(qi, heap)| {
            for r in 0..c {
                let cand = Candidate {
                    badness: scores[r * nq + qi],
                    row: start + r,
                };
                if heap.len() < opts.k {
                    heap.push(cand);
                } else if heap.peek().is_some_and(|worst| cand < *worst) {
                    heap.pop();
                    heap.push(cand);
                }
            }
        });
        tracing::trace!(rows = end, of = n, "knn: chunk scored");
        start = end;
    }
    Ok(heaps
        .into_iter()
        .map(|h| {
            h.into_sorted_vec()
                .into_iter()
                .map(|c| Neighbour {
                    row: c.row,
                    score: match opts.metric {
                        Metric::Cosine => -f64::from(c.badness),
                        Metric::L2 => f64::from(c.badness).sqrt(),
                    },
                })
                .collect()
        })
        .collect())
}

/// The given rows of `source` as row-major queries `(rows.len(), D)`, for "query by row".
pub fn query_rows(source: &dyn RowSource, rows: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len() * source.dim());
    let mut buf = Vec::new();
    for &r in rows {
        if r >= source.n_rows() {
            return Err(ProbeError::Invalid(format!(
                "query row {r} out of 0..{}",
                source.n_rows()
            )));
        }
        source.read_rows(r, r + 1, &mut buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}
