//! Exact k-NN: self-retrieval, chunked search equal to a brute-force sort, memory-mapped sources, and
//! the PNG grid.

use fabnet_probe::{
    draw_grid, draw_grid_files, knn, query_rows, write_npy, Embeddings, GridStyle, Metric, NpyMmap,
    ProbeError, SearchOptions,
};
use image::{Rgb, RgbImage};

fn data(rows: usize, cols: usize, seed: u32) -> Embeddings {
    // A cheap deterministic generator: a hashed sequence mapped to [-1, 1].
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let data = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0 + 0.3
        })
        .collect();
    Embeddings { rows, cols, data }
}

/// All rows scored in f64 and fully sorted: the reference for the chunked heap search.
fn brute(e: &Embeddings, q: &[f32], metric: Metric, k: usize) -> Vec<(usize, f64)> {
    let d = e.cols;
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let qv = f(q);
    let mut s: Vec<(usize, f64)> = (0..e.rows)
        .map(|r| {
            let rv = f(&e.data[r * d..(r + 1) * d]);
            let score = match metric {
                Metric::Cosine => {
                    let dot: f64 = qv.iter().zip(&rv).map(|(a, b)| a * b).sum();
                    let n = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
                    dot / (n(&qv) * n(&rv))
                }
                Metric::L2 => qv
                    .iter()
                    .zip(&rv)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt(),
            };
            (r, score)
        })
        .collect();
    match metric {
        Metric::Cosine => s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))),
        Metric::L2 => s.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))),
    }
    s.truncate(k);
    s
}

#[test]
fn query_in_index_returns_itself_first() {
    let e = data(500, 24, 1);
    for metric in [Metric::Cosine, Metric::L2] {
        let rows = [0, 17, 250, 499];
        let q = query_rows(&e, &rows).unwrap();
        let opts = SearchOptions {
            metric,
            k: 5,
            chunk_rows: 64,
        };
        let res = knn(&e, &q, &opts).unwrap();
        for (r, hits) in rows.iter().zip(&res) {
            assert_eq!(hits.len(), 5);
            assert_eq!(hits[0].row, *r, "{metric:?}");
            match metric {
                Metric::Cosine => assert!((hits[0].score - 1.0).abs() < 1e-5),
                Metric::L2 => assert_eq!(hits[0].score, 0.0),
            }
            assert!(hits.windows(2).all(|w| match metric {
                Metric::Cosine => w[0].score >= w[1].score,
                Metric::L2 => w[0].score <= w[1].score,
            }));
        }
    }
}

#[test]
fn chunked_search_equals_brute_force_on_mmap() {
    let d = tempfile::tempdir().unwrap();
    let e = data(1000, 33, 2);
    let p = d.path().join("e.npy");
    write_npy(&p, &e.data, e.rows, e.cols).unwrap();
    let m = NpyMmap::open(&p).unwrap();
    let queries = data(6, 33, 3);
    for metric in [Metric::Cosine, Metric::L2] {
        let whole = knn(
            &e,
            &queries.data,
            &SearchOptions {
                metric,
                k: 10,
                chunk_rows: 5000,
            },
        )
        .unwrap();
        for chunk in [1, 37, 1000] {
            let got = knn(
                &m,
                &queries.data,
                &SearchOptions {
                    metric,
                    k: 10,
                    chunk_rows: chunk,
                },
            )
            .unwrap();
            assert_eq!(got, whole, "{metric:?}, chunk {chunk}");
        }
        for (qi, hits) in whole.iter().enumerate() {
            let want = brute(&e, &queries.data[qi * 33..(qi + 1) * 33], metric, 10);
            let rows: Vec<usize> = hits.iter().map(|h| h.row).collect();
            let want_rows: Vec<usize> = want.iter().map(|w| w.0).collect();
            assert_eq!(rows, want_rows, "{metric:?} query {qi}");
            for (h, w) in hits.iter().zip(&want) {
                assert!((h.score - w.1).abs() < 1e-4, "{} vs {}", h.score, w.1);
            }
        }
    }
    // Fewer rows than k: everything, in order.
    let small = data(3, 33, 4);
    assert_eq!(
        knn(&small, &queries.data[..33], &SearchOptions::default()).unwrap()[0].len(),
        3
    );
    assert!(matches!(
        knn(&e, &[1.0; 5], &SearchOptions::default()),
        Err(ProbeError::Shape(_))
    ));
}

#[test]
fn grid_layout_and_files() {
    let q = RgbImage::from_pixel(20, 10, Rgb([0, 0, 255]));
    let n = vec![RgbImage::from_pixel(10, 10, Rgb([0, 255, 0])); 3];
    let style = GridStyle {
        cell: 16,
        gap: 2,
        separator: 4,
        ..GridStyle::default()
    };
    let g = draw_grid(&q, &n, &style).unwrap();
    // 4 cells of 16, a 4-px bar, 4 gaps of 2.
    assert_eq!(g.dimensions(), (16 * 4 + 4 + 2 * 4, 16 + 4));
    assert_eq!(g.get_pixel(2 + 8, 2 + 8).0, [0, 0, 255], "query centre");
    assert_eq!(
        g.get_pixel(2 + 8, 2).0,
        [0, 0, 0],
        "letterbox above a wide query"
    );
    assert_eq!(g.get_pixel(19, 5).0, style.separator_colour);
    assert_eq!(g.get_pixel(22 + 8, 10).0, [0, 255, 0], "first neighbour");
    assert_eq!(g.get_pixel(0, 0).0, style.background);

    let d = tempfile::tempdir().unwrap();
    let qp = d.path().join("q.png");
    let np = d.path().join("n.png");
    q.save(&qp).unwrap();
    n[0].save(&np).unwrap();
    let out = d.path().join("grid.png");
    draw_grid_files(&qp, &[np.as_path(), np.as_path()], &style, &out).unwrap();
    assert_eq!(
        image::open(&out).unwrap().to_rgb8().dimensions(),
        (16 * 3 + 4 + 2 * 3, 20)
    );
    let missing = d.path().join("missing.png");
    match draw_grid_files(&qp, &[missing.as_path()], &style, &out) {
        Err(ProbeError::MissingImage(p)) => assert_eq!(p, missing),
        other => panic!("expected a missing image, got {other:?}"),
    }
}
