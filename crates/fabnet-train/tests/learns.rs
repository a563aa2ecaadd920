//! Training really learns: on a small tree of translated scenes the `tiny`
//! model's validation L1 falls clearly below the identity-warp baseline (the
//! source copied unchanged), and a resumed run repeats the uninterrupted
//! run's losses exactly.

mod common;

use fabnet_train::{train, CurriculumConfig, Objective, OptimizerConfig, RunOptions, TrainConfig};
use std::path::Path;

fn config(data: &Path, out: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        preset: "tiny".into(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        seed: 3,
        steps,
        batch_size: 8,
        sources: 1,
        workers: 2,
        checkpoint_every: 1000,
        keep_checkpoints: 2,
        picture_every: 0,
        validation_batches: 1,
        validate_every: 0,
        objective: Objective::Fabnet,
        single_source_mask: true,
        device: "cpu".into(),
        init_from: None,
        freeze_flow: false,
        optimizer: OptimizerConfig::adam(1e-3),
        curriculum: CurriculumConfig::off(),
    }
}

/// (kind, step, loss) of every record of a metrics log.
fn records(path: &Path) -> Vec<(String, u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap().to_string(),
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn validation_loss_falls_below_the_identity_warp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    // Held-out identities film the scene from positions never seen in
    // training: a low validation L1 needs the flow to register the frames.
    common::write_moving_tree(&data, 60, 2, 6, 11, true);
    let out = dir.path().join("run");
    let mut cfg = config(&data, &out, 60);
    cfg.batch_size = 16;
    let summary = train(&cfg, RunOptions::default()).unwrap();
    assert_eq!(summary.steps, cfg.steps);
    let recs = records(&summary.metrics);
    let vals: Vec<f64> = recs.iter().filter(|r| r.0 == "val").map(|r| r.2).collect();
    assert!(vals.len() >= 3, "validation ran {} times", vals.len());
    let baseline = fabnet_train_identity_baseline(&cfg);
    let best = vals.iter().copied().fold(f64::MAX, f64::min);
    eprintln!(
        "identity-warp L1 {baseline:.4}, validation L1 first {:.4} best {best:.4}",
        vals[0]
    );
    assert!(
        best < 0.7 * baseline,
        "validation L1 {best:.4} is not clearly below the identity warp's {baseline:.4}"
    );
    assert!(out.join("loss.png").is_file());
}

/// The validation L1 of copying each source unchanged.
fn fabnet_train_identity_baseline(cfg: &TrainConfig) -> f64 {
    use fabnet_data::{DatasetIndex, Loader, LoaderConfig, Split, SplitFractions};
    let (index, _) = DatasetIndex::open(&cfg.data).unwrap();
    let index = std::sync::Arc::new(index);
    let split = Split::seeded(&index, cfg.seed, SplitFractions::default()).unwrap();
    let loader_cfg = LoaderConfig {
        batch_size: cfg.batch_size,
        num_views: 2,
        image_size: 32,
        seed: cfg.seed,
        workers: 1,
        ..LoaderConfig::default()
    }
    .without_jitter();
    let loader = Loader::new(index, &split.val, loader_cfg).unwrap();
    let (mut sum, mut n) = (0.0, 0);
    for batch in loader.epoch(0).take(cfg.validation_batches) {
        let batch = batch.unwrap();
        let source = batch.source(0).unwrap();
        let len = batch.image_len();
        for (t, s) in batch.target.chunks(len).zip(source.chunks(len)) {
            sum += t
                .iter()
                .zip(s)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum::<f64>()
                / len as f64;
            n += 1;
        }
    }
    sum / n as f64
}

#[test]
fn resumed_run_repeats_the_uninterrupted_losses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    common::write_moving_tree(&data, 20, 1, 4, 5, false);
    let mut cfg = config(&data, &dir.path().join("whole"), 10);
    cfg.optimizer = OptimizerConfig::paper();
    cfg.curriculum = CurriculumConfig {
        patience: 1,
        min_epochs_between_shifts: 1,
        ..CurriculumConfig::paper()
    };
    cfg.checkpoint_every = 3;
    let whole = train(&cfg, RunOptions::default()).unwrap();

    // The same run stopped at step 4 (its checkpoint at 3 is the last one a
    // kill would leave, so stop there), then resumed to step 10.
    let mut part = cfg.clone();
    part.out = dir.path().join("parted");
    part.steps = 3;
    train(&part, RunOptions::default()).unwrap();
    part.steps = 10;
    let resumed = train(
        &part,
        RunOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, 3);
    let a = records(&whole.metrics);
    let b = records(&resumed.metrics);
    assert_eq!(
        a.len(),
        b.len(),
        "the logs differ in length: {a:?} vs {b:?}"
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1), (&y.0, y.1));
        assert!(
            (x.2 - y.2).abs() <= 1e-6 * x.2.abs().max(1e-6),
            "{} loss at step {} differs after resuming: {} vs {}",
            x.0,
            x.1,
            x.2,
            y.2
        );
    }
}

#[test]
fn diverging_run_stops_naming_the_step_and_keeps_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    common::write_moving_tree(&data, 20, 1, 3, 9, false);
    let mut cfg = config(&data, &dir.path().join("run"), 50);
    cfg.checkpoint_every = 1;
    cfg.picture_every = 1;
    // A finite learning rate so large that the f32 weights overflow.
    cfg.optimizer = OptimizerConfig::Sgd {
        lr: 1e300,
        momentum: 0.9,
    };
    let err = train(&cfg, RunOptions::default()).unwrap_err();
    let fabnet_train::TrainError::NonFinite {
        step,
        last_checkpoint,
        ..
    } = &err
    else {
        panic!("expected a non-finite loss error, got {err}");
    };
    assert!(err.to_string().contains(&format!("step {step}")), "{err}");
    // Every step before the bad one was good and checkpointed.
    let ckpt = last_checkpoint
        .as_ref()
        .expect("a checkpoint before divergence");
    let loaded = fabnet_train::load_checkpoint(ckpt, &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.meta.step, step - 1);
    // Each good step drew its reconstruction grid.
    let pictures = std::fs::read_dir(dir.path().join("run/pictures"))
        .unwrap()
        .count();
    assert_eq!(pictures as u64, step - 1);
}

/// The multi-source stage starts from a 1-source checkpoint, keeps the flow
/// decoder fixed and the curriculum window it reached, and trains the encoder
/// and the mask decoder.
#[test]
fn multi_source_stage_freezes_the_flow_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    common::write_moving_tree(&data, 20, 1, 5, 2, false);
    let mut one = config(&data, &dir.path().join("one"), 2);
    one.curriculum = CurriculumConfig::paper();
    let first = train(&one, RunOptions::default()).unwrap();
    let start =
        fabnet_train::load_checkpoint(&first.checkpoint, &candle_core::Device::Cpu).unwrap();

    let mut three = config(&data, &dir.path().join("three"), 2);
    three.sources = 3;
    three.freeze_flow = true;
    three.init_from = Some(first.checkpoint.clone());
    three.curriculum = CurriculumConfig::paper();
    let second = train(&three, RunOptions::default()).unwrap();
    let end = fabnet_train::load_checkpoint(&second.checkpoint, &candle_core::Device::Cpu).unwrap();
    assert_eq!(end.meta.sources, 3);
    assert_eq!(end.meta.curriculum.window, start.meta.curriculum.window);

    let changed = |key: &str| {
        let diff = (&start.tensors[key] - &end.tensors[key])
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        diff > 0.0
    };
    let flow_weights: Vec<&String> = start
        .tensors
        .keys()
        .filter(|k| k.starts_with("decoder.") && (k.ends_with(".weight") || k.ends_with(".bias")))
        .collect();
    assert!(!flow_weights.is_empty());
    for key in flow_weights {
        assert!(!changed(key), "frozen flow decoder parameter {key} changed");
    }
    assert!(changed("encoder.0.weight"), "the encoder did not train");
    assert!(
        changed("mask.2.weight"),
        "the mask decoder did not train with 3 sources"
    );
    // The frozen decoder has no optimiser state.
    assert!(!end
        .tensors
        .keys()
        .any(|k| k.starts_with("optim.") && k.contains(".decoder.")));
}

#[test]
fn autoencoder_objective_learns_validates_every_k_steps_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    common::write_moving_tree(&data, 20, 1, 4, 7, false);
    let out = dir.path().join("ae");
    let mut cfg = config(&data, &out, 24);
    cfg.objective = Objective::Autoencoder;
    cfg.validate_every = 4;
    cfg.checkpoint_every = 12;
    cfg.picture_every = 24;
    cfg.optimizer = OptimizerConfig::adam(3e-3);
    let summary = train(&cfg, RunOptions::default()).unwrap();
    let recs = records(&summary.metrics);
    let val_steps: Vec<u64> = recs.iter().filter(|r| r.0 == "val").map(|r| r.1).collect();
    assert_eq!(val_steps, vec![4, 8, 12, 16, 20, 24]);
    // The objective is optimised: the training L1 (train-mode BatchNorm) falls clearly. Validation
    // runs in eval mode, whose running statistics lag this far behind on batches of 8.
    let train_l1: Vec<f64> = recs
        .iter()
        .filter(|r| r.0 == "train")
        .map(|r| r.2)
        .collect();
    let late = train_l1[train_l1.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(
        late < 0.75 * train_l1[0],
        "the autoencoder's training L1 did not fall: {train_l1:?}"
    );
    // Its checkpoint holds the encoder and the image decoder, and nothing of FAb-Net's decoders.
    let ckpt =
        fabnet_train::load_checkpoint(&summary.checkpoint, &candle_core::Device::Cpu).unwrap();
    assert!(ckpt.tensors.keys().any(|k| k.starts_with("encoder.")));
    assert!(ckpt.tensors.keys().any(|k| k.starts_with("autoencoder.")));
    assert!(!ckpt
        .tensors
        .keys()
        .any(|k| k.starts_with("decoder.") || k.starts_with("mask.")));
    assert!(out.join("pictures/step-00000024.png").is_file());
    // A longer run resumes from it.
    cfg.steps = 28;
    let resumed = train(
        &cfg,
        RunOptions {
            resume: true,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!((resumed.resumed_from, resumed.steps), (24, 28));
    // FAb-Net cannot start from an autoencoder checkpoint.
    let mut fab = config(&data, &dir.path().join("fab"), 2);
    fab.init_from = Some(resumed.checkpoint.clone());
    let err = train(&fab, RunOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("decoder.") || err.contains("autoencoder."),
        "{err}"
    );
}
