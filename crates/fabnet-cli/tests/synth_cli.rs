//! `fabnet synth` end to end: a tiny corpus from flags and from a TOML config, then
//! `fabnet extract` reads its videos and VoxCeleb2 track files like VoxCeleb's.

use std::path::Path;
use std::process::Command;

fn fabnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fabnet"))
        .args(args)
        .output()
        .unwrap()
}

fn count_files(dir: &Path, ext: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn synth_then_extract_reads_every_frame_of_every_track() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus");
    let c = corpus.to_str().unwrap();
    let o = fabnet(&[
        "synth",
        "--no-progress",
        "--out",
        c,
        "--identities",
        "2",
        "--clips-per-identity",
        "1",
        "--frames",
        "8",
        "--size",
        "64",
        "--seed",
        "5",
        "--probe-train-identities",
        "1",
        "--probe-test-identities",
        "1",
        "--probe-images",
        "2",
    ]);
    assert!(
        o.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(count_files(&corpus.join("videos"), "mp4"), 2);
    assert_eq!(count_files(&corpus.join("probes"), "pts"), 4);

    let frames = d.path().join("frames");
    let o = fabnet(&[
        "extract",
        "--no-progress",
        "--tracks",
        &format!("{c}/tracks"),
        "--videos",
        &format!("{c}/videos"),
        "--out",
        frames.to_str().unwrap(),
        "--size",
        "32",
    ]);
    assert!(
        o.status.success(),
        "extract failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for id in ["id00000", "id00001"] {
        let track = frames.join(id).join("clip000").join("00001");
        assert_eq!(
            count_files(&track, "jpg"),
            8,
            "frames extracted from {}",
            track.display()
        );
    }
}

#[test]
fn synth_reads_a_toml_config_and_flags_override_it() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("synth.toml");
    std::fs::write(
        &cfg,
        "seed = 9\nidentities = 1\nclips_per_identity = 2\nframes_per_clip = 4\nsize = 32\nprobe_train_identities = 0\nprobe_test_identities = 0\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let o = fabnet(&[
        "synth",
        "--no-progress",
        "--config",
        cfg.to_str().unwrap(),
        "--frames",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let written = std::fs::read_to_string(out.join("synth.toml")).unwrap();
    assert!(
        written.contains("frames_per_clip = 3") && written.contains("seed = 9"),
        "{written}"
    );
    assert_eq!(count_files(&out.join("videos"), "mp4"), 2);

    std::fs::write(&cfg, "seed = 9\nframes = 3\n").unwrap();
    let o = fabnet(&[
        "synth",
        "--no-progress",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("synth.toml") && err.contains("frames"),
        "{err}"
    );
}
