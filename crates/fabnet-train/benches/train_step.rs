//! One FAb-Net training step, ours against PyTorch's in the same run: the
//! `small` preset, batch 32, one source, curriculum window [0, 0.5), SGD with
//! momentum (the optimiser update included), 2 threads each. Batches are
//! random tensors, so data loading is not timed (see the loader bench).
//!
//! `cargo bench -p fabnet-train --bench train_step [-- --quick]` (or
//! `cargo xtask bench train`) writes `target/fabnet-bench/train.json`.

use candle_core::{Device, Tensor};
use fabnet_core::model::{curriculum_loss, per_sample_l1, FabNet, ModelConfig};
use fabnet_train::{trainable_params, Optimizer, OptimizerConfig};
use std::process::Command;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // As the `fabnet` CLI runs; the PyTorch child gets the same allocator
    // settings through GLIBC_ENV.
    fabnet_core::shorten_candle_spin();
    fabnet_core::keep_freed_memory();
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 1 } else { 9 };
    let batch = 32;
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("the global thread pool is set once");
    let device = Device::Cpu;
    let config = ModelConfig::preset("small").expect("small preset");
    let (model, varmap) = FabNet::init(&config, 0, &device).expect("model");
    let params = trainable_params(&varmap, false);
    let mut opt = Optimizer::new(params, OptimizerConfig::paper()).expect("optimiser");
    let target = Tensor::rand(0f32, 1f32, (batch, 3, 64, 64), &device).expect("target");
    let source = Tensor::rand(0f32, 1f32, (batch, 3, 64, 64), &device).expect("source");
    let mut step = || {
        let out = model
            .reconstruct(&target, std::slice::from_ref(&source), true)
            .expect("reconstruct");
        let per = per_sample_l1(&out.fused, &target).expect("l1");
        let loss = curriculum_loss(&per, 0.0, 0.5).expect("loss");
        let grads = loss.backward().expect("backward");
        opt.step(&grads).expect("step");
    };
    step();
    let mut times = Vec::new();
    for _ in 0..iters {
        let t0 = Instant::now();
        step();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let ours_ms = median(times);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_train_step.py");
    let torch_ms = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--batch", &batch.to_string(), "--iters", &iters.to_string()])
        .env("OPENBLAS_NUM_THREADS", "1")
        .envs(fabnet_core::memory::GLIBC_ENV)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["step_ms"].as_f64());
    let per_s = |ms: f64| batch as f64 / (ms / 1e3);
    println!(
        "train step small b{batch}: ours {ours_ms:.0} ms ({:.1} samples/s), torch {}",
        per_s(ours_ms),
        torch_ms.map_or("missing".into(), |t| format!(
            "{t:.0} ms ({:.1} samples/s)",
            per_s(t)
        ))
    );
    let json = serde_json::json!({
        "bench": "train",
        "notes": format!(
            "one training step (train-mode reconstruct, per-sample L1, curriculum window [0, 0.5), backward, SGD momentum 0.9 update), random batch, f32, 2 threads each, both sides under the same glibc allocator settings, median of {iters}{}",
            if quick { " (--quick sanity run)" } else { "" }
        ),
        "rows": [{
            "case": format!("small (64 px), batch {batch}, 1 source"),
            "ours": per_s(ours_ms),
            "reference": torch_ms.map(per_s),
            "reference_name": "PyTorch 1.13 CPU, 2 threads",
            "unit": "samples/s",
            "lower_is_better": false,
        }],
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/fabnet-bench");
    std::fs::create_dir_all(dir).expect("bench output folder");
    let path = format!("{dir}/train.json");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}
