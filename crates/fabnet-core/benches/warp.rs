//! Speed of the warp ops on the CPU against PyTorch, both on 2 threads.
//!
//! Run: `cargo bench -p fabnet-core --bench warp` (add `-- --quick` for a
//! short sanity run). Criterion times our ops; then, when `/usr/bin/python3`
//! with torch is present, `benches/torch_warp.py` times PyTorch on the same
//! cases in the same run, and both land in `target/fabnet-bench/warp.json`.
//! Set `FABNET_BENCH_NO_TORCH=1` to skip PyTorch. Both sides run under the
//! same glibc allocator settings ([`fabnet_core::keep_freed_memory`] here,
//! [`fabnet_core::memory::GLIBC_ENV`] for the PyTorch child process).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor, Var};
use criterion::{BenchmarkId, Criterion};
use fabnet_core::ops::{grid_sample, upsample_bilinear2d, GridSampleOptions, PaddingMode};

const THREADS: usize = 2;

/// (name, N, C, H, W) for the grid sampler; the grid is (N, H, W, 2).
const GS_CASES: [(&str, usize, usize, usize, usize); 2] = [
    ("32x3x64x64", 32, 3, 64, 64),
    ("32x3x256x256", 32, 3, 256, 256),
];

/// (name, N, C, H, W): ×2 upsampling of (N, C, H, W).
const UP_CASES: [(&str, usize, usize, usize, usize); 2] = [
    ("32x256x8x8 x2", 32, 256, 8, 8),
    ("32x32x64x64 x2", 32, 32, 64, 64),
];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A FAb-Net-like grid: identity plus a smooth flow, clamped to [-1, 1].
fn warp_grid(n: usize, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let dev = Device::Cpu;
    let xs = Tensor::arange(0u32, w as u32, &dev)?
        .to_dtype(candle_core::DType::F32)?
        .affine(2.0 / (w as f64 - 1.0), -1.0)?;
    let ys = Tensor::arange(0u32, h as u32, &dev)?
        .to_dtype(candle_core::DType::F32)?
        .affine(2.0 / (h as f64 - 1.0), -1.0)?;
    let gx = xs.reshape((1, 1, w, 1))?.broadcast_as((n, h, w, 1))?;
    let gy = ys.reshape((1, h, 1, 1))?.broadcast_as((n, h, w, 1))?;
    let flow = (Tensor::rand(-1f32, 1f32, (n, h, w, 2), &dev)? * 0.1)?;
    (Tensor::cat(&[gx, gy], 3)? + flow)?.clamp(-1f32, 1f32)
}

fn bench_grid_sample(c: &mut Criterion) {
    let opts = GridSampleOptions::bilinear(PaddingMode::Zeros, true);
    let mut group = c.benchmark_group("grid_sample");
    group.sample_size(10);
    for (name, n, ch, h, w) in GS_CASES {
        let input = Var::rand(0f32, 1f32, (n, ch, h, w), &Device::Cpu).expect("input");
        let grid = Var::from_tensor(&warp_grid(n, h, w).expect("grid")).expect("grid var");
        group.bench_with_input(BenchmarkId::new("fwd", name), &(), |b, _| {
            b.iter(|| grid_sample(input.as_tensor(), grid.as_tensor(), opts).expect("fwd"))
        });
        group.bench_with_input(BenchmarkId::new("fwd+bwd", name), &(), |b, _| {
            b.iter(|| {
                let out = grid_sample(input.as_tensor(), grid.as_tensor(), opts).expect("fwd");
                out.backward().expect("bwd")
            })
        });
    }
    group.finish();
}

fn bench_upsample(c: &mut Criterion) {
    let mut group = c.benchmark_group("upsample_bilinear2d");
    group.sample_size(10);
    for (name, n, ch, h, w) in UP_CASES {
        let x = Var::rand(0f32, 1f32, (n, ch, h, w), &Device::Cpu).expect("input");
        group.bench_with_input(BenchmarkId::new("fwd", name), &(), |b, _| {
            b.iter(|| upsample_bilinear2d(x.as_tensor(), 2 * h, 2 * w, false).expect("fwd"))
        });
        group.bench_with_input(BenchmarkId::new("fwd+bwd", name), &(), |b, _| {
            b.iter(|| {
                let out = upsample_bilinear2d(x.as_tensor(), 2 * h, 2 * w, false).expect("fwd");
                out.backward().expect("bwd")
            })
        });
    }
    group.finish();
}

/// Median time in ms of a finished criterion benchmark.
fn criterion_ms(dir: &Path, group: &str, func: &str, case: &str) -> Option<f64> {
    let path = dir
        .join(group)
        .join(func)
        .join(case)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? / 1e6)
}

/// PyTorch timings keyed by case name, or None when torch is unavailable.
fn torch_ms(quick: bool) -> Option<serde_json::Value> {
    if std::env::var_os("FABNET_BENCH_NO_TORCH").is_some() {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_warp.py");
    let mut cmd = Command::new("/usr/bin/python3");
    // The same allocator settings as ours (see `main`), so that neither side
    // pays page faults the other does not.
    cmd.arg(script)
        .env("OPENBLAS_NUM_THREADS", "1")
        .envs(fabnet_core::memory::GLIBC_ENV);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "torch_warp.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    // As the `fabnet` CLI does: candle's pool does not spin on our cores,
    // and freed buffers are reused, not page-faulted in afresh.
    fabnet_core::shorten_candle_spin();
    fabnet_core::keep_freed_memory();
    let quick = std::env::args().any(|a| a == "--quick");
    let crit_dir = target_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&crit_dir)
        .configure_from_args();
    // Criterion is not Send, so the 2-thread pool is the global one.
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("rayon global pool");
    bench_grid_sample(&mut c);
    bench_upsample(&mut c);
    c.final_summary();

    let torch = torch_ms(quick);
    let mut rows = Vec::new();
    let cases = GS_CASES
        .iter()
        .map(|t| ("grid_sample", t.0))
        .chain(UP_CASES.iter().map(|t| ("upsample_bilinear2d", t.0)));
    for (group, case) in cases {
        for func in ["fwd", "fwd+bwd"] {
            let label = format!("{group} {case} {func}");
            let ours = criterion_ms(&crit_dir, group, func, case);
            let reference = torch.as_ref().and_then(|t| t[&label].as_f64());
            rows.push(serde_json::json!({
                "case": label,
                "ours": ours,
                "reference": reference,
                "reference_name": "PyTorch 1.13 CPU, 2 threads",
                "unit": "ms/iter",
                "lower_is_better": true,
            }));
        }
    }
    let report = serde_json::json!({
        "bench": "warp",
        "rows": rows,
        "notes": format!(
            "f32, {THREADS} rayon threads vs torch.set_num_threads({THREADS}); grid_sample bilinear, zeros padding, align_corners=true, identity grid plus a random flow; fwd+bwd takes gradients to both input and grid (upstream gradient of ones); upsample align_corners=false; both sides under the same glibc allocator settings (freed buffers kept for reuse){}",
            if quick { "; --quick run, indicative only" } else { "" }
        ),
    });
    let dir = target_dir().join("fabnet-bench");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("warp.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
        std::fs::rename(&tmp, dir.join("warp.json"))
    };
    match write() {
        Ok(()) => println!("wrote {}", dir.join("warp.json").display()),
        Err(e) => eprintln!("cannot write {}: {e}", dir.join("warp.json").display()),
    }
}
