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

    // The trained checkpoint embeds the frame tree (preset read from the
    // checkpoint), one row per frame, equal to the library's embedding with
    // the checkpoint's weights.
    let ckpt = out.join("checkpoints/step-00000004.json");
    let npy = dir.path().join("emb/frames.npy");
    let output = fabnet()
        .args(["embed", "--no-progress", "--checkpoint"])
        .arg(&ckpt)
        .arg(&data)
        .arg("--out")
        .arg(&npy)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let emb = fabnet_probe::read_npy(&npy).unwrap();
    assert_eq!((emb.rows, emb.cols), (36, 256));
    let index = fabnet_probe::EmbeddingIndex::read(&npy.with_file_name("index.csv")).unwrap();
    let fabnet_probe::EmbeddingIndex::Paths(paths) = index else {
        panic!("a frame tree is indexed by path");
    };
    let first = data.join(&paths[0]);
    let first = if first.is_file() {
        first
    } else {
        std::path::PathBuf::from(&paths[0])
    };
    let loaded = fabnet_train::load_checkpoint(&ckpt, &candle_core::Device::Cpu).unwrap();
    let weights: std::collections::HashMap<String, candle_core::Tensor> = loaded
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .collect();
    let config = fabnet_core::ModelConfig::preset("tiny").unwrap();
    let model = fabnet_core::FabNet::new(
        &config,
        candle_nn::VarBuilder::from_tensors(
            weights,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        ),
    )
    .unwrap();
    let pixels =
        fabnet_data::transform_file(&first, fabnet_data::CropWindow::centre(), 32).unwrap();
    let x =
        candle_core::Tensor::from_vec(pixels, (1, 3, 32, 32), &candle_core::Device::Cpu).unwrap();
    let expected: Vec<f32> = model
        .embed(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in emb.data[..256].iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-4 * scale, "row 0 differs: {a} vs {b}");
    }
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

    // A GPU in a CPU-only build: a clear error before any work, and nothing written.
    if !candle_core::utils::cuda_is_available() {
        let out = dir.path().join("gpu-run");
        let output = fabnet()
            .args(["train", "--no-progress", "--device", "cuda", "--data"])
            .arg(dir.path())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("device `cuda`") && stderr.contains("--features cuda"),
            "{stderr}"
        );
        assert!(
            !out.exists(),
            "a failed device check left {}",
            out.display()
        );
    }
}
