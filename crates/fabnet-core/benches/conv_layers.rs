//! Each convolution of one `small` training step (batch 32) on its own,
//! ours against PyTorch's (oneDNN), both on 2 threads: forward, and forward
//! plus the backward of `sum(y · r)` for a fixed random `r` (input gradient
//! where the step needs one, weight and bias gradients always). Best of
//! `REPS` timings each, so that one layer's gap can be read without the
//! rest of the step.
//!
//! Run: `cargo bench -p fabnet-core --bench conv_layers` (or `cargo xtask
//! bench conv`); writes `target/fabnet-bench/conv.json`. The PyTorch side is
//! `benches/torch_conv_layers.py` (skipped when `/usr/bin/python3` lacks
//! torch, or with `FABNET_BENCH_NO_TORCH=1`).

use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use fabnet_core::memory::GLIBC_ENV;
use fabnet_core::model::conv2d;

const BATCH: usize = 32;
const REPS: usize = 15;

/// A layer of the step: name, input channels, output channels, input side,
/// kernel, stride, padding, whether the step needs its input gradient.
type Layer = (&'static str, usize, usize, usize, usize, usize, usize, bool);

/// The `small` preset's convs: the encoder (4×4, stride 2) and a decoder
/// (×2 upsampling, then 3×3); the last decoder layer of the flow (2
/// outputs) and of the mask (1).
const LAYERS: [Layer; 13] = [
    ("enc1", 3, 32, 64, 4, 2, 1, false),
    ("enc2", 32, 64, 32, 4, 2, 1, true),
    ("enc3", 64, 128, 16, 4, 2, 1, true),
    ("enc4", 128, 256, 8, 4, 2, 1, true),
    ("enc5", 256, 256, 4, 4, 2, 1, true),
    ("enc6", 256, 256, 2, 4, 2, 1, true),
    ("dec1", 512, 256, 2, 3, 1, 1, true),
    ("dec2", 256, 256, 4, 3, 1, 1, true),
    ("dec3", 256, 128, 8, 3, 1, 1, true),
    ("dec4", 128, 64, 16, 3, 1, 1, true),
    ("dec5", 64, 32, 32, 3, 1, 1, true),
    ("dec6-flow", 32, 2, 64, 3, 1, 1, true),
    ("dec6-mask", 32, 1, 64, 3, 1, 1, true),
];

fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// (forward ms, forward+backward ms) of one layer.
fn time_layer(layer: &Layer) -> (f64, f64) {
    let &(_, cin, cout, side, k, stride, padding, input_grad) = layer;
    let device = Device::Cpu;
    let var = |t: Tensor| Var::from_tensor(&t).expect("var");
    let x = var(Tensor::randn(0f32, 1f32, (BATCH, cin, side, side), &device).expect("x"));
    let bound = 1.0 / ((cin * k * k) as f32).sqrt();
    let w = var(Tensor::rand(-bound, bound, (cout, cin, k, k), &device).expect("w"));
    let b = var(Tensor::rand(-bound, bound, cout, &device).expect("b"));
    let input = if input_grad {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let conv = || conv2d(&input, w.as_tensor(), b.as_tensor(), stride, padding).expect("conv");
    let r = Tensor::randn(0f32, 1f32, conv().dims(), &device).expect("r");
    let fwd = best(|| {
        conv();
    });
    let both = best(|| {
        (conv() * &r)
            .and_then(|t| t.sum_all())
            .and_then(|t| t.backward())
            .expect("backward");
    });
    (fwd, both)
}

fn main() {
    fabnet_core::shorten_candle_spin();
    fabnet_core::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("the global thread pool is set once");
    let ours: Vec<(f64, f64)> = LAYERS.iter().map(time_layer).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_conv_layers.py");
    let torch: Option<serde_json::Value> = if std::env::var_os("FABNET_BENCH_NO_TORCH").is_some() {
        None
    } else {
        Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--reps", &REPS.to_string()])
            .env("OPENBLAS_NUM_THREADS", "1")
            .envs(GLIBC_ENV)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
    };
    let mut rows = Vec::new();
    for (layer, (fwd, both)) in LAYERS.iter().zip(&ours) {
        let &(name, cin, cout, side, k, stride, ..) = layer;
        let out_side = side / stride;
        for (what, value) in [("fwd", fwd), ("fwd+bwd", both)] {
            let reference = torch.as_ref().and_then(|t| t[name][what].as_f64());
            println!(
                "{name:10} {what:8} ours {value:7.2} ms, torch {}",
                reference.map_or("missing".into(), |v| format!("{v:7.2} ms"))
            );
            rows.push(serde_json::json!({
                "case": format!("{name} {cin}→{cout} ch, {side}→{out_side} px, {k}×{k} stride {stride}, {what}"),
                "ours": value,
                "reference": reference,
                "reference_name": "PyTorch 1.13 CPU (oneDNN), 2 threads",
                "unit": "ms",
                "lower_is_better": true,
            }));
        }
    }
    let json = serde_json::json!({
        "bench": "conv",
        "notes": format!(
            "each conv of one `small` training step at batch {BATCH}, alone; fwd+bwd is the backward of sum(y·r) (input gradient where the step needs it), best of {REPS}, f32, 2 threads each"
        ),
        "rows": rows,
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/fabnet-bench");
    std::fs::create_dir_all(dir).expect("bench output folder");
    let path = format!("{dir}/conv.json");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}
