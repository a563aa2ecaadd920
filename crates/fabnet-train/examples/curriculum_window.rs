//! Which samples the curriculum's starting window picks: for training batches of a frames tree
//! (the demo's settings: `tiny`, batch 16, one source, seed 1), the rank correlation between the
//! model's per-sample loss and the loss of copying the source unchanged, how many of the window
//! [0, 0.5)'s samples are also in the least-motion half of the batch, and how much the model
//! gains over copying in the window and outside it. With a checkpoint's `.safetensors`, for that
//! model; without, at initialisation. The README's curriculum note quotes its output.
//!
//! `cargo run --release -p fabnet-train --example curriculum_window -- FRAMES [CHECKPOINT]`

use candle_core::{Device, Tensor};
use fabnet_core::model::{per_sample_l1, FabNet, ModelConfig};
use fabnet_data::{DatasetIndex, Loader, LoaderConfig, Split, SplitFractions};
use std::sync::Arc;

/// Each value's rank (0 = smallest).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    for (rank, &i) in idx.iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}
/// Pearson correlation; of ranks, Spearman's.
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fabnet_core::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let Some(data) = args.get(1) else {
        eprintln!("usage: curriculum_window FRAMES [CHECKPOINT.safetensors]");
        std::process::exit(2);
    };
    let ckpt = args.get(2);
    let device = Device::Cpu;
    let (index, _) =
        DatasetIndex::open(std::path::Path::new(data)).map_err(|e| format!("{data}: {e}"))?;
    let index = Arc::new(index);
    let split = Split::seeded(&index, 1, SplitFractions::default())?;
    let cfg = LoaderConfig {
        batch_size: 16,
        num_views: 2,
        image_size: 32,
        seed: 1,
        jitter: true,
        drop_last: true,
        workers: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(index.clone(), &split.train, cfg)?;
    let mc = ModelConfig::preset("tiny")?;
    let (mut model, mut varmap) = FabNet::init(&mc, 1, &device)?;
    model.set_single_source_mask(false);
    if let Some(c) = ckpt {
        varmap.load(c).map_err(|e| format!("{c}: {e}"))?;
    }
    let (mut rho_sum, mut overlap_sum, mut win_motion, mut rest_motion, mut batches) =
        (0.0, 0.0, 0.0, 0.0, 0);
    let (mut gain_win, mut gain_rest) = (0.0, 0.0);
    for epoch in 0..20u64 {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let shape = batch.target_shape();
            let target = Tensor::from_slice(&batch.target, &shape, &device)?;
            let source = Tensor::from_slice(
                batch.source(0).ok_or("a batch without a source")?,
                &shape,
                &device,
            )?;
            let out = model.reconstruct(&target, std::slice::from_ref(&source), true)?;
            let model_l: Vec<f64> = per_sample_l1(&out.fused, &target)?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            let ident: Vec<f64> = per_sample_l1(&source, &target)?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            let (rm, ri) = (ranks(&model_l), ranks(&ident));
            rho_sum += pearson(&rm, &ri);
            let half = model_l.len() / 2;
            let win: Vec<usize> = (0..model_l.len())
                .filter(|&i| rm[i] < half as f64)
                .collect();
            let overlap = win.iter().filter(|&&i| ri[i] < half as f64).count() as f64 / half as f64;
            overlap_sum += overlap;
            let mean = |ix: &mut dyn Iterator<Item = f64>| {
                let v: Vec<f64> = ix.collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            win_motion += mean(&mut win.iter().map(|&i| ident[i]));
            rest_motion += mean(
                &mut (0..model_l.len())
                    .filter(|i| !win.contains(i))
                    .map(|i| ident[i]),
            );
            gain_win += mean(&mut win.iter().map(|&i| ident[i] - model_l[i]));
            gain_rest += mean(
                &mut (0..model_l.len())
                    .filter(|i| !win.contains(i))
                    .map(|i| ident[i] - model_l[i]),
            );
            batches += 1;
        }
    }
    let b = batches as f64;
    println!("batches {batches}: spearman(model loss, copy-source L1) {:.3}; window [0,0.5) shares {:.2} of its samples with the least-motion half (chance 0.5); copy-source L1 in window {:.4} vs rest {:.4}; gain over copy in window {:.4} vs rest {:.4}",
        rho_sum / b, overlap_sum / b, win_motion / b, rest_motion / b, gain_win / b, gain_rest / b);
    Ok(())
}
