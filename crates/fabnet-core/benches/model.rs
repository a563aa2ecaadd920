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
//!
//! Then it times each kind of op on its own at the shapes one training step
//! of `small` (batch 32) runs it, on both sides: convs, BatchNorm,
//! activations, upsampling and the grid sampler, each fwd and fwd+bwd
//! (backward of the output's sum), so that a gap in the whole step can be
//! traced to an op; these rows are in ms per training step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use fabnet_core::keep_freed_memory;
use fabnet_core::memory::GLIBC_ENV;
use fabnet_core::model::{
    conv2d, curriculum_loss, leaky_relu, per_sample_l1, BatchNorm2d, FabNet, ModelConfig,
    ParamKind, Part,
};
use fabnet_core::ops::{grid_sample, upsample_bilinear2d, GridSampleOptions, PaddingMode};

const THREADS: usize = 2;
/// The environment variable that makes this binary a child running one case.
const CHILD_ENV: &str = "FABNET_MODEL_BENCH_CASE";
/// The environment variable that makes this binary a child running the
/// per-op breakdown of one case.
const BREAKDOWN_ENV: &str = "FABNET_MODEL_BENCH_BREAKDOWN";

/// One measured configuration.
#[derive(Clone, Copy)]
struct Case {
    preset: &'static str,
    batch: usize,
    /// Least timed iterations of each measurement.
    iters: usize,
    /// Keep timing (up to 50 iterations) until this many seconds have passed.
    budget_s: f64,
    /// Leave out the mask decoder, whose output a 1-source step discards
    /// (`FabNet::set_single_source_mask(false)`; PyTorch skips it alike).
    skip_mask: bool,
}

const FULL: [Case; 3] = [
    Case {
        preset: "small",
        batch: 32,
        iters: 5,
        budget_s: 20.0,
        skip_mask: false,
    },
    Case {
        preset: "small",
        batch: 32,
        iters: 5,
        budget_s: 20.0,
        skip_mask: true,
    },
    Case {
        preset: "paper",
        batch: 8,
        iters: 3,
        budget_s: 30.0,
        skip_mask: false,
    },
];

/// The case whose ops are timed one by one.
const BREAKDOWN: Case = Case {
    preset: "small",
    batch: 32,
    iters: 5,
    budget_s: 0.0,
    skip_mask: false,
};

const QUICK: [Case; 1] = [Case {
    preset: "tiny",
    batch: 4,
    iters: 1,
    budget_s: 0.0,
    skip_mask: false,
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
    let (mut model, _varmap) = FabNet::init(&config, 0, &dev).expect("init");
    model.set_single_source_mask(!case.skip_mask);
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
        "{}:{}:{}:{}:{}",
        case.preset, case.batch, case.iters, case.budget_s, case.skip_mask
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
        skip_mask: it.next()?.parse().ok()?,
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
        .env("OPENBLAS_NUM_THREADS", "1")
        .envs(GLIBC_ENV);
    if case.skip_mask {
        cmd.arg("--skip-mask");
    }
    run_measurement(cmd, &format!("torch {}", case_spec(case)))
}

/// One standalone op at the shapes of one training step, run `count` times
/// per step.
struct OpCase {
    category: &'static str,
    count: usize,
    run: Box<dyn Fn() -> candle_core::Result<Tensor>>,
}

fn var(shape: &[usize]) -> Var {
    Var::rand(0f32, 1f32, shape, &Device::Cpu).expect("var")
}

/// Every op of a 1-source training step of `config` at batch `b`, from the
/// model's tensor list: convs (weight `(out, in, k, k)`) in key order per
/// part, a BatchNorm after every conv that has running statistics.
fn op_cases(config: &ModelConfig, b: usize) -> Vec<OpCase> {
    let s = config.image_size;
    let specs = config.param_specs();
    let mut cases = Vec::new();
    for part in Part::ALL {
        let convs: Vec<&Vec<usize>> = specs
            .iter()
            .filter(|p| p.part == part && p.kind == ParamKind::ConvWeight)
            .map(|p| &p.shape)
            .collect();
        let bn_channels: Vec<usize> = specs
            .iter()
            .filter(|p| p.part == part && p.kind == ParamKind::RunningMean)
            .map(|p| p.shape[0])
            .collect();
        // The encoder runs on target and source; each decoder once.
        let calls = if part == Part::Encoder { 2 } else { 1 };
        let encoder = part == Part::Encoder;
        for (i, w) in convs.iter().enumerate() {
            let (cout, cin) = (w[0], w[1]);
            let (hin, hout) = if encoder {
                (s >> i, s >> (i + 1))
            } else {
                (1 << (i + 1), 1 << (i + 1))
            };
            let x = var(&[b, cin, hin, hin]);
            let (weight, bias) = (var(w).as_tensor().clone(), var(&[cout]).as_tensor().clone());
            let stride = if encoder { 2 } else { 1 };
            let first = encoder && i == 0;
            let input = if first {
                x.as_tensor().detach()
            } else {
                x.as_tensor().clone()
            };
            cases.push(OpCase {
                category: if encoder {
                    "conv 4x4 stride 2 (encoder)"
                } else {
                    "conv 3x3 (decoders)"
                },
                count: calls,
                run: Box::new(move || conv2d(&input, &weight, &bias, stride, 1)),
            });
            let y = var(&[b, cout, hout, hout]);
            let last = i + 1 == convs.len();
            let act: (&'static str, fn(&Tensor) -> candle_core::Result<Tensor>) =
                match (encoder, last) {
                    (true, false) => ("leaky relu / relu / tanh", |t| leaky_relu(t, 0.2)),
                    (false, false) => ("leaky relu / relu / tanh", |t| leaky_relu(t, 0.0)),
                    (false, true) => ("leaky relu / relu / tanh", |t| t.tanh()),
                    (true, true) => ("", |t| Ok(t.clone())),
                };
            if !act.0.is_empty() {
                let y2 = y.as_tensor().clone();
                let f = act.1;
                cases.push(OpCase {
                    category: act.0,
                    count: calls,
                    run: Box::new(move || f(&y2)),
                });
            }
            if !encoder {
                let up_in = var(&[b, cin, hin / 2, hin / 2]);
                let ac = config.upsample_align_corners;
                cases.push(OpCase {
                    category: "upsample x2",
                    count: calls,
                    run: Box::new(move || upsample_bilinear2d(up_in.as_tensor(), hin, hin, ac)),
                });
            }
            let has_bn = if encoder { i > 0 && !last } else { !last };
            if has_bn {
                let c = bn_channels[if encoder { i - 1 } else { i }];
                let bn = BatchNorm2d::new(
                    Tensor::zeros(c, DType::F32, &Device::Cpu).expect("mean"),
                    Tensor::ones(c, DType::F32, &Device::Cpu).expect("var"),
                    var(&[c]).as_tensor().clone(),
                    var(&[c]).as_tensor().clone(),
                    1e-5,
                    0.1,
                )
                .expect("bn");
                let y2 = y.as_tensor().clone();
                cases.push(OpCase {
                    category: "batchnorm (train)",
                    count: calls,
                    run: Box::new(move || bn.forward_t(&y2, true)),
                });
            }
        }
    }
    let src = var(&[b, 3, s, s]);
    let grid = Var::rand(-1f32, 1f32, (b, s, s, 2), &Device::Cpu).expect("grid");
    cases.push(OpCase {
        category: "grid_sample",
        count: 1,
        run: Box::new(move || {
            grid_sample(
                src.as_tensor(),
                grid.as_tensor(),
                GridSampleOptions::bilinear(PaddingMode::Zeros, true),
            )
        }),
    });
    cases
}

/// Per category: (fwd ms, fwd+bwd ms) per training step.
fn breakdown(case: &Case) -> Vec<(String, f64, f64)> {
    let config = ModelConfig::preset(case.preset).expect("preset");
    let mut totals: Vec<(String, f64, f64)> = Vec::new();
    for op in op_cases(&config, case.batch) {
        let fwd = median_ms(case, || {
            (op.run)().expect("op");
        });
        let bwd = median_ms(case, || {
            (op.run)()
                .and_then(|y| y.sum_all())
                .and_then(|y| y.backward())
                .expect("op backward");
        });
        let n = op.count as f64;
        match totals.iter_mut().find(|t| t.0 == op.category) {
            Some(t) => {
                t.1 += n * fwd;
                t.2 += n * bwd;
            }
            None => totals.push((op.category.to_string(), n * fwd, n * bwd)),
        }
    }
    totals
}

fn run_breakdown_child(spec: &str) {
    let case = parse_case(spec).expect("bad child case");
    let rows: serde_json::Map<String, serde_json::Value> = breakdown(&case)
        .into_iter()
        .map(|(k, f, b)| (k, serde_json::json!([f, b])))
        .collect();
    println!("{}", serde_json::Value::Object(rows));
}

/// Runs the breakdown for both sides; its rows for `model.json`.
fn breakdown_rows(case: &Case) -> Vec<serde_json::Value> {
    let ours = {
        let Ok(exe) = std::env::current_exe() else {
            return Vec::new();
        };
        let out = Command::new(exe)
            .env(BREAKDOWN_ENV, case_spec(case))
            .env("RAYON_NUM_THREADS", THREADS.to_string())
            .output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
    };
    let reference = if std::env::var_os("FABNET_BENCH_NO_TORCH").is_some() {
        None
    } else {
        Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_model.py"))
            .args(["--preset", case.preset, "--batch", &case.batch.to_string()])
            .args([
                "--iters",
                &case.iters.to_string(),
                "--budget-s",
                "0",
                "--breakdown",
            ])
            .env("OPENBLAS_NUM_THREADS", "1")
            .envs(GLIBC_ENV)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
    };
    let Some(ours) = ours else {
        eprintln!("breakdown: our child failed");
        return Vec::new();
    };
    let mut rows = Vec::new();
    println!(
        "per-op breakdown, {} batch {} (ms per training step, fwd | fwd+bwd):",
        case.preset, case.batch
    );
    for (category, v) in ours.as_object().into_iter().flatten() {
        let r = reference.as_ref().map(|r| &r[category]);
        for (i, label) in ["fwd", "fwd+bwd"].into_iter().enumerate() {
            let o = v[i].as_f64();
            let t = r.and_then(|r| r[i].as_f64());
            println!("  {category} {label}: ours {o:.1?}, PyTorch {t:.1?}");
            rows.push(serde_json::json!({
                "case": format!("{} batch {} {category} {label}", case.preset, case.batch),
                "ours": o,
                "reference": t,
                "reference_name": "PyTorch 1.13 CPU, 2 threads",
                "unit": "ms/step",
                "lower_is_better": true,
            }));
        }
    }
    rows
}

fn write_json(name: &str, report: &serde_json::Value) {
    let dir = target_dir().join("fabnet-bench");
    let path = dir.join(format!("{name}.json"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
        std::fs::rename(&tmp, &path)
    };
    match write() {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn main() {
    // Our side runs as the CLI does; the PyTorch children get the same
    // allocator settings through GLIBC_ENV.
    fabnet_core::shorten_candle_spin();
    keep_freed_memory();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(BREAKDOWN_ENV) {
        run_breakdown_child(&spec);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let cases: &[Case] = if quick { &QUICK } else { &FULL };
    let mut rows = Vec::new();
    for case in cases {
        let size = ModelConfig::preset(case.preset).expect("preset").image_size;
        let name = format!(
            "{} ({size} px) batch {}{}",
            case.preset,
            case.batch,
            if case.skip_mask {
                ", mask decoder skipped"
            } else {
                ""
            }
        );
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
    rows.extend(breakdown_rows(if quick { &QUICK[0] } else { &BREAKDOWN }));
    let report = serde_json::json!({
        "bench": "model",
        "rows": rows,
        "notes": format!(
            "f32, {THREADS} threads each, one child process per case and side (peak memory is that process's VmHWM, including the fwd+bwd run); \
             1-source train-mode step: encoder on target and source, flow and mask decoders (the mask runs although it gets no gradient), \
             grid_sample, per-sample L1 and mean; fwd+bwd adds the backward pass to every parameter; median of >= 3 runs. \
             The ms/step rows time each kind of op alone at the shapes of one such step, times its calls per step; their fwd+bwd is the backward of the output's sum{}",
            if quick { "; --quick run on the tiny preset, indicative only" } else { "" }
        ),
    });
    write_json("model", &report);
}
