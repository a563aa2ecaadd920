//! Loader throughput in samples/s (decode + §1 crop recipe + batching) at S = 64, one source,
//! on a generated tree of 256×256 JPEG frames, with one worker and with one worker per core.
//!
//! Run: `cargo bench -p fabnet-data --bench loader` (append `-- --quick` for a sanity run).
//! Writes `target/fabnet-bench/loader.json`; there is no reference implementation (null).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fabnet_data::synthetic::{SyntheticFormat, SyntheticTree};
use fabnet_data::{DatasetIndex, Loader, LoaderConfig};
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

    let mut rows = Vec::new();
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
