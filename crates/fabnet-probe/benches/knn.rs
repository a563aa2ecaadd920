//! Exact k-NN retrieval over a memory-mapped `.npy` (N × 256, k = 8), ours against NumPy.
//!
//! Run: `cargo bench -p fabnet-probe --bench knn` (add `-- --quick` for a short sanity run with
//! 20k rows). `FABNET_BENCH_KNN_ROWS` sets N (default 200000; 1000000 is the target size and
//! needs 1 GiB of temp disk). When `/usr/bin/python3` with NumPy is present, `benches/numpy_knn.py` times
//! the same searches (chunked matrix products + argpartition, 2 BLAS threads); both land in
//! `target/fabnet-bench/knn.json`. Timings are medians over repeats, in ms per search call.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fabnet_probe::{knn, query_rows, Metric, NpyMmap, SearchOptions};

const D: usize = 256;
const K: usize = 8;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rows: usize = match std::env::var("FABNET_BENCH_KNN_ROWS") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 20_000,
        Err(_) => 200_000,
    };
    let reps = if quick { 2 } else { 5 };
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()?;
    let dir = tempfile::tempdir()?;
    let emb = dir.path().join("emb.npy");
    let mut w = fabnet_probe::NpyWriter::create(&emb, D)?;
    let mut state = 0x9e37_79b9_u32;
    let mut batch = Vec::with_capacity(4096 * D);
    for start in (0..rows).step_by(4096) {
        batch.clear();
        for _ in 0..(rows - start).min(4096) * D {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            batch.push(state as f32 / u32::MAX as f32 - 0.3);
        }
        w.write_rows(&batch)?;
    }
    w.finish()?;
    let src = NpyMmap::open(&emb)?;
    let picks: Vec<usize> = (0..64).map(|i| i * (rows / 64)).collect();
    let queries = query_rows(&src, &picks)?;
    let qpath = dir.path().join("queries.npy");
    fabnet_probe::write_npy(&qpath, &queries, 64, D)?;

    let cases = [
        ("cosine 1q", Metric::Cosine, 1),
        ("cosine 64q", Metric::Cosine, 64),
        ("l2 64q", Metric::L2, 64),
    ];
    let mut ours = Vec::new();
    for (name, metric, nq) in cases {
        let opts = SearchOptions {
            metric,
            k: K,
            chunk_rows: 16384,
        };
        let ms = median_ms(reps, || {
            let r = knn(&src, &queries[..nq * D], &opts).expect("bench search");
            assert_eq!(r[0][0].row, picks[0]);
        });
        println!("knn {name} over {rows}x{D}: {ms:.1} ms");
        ours.push((name, ms));
    }

    let reference: Option<serde_json::Value> = if Path::new("/usr/bin/python3").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/numpy_knn.py");
        Command::new("/usr/bin/python3")
            .arg(script)
            .args([emb.as_os_str(), qpath.as_os_str()])
            .args([K.to_string(), reps.to_string()])
            .env("OPENBLAS_NUM_THREADS", "2")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
    } else {
        None
    };
    let rows_json: Vec<serde_json::Value> = ours
        .iter()
        .map(|(name, ms)| {
            let r = reference
                .as_ref()
                .and_then(|v| v.get(*name))
                .and_then(|v| v.as_f64());
            if let Some(r) = r {
                println!("numpy {name}: {r:.1} ms");
            }
            serde_json::json!({
                "case": format!("{name}, {rows}x{D} mmap, k={K}"),
                "ours": ms,
                "reference": r,
                "reference_name": "NumPy (OpenBLAS, 2 threads), chunked matmul + argpartition",
                "unit": "ms/search",
                "lower_is_better": true,
            })
        })
        .collect();
    let report = serde_json::json!({
        "bench": "knn",
        "rows": rows_json,
        "notes": format!("exact top-{K} over a memory-mapped float32 .npy; 2 rayon threads; quick={quick}"),
    });
    let out = target_dir().join("fabnet-bench");
    std::fs::create_dir_all(&out)?;
    let tmp = out.join("knn.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, out.join("knn.json"))?;
    println!("wrote {}", out.join("knn.json").display());
    Ok(())
}
