//! Loader throughput in samples/s (decode + §1 crop recipe + batching) at S = 64, one source,
//! on a generated tree of 256×256 JPEG frames, with one worker and with one worker per core;
//! plus the time to index a larger tree of (empty) frame files, a full scan and an open from the validated cache.
//!
//! Run: `cargo bench -p fabnet-data --bench loader` (append `-- --quick` for a sanity run).
//! Writes `target/fabnet-bench/loader.json`; there is no reference implementation (null).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fabnet_data::synthetic::{SyntheticFormat, SyntheticTree};
use fabnet_data::{CacheStatus, DatasetIndex, Loader, LoaderConfig};
use serde_json::json;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().expect("temp dir");
    let (identities, min_seconds) = if quick { (16, 0.0) } else { (96, 3.0) };
    SyntheticTree::new(identities, 2, 2, 8)
        .with_size(256)
        .with_format(SyntheticFormat::Jpeg)
        .write(dir.path())
        .expect("write tree");
    let index = Arc::new(DatasetIndex::build(dir.path()).expect("index"));
    let ids: Vec<usize> = (0..identities).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch_size = 16;

    let mut rows = index_rows(quick);
    let mut worker_counts = vec![1, cores];
    worker_counts.dedup();
    for workers in worker_counts {
        let config = LoaderConfig {
            batch_size,
            num_views: 2,
            image_size: 64,
            seed: 0,
            workers,
            prefetch_batches: 2,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(Arc::clone(&index), &ids, config).expect("loader");
        if !quick {
            // Warm the page cache so that the timing is decode-bound, not disk-bound.
            for batch in loader.epoch(0) {
                batch.expect("batch");
            }
        }
        let start = Instant::now();
        let mut samples = 0usize;
        let mut epoch = 1;
        loop {
            for batch in loader.epoch(epoch) {
                samples += batch.expect("batch").batch_size;
            }
            epoch += 1;
            if start.elapsed().as_secs_f64() >= min_seconds {
                break;
            }
        }
        let per_second = samples as f64 / start.elapsed().as_secs_f64();
        println!("loader S=64 V=2 B={batch_size} workers={workers}: {per_second:.1} samples/s");
        rows.push(json!({
            "case": format!("S=64, 2 views, B={batch_size}, 256px JPEG, {workers} worker(s)"),
            "ours": per_second,
            "reference": null,
            "reference_name": "none",
            "unit": "samples/s",
            "lower_is_better": false,
        }));
    }
    let report = json!({
        "bench": "loader",
        "rows": rows,
        "notes": format!(
            "fabnet-data Loader, {identities} identities, each sample decodes 2 frames; {}",
            if quick { "quick sanity run, not a measurement" } else { "warm page cache" }
        ),
    });
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
        .join("fabnet-bench");
    std::fs::create_dir_all(&out_dir).expect("create bench dir");
    let path = out_dir.join("loader.json");
    let tmp = out_dir.join(".loader.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    println!("wrote {}", path.display());
}

/// Indexing time for a tree of empty frame files (the index never opens frames).
fn index_rows(quick: bool) -> Vec<serde_json::Value> {
    let (identities, videos, tracks, frames) = if quick {
        (10, 2, 2, 5)
    } else {
        (100, 4, 4, 30)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    for i in 0..identities {
        for v in 0..videos {
            for t in 0..tracks {
                let track = dir.path().join(format!("id{i:05}/v{v:02}/{t:05}"));
                std::fs::create_dir_all(&track).expect("mkdir");
                for f in 0..frames {
                    std::fs::write(track.join(format!("frame{f:06}.jpg")), b"").expect("touch");
                }
            }
        }
    }
    let files = identities * videos * tracks * frames;
    if !quick {
        // Let the folders age past the cache's racy window, as a real tree has, so that the
        // cached open measures stat-only validation.
        std::thread::sleep(std::time::Duration::from_millis(2100));
    }
    // Warm the directory cache first: freshly written folders are slow to list for a while.
    DatasetIndex::build(dir.path()).expect("index");
    let start = Instant::now();
    DatasetIndex::build(dir.path()).expect("index");
    let scan = start.elapsed().as_secs_f64() * 1e3;
    let (_, status) = DatasetIndex::open(dir.path()).expect("index");
    assert!(matches!(status, CacheStatus::Rebuilt { .. }));
    let start = Instant::now();
    let (_, status) = DatasetIndex::open(dir.path()).expect("index");
    let cached = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, CacheStatus::Fresh);
    println!("index {files} frames: scan {scan:.1} ms, validated cache {cached:.1} ms");
    let tracks_total = identities * videos * tracks;
    let row = |case: String, ms: f64| {
        json!({
            "case": case,
            "ours": ms,
            "reference": null,
            "reference_name": "none",
            "unit": "ms",
            "lower_is_better": true,
        })
    };
    vec![
        row(
            format!("index scan, {tracks_total} tracks / {files} frames"),
            scan,
        ),
        row(
            format!("index from validated cache, {tracks_total} tracks"),
            cached,
        ),
    ]
}
