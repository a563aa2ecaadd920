//! Corpus output: formats on disk, disjoint splits, determinism and mp4 decodability.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fabnet_synth::{render_corpus, SynthConfig};

fn tiny() -> SynthConfig {
    SynthConfig {
        seed: 7,
        identities: 2,
        clips_per_identity: 2,
        frames_per_clip: 12,
        size: 64,
        probe_train_identities: 2,
        probe_test_identities: 1,
        probe_images_per_identity: 3,
        ..SynthConfig::default()
    }
}

fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_bytes_and_different_seed_does_not() {
    let cfg = tiny();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let sa = render_corpus(&cfg, a.path(), &|_| {}).unwrap();
    render_corpus(&cfg, b.path(), &|_| {}).unwrap();
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(
            v == &tb[k],
            "{k} differs between two runs with the same seed"
        );
    }
    assert!(
        ta.keys().all(|k| !k.contains(".partial")),
        "temporary files left behind"
    );
    assert_eq!(sa.videos, 4);
    assert_eq!(sa.video_frames, 48);
    assert_eq!(sa.probe_images, 9);

    let c = tempfile::tempdir().unwrap();
    render_corpus(&SynthConfig { seed: 8, ..cfg }, c.path(), &|_| {}).unwrap();
    let tc = read_tree(c.path());
    let key = "videos/id00000/clip000.mp4";
    assert_ne!(ta[key], tc[key], "a different seed gives the same video");
}

#[test]
fn layout_formats_and_splits() {
    let cfg = tiny();
    let d = tempfile::tempdir().unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    render_corpus(&cfg, d.path(), &|p| progress.lock().unwrap().push(p)).unwrap();
    let seen = progress.into_inner().unwrap();
    assert_eq!(seen.len() as u64, cfg.total_frames());
    assert!(seen.iter().any(|p| p.done == p.total));

    // Splits: three disjoint identity sets.
    let splits = std::fs::read_to_string(d.path().join("splits.txt")).unwrap();
    let mut by_split: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in splits.lines() {
        let (s, id) = line.split_once(' ').unwrap();
        assert!(
            by_split.values().all(|ids| !ids.contains(id)),
            "{id} is in two splits"
        );
        by_split.entry(s).or_default().insert(id);
    }
    assert_eq!(by_split["train"].len(), 2);
    assert_eq!(by_split["probe_train"].len(), 2);
    assert_eq!(by_split["probe_test"].len(), 1);

    // Track file: VoxCeleb2 header, one line per video frame, fractions in [0, 1].
    let track = std::fs::read_to_string(d.path().join("tracks/id00001/clip001/00001.txt")).unwrap();
    let lines: Vec<&str> = track.lines().collect();
    assert_eq!(lines[0], "Identity  : \tid00001");
    assert_eq!(lines[1], "Reference : \tclip001");
    assert_eq!(lines[6], "FRAME \tX \tY \tW \tH ");
    assert_eq!(lines.len(), 7 + 12);
    for (i, l) in lines[7..].iter().enumerate() {
        let f: Vec<&str> = l.split(" \t").collect();
        assert_eq!(f[0], format!("{i:06}"));
        let w: f32 = f[3].parse().unwrap();
        assert!(w > 0.15 && w < 0.9, "box width fraction {w}");
    }
    assert!(d.path().join("videos/id00001/clip001.mp4").is_file());

    // Probe images from probe identities only, train and test lists disjoint.
    let train = std::fs::read_to_string(d.path().join("probes/training.txt")).unwrap();
    let test = std::fs::read_to_string(d.path().join("probes/testing.txt")).unwrap();
    let idset = |s: &str| {
        s.lines()
            .map(|l| l.split('/').nth(1).unwrap()[..7].to_string())
            .collect::<BTreeSet<_>>()
    };
    let (tr, te) = (idset(&train), idset(&test));
    assert!(tr.is_disjoint(&te));
    for id in tr.iter().chain(&te) {
        assert!(
            !by_split["train"].contains(id.as_str()),
            "probe image of a training identity {id}"
        );
    }
    assert_eq!(train.lines().count(), 6);
    assert_eq!(test.lines().count(), 3);

    let celeba =
        std::fs::read_to_string(d.path().join("probes/list_landmarks_align_celeba.txt")).unwrap();
    let cl: Vec<&str> = celeba.lines().collect();
    assert_eq!(cl[0], "9");
    assert!(cl[1].starts_with("lefteye_x lefteye_y righteye_x"));
    assert_eq!(cl[2].split(' ').count(), 11);

    let first = train.lines().next().unwrap();
    assert!(first.starts_with("train/"));
    assert!(test.lines().all(|l| l.starts_with("test/")));
    let pts = std::fs::read_to_string(d.path().join("probes").join(first.replace(".png", ".pts")))
        .unwrap();
    let pl: Vec<&str> = pts.lines().collect();
    assert_eq!(&pl[..3], &["version: 1", "n_points:  68", "{"]);
    assert_eq!(pl.len(), 3 + 68 + 1);
    let img = image::open(d.path().join("probes").join(first)).unwrap();
    assert_eq!(img.width(), 64);

    let au = std::fs::read_to_string(d.path().join("probes/au.csv")).unwrap();
    let inten = std::fs::read_to_string(d.path().join("probes/au_intensity.csv")).unwrap();
    let header: Vec<&str> = au.lines().next().unwrap().split(',').collect();
    assert_eq!(header.len(), 1 + 9);
    assert_eq!(header[1], "AU01");
    assert_eq!(au.lines().next(), inten.lines().next());
    for (row, irow) in au.lines().skip(1).zip(inten.lines().skip(1)) {
        let f: Vec<&str> = row.split(',').collect();
        let g: Vec<&str> = irow.split(',').collect();
        assert_eq!(f[0], g[0]);
        for k in 1..10 {
            let bin: u8 = f[k].parse().unwrap();
            let inten: f32 = g[k].parse().unwrap();
            assert_eq!(bin == 1, inten >= 0.5, "AU column {k} of {row}");
        }
    }
    let pose = std::fs::read_to_string(d.path().join("probes/pose.csv")).unwrap();
    assert_eq!(pose.lines().next().unwrap(), "image,x,y,w,h,roll,pitch,yaw");
    assert_eq!(pose.lines().count(), 10);
}

#[test]
fn mp4_decodes_to_the_right_frame_count() {
    let mut cfg = tiny();
    cfg.identities = 1;
    cfg.clips_per_identity = 1;
    cfg.probe_train_identities = 0;
    cfg.probe_test_identities = 0;
    let d = tempfile::tempdir().unwrap();
    render_corpus(&cfg, d.path(), &|_| {}).unwrap();
    let mut dec = video_rs::Decoder::new(d.path().join("videos/id00000/clip000.mp4")).unwrap();
    let (w, h) = dec.size();
    assert_eq!((w, h), (64, 64));
    let mut n = 0;
    for f in dec.decode_raw_iter() {
        if f.is_err() {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 12);
}

#[test]
fn configs_parse_from_toml_and_reject_bad_values() {
    let cfg = SynthConfig::from_toml_str("seed = 3\nsize = 64\n", Path::new("x.toml")).unwrap();
    assert_eq!(cfg.seed, 3);
    assert_eq!(cfg.size, 64);
    assert_eq!(cfg.fps, 25);
    let round = SynthConfig::from_toml_str(&cfg.to_toml_string(), Path::new("y.toml")).unwrap();
    assert_eq!(round, cfg);
    let e = SynthConfig::from_toml_str("sise = 64\n", Path::new("bad.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("sise"), "{e}");
    let e = SynthConfig::from_toml_str("size = 63\n", Path::new("odd.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("size 63"), "{e}");
}
