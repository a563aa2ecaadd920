//! `fabnet embed`, `fabnet probe` and `fabnet retrieve` end to end with the tiny preset (32 px):
//! round trips of both output formats against the index, agreement with the library's own embed of
//! the same crop, a video's row count, a bad image, retrieval of a query that is in the index, and
//! random-init probes on a small `fabnet synth` probe set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use fabnet_core::{FabNet, ModelConfig};
use fabnet_data::{transform_file, CropWindow};
use fabnet_probe::{read_embeddings, EmbeddingIndex, Embeddings};
use image::{Rgb, RgbImage};

fn fabnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabnet"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A deterministic image with structure (gradients and a box) that differs per `seed`.
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let inside = x > w / 4 + seed % 7 && x < 3 * w / 4 && y > h / 3 && y < 2 * h / 3 + seed % 5;
        let v = |k: u32| ((x * (3 + k + seed) + y * (5 + 2 * k) + 40 * seed) % 256) as u8;
        if inside {
            Rgb([255 - v(0), v(1) / 2, 200])
        } else {
            Rgb([v(0), v(1), v(2)])
        }
    })
}

/// Five images of assorted sizes, one in a subfolder; returns them sorted by path.
fn image_folder(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let names = ["a.png", "b.jpg", "c.png", "sub/d.png", "sub/e.jpg"];
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let p = dir.join(n);
        picture(48 + 8 * i as u32, 64, i as u32).save(&p).unwrap();
        out.push(p);
    }
    out.sort();
    out
}

fn paths(index: &EmbeddingIndex) -> Vec<String> {
    match index {
        EmbeddingIndex::Paths(p) => p.clone(),
        EmbeddingIndex::Frames(_) => panic!("expected a path index"),
    }
}

/// The library's embedding of each file with the no-jitter crop, one image per forward pass.
fn library_embeddings(files: &[PathBuf], seed: u64) -> Vec<Vec<f32>> {
    let config = ModelConfig::preset("tiny").unwrap();
    let (model, _) = FabNet::init(&config, seed, &Device::Cpu).unwrap();
    files
        .iter()
        .map(|f| {
            let px = transform_file(f, CropWindow::centre(), 32).unwrap();
            let x = Tensor::from_vec(px, (1, 3, 32, 32), &Device::Cpu).unwrap();
            model
                .embed(&x, false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

fn row(e: &Embeddings, i: usize) -> &[f32] {
    &e.data[i * e.cols..(i + 1) * e.cols]
}

#[test]
fn embed_folder_round_trips_and_matches_the_library() {
    let d = tempfile::tempdir().unwrap();
    let files = image_folder(&d.path().join("imgs"));
    let npy = d.path().join("out/emb.npy");
    let st = d.path().join("st/emb.safetensors");
    std::fs::create_dir_all(npy.parent().unwrap()).unwrap();
    std::fs::create_dir_all(st.parent().unwrap()).unwrap();
    for out in [&npy, &st] {
        let o = fabnet(&[
            "embed",
            s(&d.path().join("imgs")),
            "--out",
            s(out),
            "--random-init",
            "--seed",
            "3",
            "--preset",
            "tiny",
            "--batch-size",
            "2",
            "--no-progress",
        ]);
        ok(&o, "embed");
    }
    let a = read_embeddings(&npy).unwrap();
    let b = read_embeddings(&st).unwrap();
    assert_eq!((a.rows, a.cols), (5, 256));
    assert_eq!(a, b, "npy and safetensors hold the same rows");
    let ia = EmbeddingIndex::read(&npy.with_file_name("index.csv")).unwrap();
    let ib = EmbeddingIndex::read(&st.with_file_name("index.csv")).unwrap();
    assert_eq!(ia, ib);
    let expected: Vec<String> = files.iter().map(|f| s(f).to_string()).collect();
    assert_eq!(paths(&ia), expected, "rows follow the sorted paths");

    // Row i is the library's embedding of file i (batches of 2 vs one image per pass).
    let lib = library_embeddings(&files, 3);
    for (i, want) in lib.iter().enumerate() {
        let got = row(&a, i);
        let err = got
            .iter()
            .zip(want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(
            err <= 1e-4 * scale.max(1.0),
            "row {i}: max difference {err} (scale {scale})"
        );
    }
    // Distinct images give distinct rows (the rows are not all one vector).
    assert_ne!(row(&a, 0), row(&a, 1));

    // --crop none resizes the whole image instead: different rows for the same files.
    let none = d.path().join("none/emb.npy");
    std::fs::create_dir_all(none.parent().unwrap()).unwrap();
    let o = fabnet(&[
        "embed",
        s(&d.path().join("imgs")),
        "--out",
        s(&none),
        "--random-init",
        "--seed",
        "3",
        "--preset",
        "tiny",
        "--crop",
        "none",
        "--no-progress",
    ]);
    ok(&o, "embed --crop none");
    let c = read_embeddings(&none).unwrap();
    assert_eq!(c.rows, 5);
    assert_ne!(row(&c, 0), row(&a, 0));
}

/// A `frames`-frame 64×64 H.264 test pattern made by the ffmpeg CLI (whose frame count ffprobe
/// confirms), or `None` with a notice when ffmpeg is not installed.
fn write_video(path: &Path, frames: u32) -> Option<()> {
    let o = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=64x64:rate=25")
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .arg(path)
        .output();
    match o {
        Ok(o) if o.status.success() => Some(()),
        Ok(o) => panic!("ffmpeg failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipping: the ffmpeg CLI is not available ({e})");
            None
        }
    }
}

fn count_frames(path: &Path) -> u64 {
    let mut dec = fabnet_video::VideoDecoder::open(path).unwrap();
    let mut n = 0;
    while dec.next_frame().unwrap().is_some() {
        n += 1;
    }
    n
}

#[test]
fn video_embeds_one_row_per_selected_frame() {
    let d = tempfile::tempdir().unwrap();
    let video = d.path().join("clip.mp4");
    if write_video(&video, 10).is_none() {
        return;
    }
    let frames = count_frames(&video);
    assert_eq!(frames, 10);
    for (every, expected) in [
        ("1", (0..10).collect::<Vec<u64>>()),
        ("3", vec![0, 3, 6, 9]),
    ] {
        let out = d.path().join(format!("every{every}/emb.npy"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let o = fabnet(&[
            "embed",
            s(&video),
            "--every",
            every,
            "--out",
            s(&out),
            "--random-init",
            "--preset",
            "tiny",
            "--batch-size",
            "4",
            "--no-progress",
        ]);
        ok(&o, "embed video");
        let e = read_embeddings(&out).unwrap();
        let idx = EmbeddingIndex::read(&out.with_file_name("index.csv")).unwrap();
        let want: Vec<(String, u64)> = expected
            .iter()
            .map(|&f| (s(&video).to_string(), f))
            .collect();
        assert_eq!(idx, EmbeddingIndex::Frames(want));
        assert_eq!(e.rows, expected.len());
    }
}

#[test]
fn bad_image_is_reported_and_the_others_are_embedded() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("imgs");
    let files = image_folder(&dir);
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"this is not a png").unwrap();
    let out = d.path().join("emb.npy");
    let o = fabnet(&[
        "embed",
        s(&dir),
        "--out",
        s(&out),
        "--random-init",
        "--preset",
        "tiny",
        "--batch-size",
        "4",
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(1), "a skipped image fails the run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(s(&broken)),
        "the bad image is named: {stderr}"
    );
    let e = read_embeddings(&out).unwrap();
    let idx = EmbeddingIndex::read(&d.path().join("index.csv")).unwrap();
    assert_eq!(e.rows, files.len());
    let expected: Vec<String> = files.iter().map(|f| s(f).to_string()).collect();
    assert_eq!(paths(&idx), expected);
}

/// `rank row score key` lines after the header.
fn neighbours(stdout: &[u8]) -> Vec<(usize, f64, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_string(),
            )
        })
        .collect()
}

#[test]
fn retrieval_finds_the_query_itself_first() {
    let d = tempfile::tempdir().unwrap();
    let files = image_folder(&d.path().join("imgs"));
    let emb = d.path().join("emb.npy");
    let imgs = d.path().join("imgs");
    let model = ["--random-init", "--seed", "1", "--preset", "tiny"];
    let mut args = vec!["embed", s(&imgs), "--out", s(&emb)];
    args.extend(model);
    args.push("--no-progress");
    ok(&fabnet(&args), "embed");

    for metric in ["cosine", "l2"] {
        let grid = d.path().join(format!("{metric}.png"));
        let o = fabnet(&[
            "retrieve",
            "--index",
            s(&emb),
            "--query",
            "2",
            "-k",
            "3",
            "--metric",
            metric,
            "--grid",
            s(&grid),
            "--cell",
            "40",
        ]);
        ok(&o, "retrieve by row");
        let n = neighbours(&o.stdout);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].0, 2, "{metric}: the query row comes first");
        assert_eq!(n[0].2, s(&files[2]));
        if metric == "cosine" {
            assert!((n[0].1 - 1.0).abs() < 1e-5 && n[1].1 <= n[0].1);
        } else {
            assert!(n[0].1.abs() < 1e-6 && n[1].1 >= n[0].1);
        }
        // One row: query, bar, three neighbours (40-px cells, 4-px gaps, 12-px bar).
        let g = image::open(&grid).unwrap();
        assert_eq!((g.width(), g.height()), (40 * 4 + 12 + 4 * 4, 40 + 8));
    }

    // An image query is embedded with the same model and finds its own row.
    let mut args = vec![
        "retrieve",
        "--index",
        s(&emb),
        "--query",
        s(&files[3]),
        "-k",
        "2",
    ];
    args.extend(model);
    let o = fabnet(&args);
    ok(&o, "retrieve by image");
    let n = neighbours(&o.stdout);
    assert_eq!(n[0].0, 3);
    assert!((n[0].1 - 1.0).abs() < 1e-5);
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert!(dir.join("report.md").is_file());
    serde_json::from_str(&text).unwrap()
}

fn finite(v: &serde_json::Value, key: &str) -> f64 {
    let x = v["metrics"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"));
    assert!(x.is_finite(), "{key} = {x}");
    x
}

#[test]
fn random_init_probes_run_end_to_end_on_a_synth_probe_set() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus");
    let o = fabnet(&[
        "synth",
        "--no-progress",
        "--out",
        s(&corpus),
        "--identities",
        "1",
        "--clips-per-identity",
        "1",
        "--frames",
        "2",
        "--size",
        "64",
        "--seed",
        "2",
        "--probe-train-identities",
        "4",
        "--probe-test-identities",
        "2",
        "--probe-images",
        "4",
    ]);
    ok(&o, "synth");
    let probes = corpus.join("probes");
    let (train_dir, test_dir) = (probes.join("train"), probes.join("test"));
    let model = [
        "--random-init",
        "--seed",
        "0",
        "--preset",
        "tiny",
        "--no-progress",
    ];

    // 300-W style: .pts folders, box from the points plus 10 %, NME by the outer eye corners.
    let out68 = d.path().join("lm68");
    let mut args = vec![
        "probe",
        "--task",
        "landmarks68",
        "--train",
        s(&train_dir),
        "--test",
        s(&test_dir),
        "--out",
        s(&out68),
    ];
    args.extend(model);
    let o = fabnet(&args);
    ok(&o, "probe landmarks68");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("outer eye corners"), "{stdout}");
    let r = report(&out68);
    assert_eq!(r["task"], "landmarks");
    assert_eq!(
        (r["n_train"].as_u64(), r["n_test"].as_u64()),
        (Some(16), Some(8))
    );
    let nme = finite(&r, "mean_percent");
    assert!(nme > 0.0);

    // Pose from one CSV holding both splits, with the paper's BN→Linear probe.
    let out_pose = d.path().join("pose");
    let pose = probes.join("pose.csv");
    let mut args = vec![
        "probe",
        "--task",
        "pose",
        "--train",
        s(&pose),
        "--test",
        s(&pose),
        "--train-prefix",
        "train/",
        "--test-prefix",
        "test/",
        "--probe",
        "paper",
        "--out",
        s(&out_pose),
    ];
    args.extend(model);
    ok(&fabnet(&args), "probe pose");
    let r = report(&out_pose);
    assert_eq!(r["probe"], "bn-linear");
    assert_eq!(r["n_test"].as_u64(), Some(8));
    assert!(finite(&r, "mean_deg") > 0.0);

    // AUs from precomputed embeddings (whole images resized, as the au task crops), matched by key.
    let emb = d.path().join("emb/all.npy");
    std::fs::create_dir_all(emb.parent().unwrap()).unwrap();
    let mut args = vec!["embed", s(&probes), "--crop", "none", "--out", s(&emb)];
    args.extend(model);
    ok(&fabnet(&args), "embed probes");
    let au = probes.join("au.csv");
    let out_au = d.path().join("au");
    let o = fabnet(&[
        "probe",
        "--task",
        "au",
        "--train",
        s(&au),
        "--test",
        s(&au),
        "--train-prefix",
        "train/",
        "--test-prefix",
        "test/",
        "--embeddings",
        s(&emb),
        "--out",
        s(&out_au),
    ]);
    ok(&o, "probe au from embeddings");
    let r = report(&out_au);
    assert_eq!(r["n_train"].as_u64(), Some(16));
    let per_au = r["metrics"]["per_au"].as_array().unwrap();
    assert!(!per_au.is_empty());
    for e in per_au {
        if let Some(a) = e["auc"].as_f64() {
            assert!((0.0..=1.0).contains(&a), "{e}");
        }
    }

    // Probing a split whose images are not in the embeddings names the missing key.
    let train_only = d.path().join("train_only/emb.npy");
    std::fs::create_dir_all(train_only.parent().unwrap()).unwrap();
    let mut args = vec!["embed", s(&train_dir), "--out", s(&train_only)];
    args.extend(model);
    ok(&fabnet(&args), "embed train split");
    let o = fabnet(&[
        "probe",
        "--task",
        "landmarks68",
        "--train",
        s(&train_dir),
        "--test",
        s(&test_dir),
        "--embeddings",
        s(&train_only),
        "--out",
        s(&d.path().join("x")),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("is not in"), "{stderr}");
}

#[test]
fn frame_tree_is_detected_and_read_in_frame_order() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("frames");
    let mut expected = Vec::new();
    for (track, frames) in [("id0/v0/00001", [2, 10]), ("id1/v0/00001", [1, 3])] {
        let dir = root.join(track);
        std::fs::create_dir_all(&dir).unwrap();
        for f in frames {
            let p = dir.join(format!("frame{f}.png"));
            picture(40, 40, f).save(&p).unwrap();
            expected.push(s(&p).to_string());
        }
    }
    let out = d.path().join("emb.npy");
    let o = fabnet(&[
        "embed",
        s(&root),
        "--out",
        s(&out),
        "--random-init",
        "--preset",
        "tiny",
        "--no-progress",
    ]);
    ok(&o, "embed tree");
    let idx = EmbeddingIndex::read(&d.path().join("index.csv")).unwrap();
    // Numeric frame order (frame2 before frame10), not the lexicographic order of a plain folder.
    assert_eq!(paths(&idx), expected);
    assert_eq!(read_embeddings(&out).unwrap().rows, 4);
}

#[test]
fn weights_file_gives_the_same_rows_as_the_model_it_holds() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("imgs");
    image_folder(&dir);
    let config = ModelConfig::preset("tiny").unwrap();
    let (_, varmap) = FabNet::init(&config, 7, &Device::Cpu).unwrap();
    let weights = d.path().join("w.safetensors");
    fabnet_core::model::save_varmap(&varmap, &weights).unwrap();
    let run = |model: &[&str], out: &Path| {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut args = vec!["embed", s(&dir), "--out", s(out), "--no-progress"];
        args.extend(model);
        ok(&fabnet(&args), "embed");
        read_embeddings(out).unwrap()
    };
    let a = run(
        &["--checkpoint", s(&weights), "--preset", "tiny"],
        &d.path().join("a/e.npy"),
    );
    let b = run(
        &["--random-init", "--seed", "7", "--preset", "tiny"],
        &d.path().join("b/e.npy"),
    );
    assert_eq!(a, b);
    // A preset that does not fit the file is refused, naming the file.
    let o = fabnet(&[
        "embed",
        s(&dir),
        "--out",
        s(&d.path().join("c.npy")),
        "--checkpoint",
        s(&weights),
        "--preset",
        "small",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("w.safetensors"));
}
