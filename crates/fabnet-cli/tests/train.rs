//! `fabnet train` end to end: a run file plus overrides, outputs on disk, and
//! `--resume` continuing to a higher step count.

use fabnet_data::synthetic::SyntheticTree;
use std::process::Command;

fn fabnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fabnet"))
}

#[test]
fn train_writes_checkpoints_metrics_and_pictures_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("frames");
    SyntheticTree::new(12, 1, 1, 3)
        .with_size(48)
        .write(&data)
        .unwrap();
    let out = dir.path().join("run");
    let run_toml = dir.path().join("run.toml");
    std::fs::write(
        &run_toml,
        format!(
            "preset = \"tiny\"\ndata = {:?}\nout = {:?}\nsteps = 2\nbatch_size = 4\nworkers = 1\n\
             checkpoint_every = 1\npicture_every = 2\nvalidation_batches = 1\n\n\
             [optimizer]\nkind = \"adam\"\nlr = 0.001\nbeta1 = 0.9\nbeta2 = 0.999\neps = 1e-8\n",
            data, out
        ),
    )
    .unwrap();
    let status = fabnet()
        .args(["train", "--no-progress", "--config"])
        .arg(&run_toml)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(out.join("checkpoints/step-00000002.json").is_file());
    assert!(out.join("pictures/step-00000002.png").is_file());
    assert!(out.join("loss.png").is_file());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"train\"")).count(), 2);

    // A flag overrides the file; --resume continues from step 2 to 4.
    let output = fabnet()
        .args([
            "train",
            "--no-progress",
            "--resume",
            "--steps",
            "4",
            "--config",
        ])
        .arg(&run_toml)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("trained to step 4"), "{stdout}");
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .filter(|l| l.contains("\"train\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
}

#[test]
fn train_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let output = fabnet().args(["train", "--no-progress"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--data and --out"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "preset = \"tiny\"\ndata = \"x\"\nout = \"y\"\nsteps = \"many\"\n",
    )
    .unwrap();
    let output = fabnet()
        .args(["train", "--no-progress", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 4"),
        "{stderr}"
    );
}
