//! Validation draws its batches from successive epochs of the held-out
//! loader, so a split smaller than one batch still yields the number of
//! batches asked for, each on other frames, and the same ones every time.

mod common;

use std::sync::Arc;

use candle_core::Device;
use fabnet_data::{DatasetIndex, Loader, LoaderConfig};
use fabnet_train::{batch_tensors, model_config, validate, Network, Objective};

#[test]
fn validation_spans_epochs_when_one_epoch_holds_fewer_batches() {
    let dir = tempfile::tempdir().unwrap();
    common::write_moving_tree(dir.path(), 3, 2, 6, 5, false);
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let config = LoaderConfig {
        batch_size: 4,
        num_views: 2,
        image_size: 32,
        seed: 9,
        workers: 1,
        ..LoaderConfig::default()
    }
    .without_jitter();
    // Three identities and batches of four: one (partial) batch an epoch.
    let loader = Loader::new(index, &[0, 1, 2], config).unwrap();
    assert_eq!(loader.batches_per_epoch(), 1);
    let device = Device::Cpu;
    let model_cfg = model_config("tiny").unwrap();
    let (model, _vars) = Network::init(Objective::Fabnet, &model_cfg, 4, &device).unwrap();

    // Per-sample losses of epochs 0, 1 and 2, computed one batch at a time.
    let mut per_epoch = Vec::new();
    for epoch in 0..3 {
        let batch = loader.epoch(epoch).next().unwrap().unwrap();
        let (target, sources) = batch_tensors(&batch, &device).unwrap();
        let (per, _) = model.forward(&target, &sources, false).unwrap();
        per_epoch.push(per.to_vec1::<f32>().unwrap());
    }
    let mean = |epochs: &[Vec<f32>]| {
        let all: Vec<f64> = epochs.iter().flatten().map(|&v| f64::from(v)).collect();
        all.iter().sum::<f64>() / all.len() as f64
    };
    let one = validate(&model, &loader, 1, &device).unwrap();
    let three = validate(&model, &loader, 3, &device).unwrap();
    assert!((one - mean(&per_epoch[..1])).abs() < 1e-12, "{one}");
    assert!((three - mean(&per_epoch)).abs() < 1e-12, "{three}");
    // Later epochs draw other frames, so the three-batch value is a different average.
    assert_ne!(per_epoch[0], per_epoch[1]);
    assert_ne!(one, three);
    // And it is the same on every call.
    assert_eq!(three, validate(&model, &loader, 3, &device).unwrap());
}
