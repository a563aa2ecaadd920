//! FAb-Net training-step speed and peak memory on the CPU against PyTorch,
//! both on 2 threads.
//!
//! Run: `cargo bench -p fabnet-core --bench model` (add `-- --quick` for a
//! short sanity run on the tiny preset). Each case runs in its own child
//! process, so that its peak resident memory (VmHWM) is its own: this binary
//! re-executes itself for our side and runs `benches/torch_model.py` (when
//! `/usr/bin/python3` has torch) for PyTorch's. Both land in
//! `target/fabnet-bench/model.json`. Set `FABNET_BENCH_NO_TORCH=1` to skip
//! PyTorch.
//!
//! The step: train-mode `reconstruct` of a target from one source (encoder
//! on both, flow and mask decoders, grid_sample; the mask decoder runs as in
//! the authors' code although one source gives it no gradient), per-sample L1
//! and its mean; fwd+bwd adds the backward pass to every parameter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use fabnet_core::model::{curriculum_loss, per_sample_l1, FabNet, ModelConfig};

const THREADS: usize = 2;
/// The environment variable that makes this binary a child running one case.
const CHILD_ENV: &str = "FABNET_MODEL_BENCH_CASE";

/// One measured configuration.
#[derive(Clone, Copy)]
struct Case {
    preset: &'static str,
    batch: usize,
    /// Least timed iterations of each measurement.
    iters: usize,
    /// Keep timing (up to 50 iterations) until this many seconds have passed.
    budget_s: f64,
}

const FULL: [Case; 2] = [
    Case {
        preset: "small",
        batch: 32,
        iters: 5,
        budget_s: 20.0,
    },
    Case {
        preset: "paper",
        batch: 8,
        iters: 3,
        budget_s: 30.0,
    },
];

const QUICK: [Case; 1] = [Case {
    preset: "tiny",
    batch: 4,
    iters: 1,
    budget_s: 0.0,
}];

/// Reads one number out of a measurement.
type Field = fn(&Measurement) -> Option<f64>;

/// What one child reports.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    fwd_ms: f64,
    fwd_bwd_ms: f64,
    peak_mib: Option<f64>,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Peak resident set of this process in MiB, from /proc/self/status.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Median wall time in ms of `f`, after one warm-up call.
fn median_ms(case: &Case, mut f: impl FnMut()) -> f64 {
    f();
    let budget = Duration::from_secs_f64(case.budget_s);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < case.iters || (start.elapsed() < budget && times.len() < 50) {
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Runs one case in this process and prints its measurement as JSON.
fn run_child(spec: &str) {
    let case = parse_case(spec).expect("bad child case");
    let config = ModelConfig::preset(case.preset).expect("preset");
    let dev = Device::Cpu;
    let (model, _varmap) = FabNet::init(&config, 0, &dev).expect("init");
    let s = config.image_size;
    let target = Tensor::rand(0f32, 1f32, (case.batch, 3, s, s), &dev).expect("target");
    let source = Tensor::rand(0f32, 1f32, (case.batch, 3, s, s), &dev).expect("source");
    let forward = || {
        let out = model
            .reconstruct(&target, std::slice::from_ref(&source), true)
            .expect("reconstruct");
        let per_sample = per_sample_l1(&out.fused, &target).expect("l1");
        curriculum_loss(&per_sample, 0.0, 1.0).expect("loss")
    };
    let fwd_ms = median_ms(&case, || {
        forward();
    });
    let fwd_bwd_ms = median_ms(&case, || {
        forward().backward().expect("backward");
    });
    let report = serde_json::json!({
        "fwd_ms": fwd_ms,
        "fwd_bwd_ms": fwd_bwd_ms,
        "peak_mib": peak_mib(),
    });
    println!("{report}");
}

fn case_spec(case: &Case) -> String {
    format!(
        "{}:{}:{}:{}",
        case.preset, case.batch, case.iters, case.budget_s
    )
}

fn parse_case(spec: &str) -> Option<Case> {
    let mut it = spec.split(':');
    let name = it.next()?;
    let preset = *ModelConfig::PRESET_NAMES.iter().find(|p| **p == name)?;
    Some(Case {
        preset,
        batch: it.next()?.parse().ok()?,
        iters: it.next()?.parse().ok()?,
        budget_s: it.next()?.parse().ok()?,
    })
}

fn parse_measurement(stdout: &[u8]) -> Option<Measurement> {
    let line = String::from_utf8_lossy(stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some(Measurement {
        fwd_ms: v["fwd_ms"].as_f64()?,
        fwd_bwd_ms: v["fwd_bwd_ms"].as_f64()?,
        peak_mib: v["peak_mib"].as_f64(),
    })
}

fn run_measurement(mut cmd: Command, what: &str) -> Option<Measurement> {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{what}: cannot start: {e}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let m = parse_measurement(&out.stdout);
    if m.is_none() {
        eprintln!(
            "{what}: unreadable output {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    m
}

fn ours(case: &Case) -> Option<Measurement> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, case_spec(case))
        .env("RAYON_NUM_THREADS", THREADS.to_string());
    run_measurement(cmd, &format!("candle {}", case_spec(case)))
}

fn torch(case: &Case) -> Option<Measurement> {
    if std::env::var_os("FABNET_BENCH_NO_TORCH").is_some() {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_model.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script)
        .args(["--preset", case.preset])
        .args(["--batch", &case.batch.to_string()])
        .args(["--iters", &case.iters.to_string()])
        .args(["--budget-s", &case.budget_s.to_string()])
        .env("OPENBLAS_NUM_THREADS", "1");
    run_measurement(cmd, &format!("torch {}", case_spec(case)))
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let cases: &[Case] = if quick { &QUICK } else { &FULL };
    let mut rows = Vec::new();
    for case in cases {
        let size = ModelConfig::preset(case.preset).expect("preset").image_size;
        let name = format!("{} ({size} px) batch {}", case.preset, case.batch);
        println!("model bench: {name} ...");
        let (a, b) = (ours(case), torch(case));
        let fields: [(&str, &str, Field); 3] = [
            ("fwd", "ms/iter", |m| Some(m.fwd_ms)),
            ("fwd+bwd", "ms/iter", |m| Some(m.fwd_bwd_ms)),
            ("peak memory", "MiB", |m| m.peak_mib),
        ];
        for (label, unit, get) in fields {
            let (o, r) = (a.as_ref().and_then(get), b.as_ref().and_then(get));
            println!("  {label}: ours {o:?} {unit}, PyTorch {r:?} {unit}");
            rows.push(serde_json::json!({
                "case": format!("{name} {label}"),
                "ours": o,
                "reference": r,
                "reference_name": "PyTorch 1.13 CPU, 2 threads",
                "unit": unit,
                "lower_is_better": true,
            }));
        }
    }
    let report = serde_json::json!({
        "bench": "model",
        "rows": rows,
        "notes": format!(
            "f32, {THREADS} threads each, one child process per case and side (peak memory is that process's VmHWM, including the fwd+bwd run); \
             1-source train-mode step: encoder on target and source, flow and mask decoders (the mask runs although it gets no gradient), \
             grid_sample, per-sample L1 and mean; fwd+bwd adds the backward pass to every parameter; median of >= 3 runs{}",
            if quick { "; --quick run on the tiny preset, indicative only" } else { "" }
        ),
    });
    let dir = target_dir().join("fabnet-bench");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("model.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
        std::fs::rename(&tmp, dir.join("model.json"))
    };
    match write() {
        Ok(()) => println!("wrote {}", dir.join("model.json").display()),
        Err(e) => eprintln!("cannot write {}: {e}", dir.join("model.json").display()),
    }
}
