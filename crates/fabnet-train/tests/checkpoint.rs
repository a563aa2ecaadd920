//! Checkpoints: atomic writes, pruning, and a crash in the middle of a write.

use candle_core::{Device, Tensor};
use fabnet_train::{load_checkpoint, CheckpointDir, CheckpointMeta, Curriculum, CurriculumConfig};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn meta(step: u64) -> CheckpointMeta {
    CheckpointMeta {
        step,
        epoch: step / 10,
        batch_in_epoch: step % 10,
        curriculum: Curriculum::new(CurriculumConfig::paper()),
        seed: 42,
        sources: 1,
        config: serde_json::json!({"preset": "tiny"}),
    }
}

/// Tensors whose every value is the step number, large enough that writing
/// them takes a while (so a kill lands mid-write).
fn tensors(step: u64, len: usize) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    for name in [
        "encoder.0.weight",
        "decoder.2.weight",
        "optim.first.encoder.0.weight",
    ] {
        t.insert(
            name.to_string(),
            Tensor::full(step as f32, len, &Device::Cpu).unwrap(),
        );
    }
    t
}

/// A checkpoint is whole: its meta and every tensor carry the same step.
fn assert_whole(json: &Path) -> u64 {
    let ckpt = load_checkpoint(json, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", json.display()));
    let step = ckpt.meta.step;
    assert_eq!(ckpt.tensors.len(), 3);
    for (name, t) in &ckpt.tensors {
        let values = t.to_vec1::<f32>().unwrap();
        assert!(
            values.iter().all(|&v| v == step as f32),
            "{name} of step {step} holds another step's values"
        );
    }
    step
}

#[test]
fn save_keeps_the_newest_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 2);
    for step in [5, 10, 15] {
        ckpts.save(&meta(step), &tensors(step, 16)).unwrap();
    }
    let steps: Vec<u64> = ckpts.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![10, 15]);
    let latest = ckpts.latest().unwrap().unwrap();
    assert_eq!(assert_whole(&latest), 15);
    assert_eq!(
        load_checkpoint(&latest, &Device::Cpu).unwrap().meta,
        meta(15)
    );
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn uncommitted_weights_are_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 3);
    ckpts.save(&meta(1), &tensors(1, 8)).unwrap();
    // A crash after the weights were renamed but before the JSON marker was.
    std::fs::write(dir.path().join("step-00000002.safetensors"), b"garbage").unwrap();
    std::fs::write(dir.path().join("step-00000002.json.tmp"), b"{").unwrap();
    let latest = ckpts.latest().unwrap().unwrap();
    assert_eq!(assert_whole(&latest), 1);
}

/// The child half of [`killed_writer_leaves_a_loadable_checkpoint`]: saves
/// checkpoints with large tensors in a loop until it is killed.
#[test]
fn checkpoint_writer_child() {
    let Ok(dir) = std::env::var("FABNET_CKPT_CHILD_DIR") else {
        return; // only runs as the child process
    };
    let ckpts = CheckpointDir::new(&dir, 2);
    for step in 1.. {
        ckpts.save(&meta(step), &tensors(step, 2_000_000)).unwrap();
    }
}

/// Kills a process that is writing checkpoints at several moments; whatever
/// the moment, the newest committed checkpoint loads and is whole.
#[test]
fn killed_writer_leaves_a_loadable_checkpoint() {
    let exe = std::env::current_exe().unwrap();
    for (round, wait_ms) in [150u64, 260, 410, 530].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args(["--exact", "checkpoint_writer_child", "--nocapture"])
            .env("FABNET_CKPT_CHILD_DIR", dir.path())
            .spawn()
            .unwrap();
        // Wait until at least one checkpoint is committed, then a bit more.
        let ckpts = CheckpointDir::new(dir.path(), 2);
        let mut waited = 0;
        while ckpts.list().unwrap().is_empty() && waited < 30_000 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 10;
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let latest = ckpts
            .latest()
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: no checkpoint committed"));
        assert_whole(&latest);
    }
}
