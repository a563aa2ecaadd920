//! Embedding throughput (images/s) of the encoder in eval mode on the CPU, against the same PyTorch
//! model in eval mode (`torch.no_grad()`), both on 2 threads: `small` at batch 32 and `paper` at
//! batch 8, on random [0, 1] images (decoding and cropping are not timed).
//!
//! Run: `cargo bench -p fabnet-cli --bench embed` (add `-- --quick` for a short sanity run: one timed
//! batch per case). PyTorch's side is `benches/torch_embed.py`, run with `/usr/bin/python3` unless
//! `FABNET_BENCH_NO_TORCH=1`. Results land in `target/fabnet-bench/embed.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use fabnet_core::{FabNet, ModelConfig};

const THREADS: usize = 2;

struct Case {
    preset: &'static str,
    batch: usize,
}

const CASES: [Case; 2] = [
    Case {
        preset: "small",
        batch: 32,
    },
    Case {
        preset: "paper",
        batch: 8,
    },
];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Median ms per batch of our eval-mode embed, after one warm-up batch.
fn ours(case: &Case, iters: usize, budget_s: f64) -> f64 {
    let config = ModelConfig::preset(case.preset).expect("preset");
    let (model, _) = FabNet::init(&config, 0, &Device::Cpu).expect("init");
    let s = config.image_size;
    let x = Tensor::rand(0f32, 1f32, (case.batch, 3, s, s), &Device::Cpu).expect("input");
    let run = || {
        let e = model.embed(&x, false).expect("embed");
        assert_eq!(e.dims(), [case.batch, config.embedding_dim]);
    };
    run();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < iters || (start.elapsed().as_secs_f64() < budget_s && times.len() < 50) {
        let t0 = Instant::now();
        run();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median ms per batch of PyTorch's eval-mode embed, or `None` when torch is unavailable.
fn torch(case: &Case, iters: usize, budget_s: f64) -> Option<f64> {
    if std::env::var_os("FABNET_BENCH_NO_TORCH").is_some() {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_embed.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--preset", case.preset])
        .args(["--batch", &case.batch.to_string()])
        .args(["--iters", &iters.to_string()])
        .args(["--budget-s", &budget_s.to_string()])
        .env("OPENBLAS_NUM_THREADS", "1")
        .envs(fabnet_core::memory::GLIBC_ENV)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "torch {}: {}",
            case.preset,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["ms"].as_f64()
}

fn main() {
    // candle sizes its thread pool from this variable; set before any candle call.
    std::env::set_var("RAYON_NUM_THREADS", THREADS.to_string());
    // As the `fabnet` CLI runs; the PyTorch child gets the same allocator
    // settings through GLIBC_ENV.
    fabnet_core::shorten_candle_spin();
    fabnet_core::keep_freed_memory();
    let quick = std::env::args().any(|a| a == "--quick");
    let (iters, budget_s) = if quick { (1, 0.0) } else { (5, 10.0) };
    let mut rows = Vec::new();
    for case in &CASES {
        let ms = ours(case, iters, budget_s);
        let reference = torch(case, iters, budget_s);
        let per_s = |ms: f64| case.batch as f64 * 1e3 / ms;
        println!(
            "{} batch {}: ours {:.1} images/s ({ms:.1} ms/batch), torch {}",
            case.preset,
            case.batch,
            per_s(ms),
            reference.map_or("n/a".to_string(), |r| format!(
                "{:.1} images/s ({r:.1} ms/batch)",
                per_s(r)
            ))
        );
        rows.push(serde_json::json!({
            "case": format!("{} ({}px) eval embed, batch {}", case.preset,
                ModelConfig::preset(case.preset).map(|c| c.image_size).unwrap_or(0), case.batch),
            "ours": per_s(ms),
            "reference": reference.map(per_s),
            "reference_name": "PyTorch 1.13 CPU, 2 threads",
            "unit": "images/s",
            "lower_is_better": false,
        }));
    }
    let doc = serde_json::json!({
        "bench": "embed",
        "rows": rows,
        "notes": format!(
            "encoder only, eval mode (running BN statistics), random init, random input; f32, {THREADS} threads each; median of {}{}",
            if quick { "1 batch (--quick sanity run, not a measurement)" } else { ">= 5 batches" },
            "; image decoding and cropping are not included"
        ),
    });
    let dir = target_dir().join("fabnet-bench");
    std::fs::create_dir_all(&dir).expect("create target/fabnet-bench");
    let path = dir.join("embed.json");
    let tmp = dir.join(".embed.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    println!("wrote {}", path.display());
}
