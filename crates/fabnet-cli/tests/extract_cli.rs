//! The `fabnet extract` binary on tiny synthetic videos: exit status, failure summary, and
//! resuming after the process is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fabnet_video::VideoWriter;

const W: u32 = 96;
const H: u32 = 64;

/// A video with a bright square drifting right; `frames` frames at 25 fps, Matroska.
fn write_video(path: &Path, frames: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = VideoWriter::create(path, W, H, 25.0).unwrap();
    for t in 0..frames {
        let mut rgb = vec![20u8; (W * H * 3) as usize];
        let x0 = (10 + t) % (W - 10);
        for y in 20..30 {
            for x in x0..x0 + 10 {
                let i = ((y * W + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[250, 200, 100]);
            }
        }
        w.write(&rgb).unwrap();
    }
    w.finish().unwrap();
}

/// A VoxCeleb2-style track file (fractions) over `frames`.
fn write_track(path: &Path, frames: std::ops::Range<u32>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut s = String::from("Identity  : \tid00001\nReference : \tv\nOffset    : \t1\nFV Conf   : \t10.0\t(1)\nASD Conf  : \t3.0\n\nFRAME \tX \tY \tW \tH \n");
    for f in frames {
        s += &format!("{f:06} \t0.250 \t0.200 \t0.400 \t0.500 \n");
    }
    std::fs::write(path, s).unwrap();
}

fn fabnet(args: &[&str], dirs: &[&Path]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabnet"));
    cmd.arg("extract").arg("--no-progress");
    let mut it = dirs.iter();
    // Each "DIR" placeholder takes the next of `dirs`.
    for a in args {
        if *a == "DIR" {
            cmd.arg(it.next().unwrap());
        } else {
            cmd.arg(a);
        }
    }
    cmd
}

fn run(args: &[&str], dirs: &[&Path]) -> Output {
    fabnet(args, dirs).output().unwrap()
}

fn visible_tracks(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for id in std::fs::read_dir(out).into_iter().flatten().flatten() {
        for video in std::fs::read_dir(id.path()).into_iter().flatten().flatten() {
            for track in std::fs::read_dir(video.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = track.file_name();
                if !name.to_string_lossy().starts_with('.') {
                    found.push(track.path());
                }
            }
        }
    }
    found.sort();
    found
}

/// A visible track is whole: its manifest lists exactly the image files in the folder.
fn assert_complete(track: &Path) {
    let text = std::fs::read_to_string(track.join("manifest.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", track.display()));
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let listed = m["frames"].as_array().unwrap().len();
    let images = std::fs::read_dir(track)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jpg"))
        .count();
    assert_eq!(m["frame_count"].as_u64().unwrap() as usize, listed);
    assert_eq!(images, listed, "{}", track.display());
    assert!(listed > 0);
}

#[test]
fn tracked_run_reports_bad_videos_and_malformed_tracks_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    write_video(&videos.join("id1/good.mkv"), 20);
    write_track(&tracks.join("id1/good/00001.txt"), 0..20);
    let ok = run(
        &[
            "--tracks", "DIR", "--videos", "DIR", "--out", "DIR", "--size", "32",
        ],
        &[&tracks, &videos, &out],
    );
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("1 written"), "{stderr}");
    assert_complete(&out.join("id1/good/00001"));

    // Add a corrupt video and a malformed track file to the same tree.
    let bad = videos.join("id1/bad.mp4");
    std::fs::write(&bad, b"this is not a video at all").unwrap();
    write_track(&tracks.join("id1/bad/00001.txt"), 0..5);
    write_video(&videos.join("id2/other.mkv"), 10);
    write_track(&tracks.join("id2/other/00001.txt"), 0..10);
    let broken = tracks.join("id2/other/00002.txt");
    std::fs::write(&broken, "FRAME X Y W H\n000001 0.1 0.1 0.2\n").unwrap();
    let mixed = run(
        &[
            "--tracks", "DIR", "--videos", "DIR", "--out", "DIR", "--size", "32",
        ],
        &[&tracks, &videos, &out],
    );
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert_eq!(mixed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("extraction failures (2)"), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2: expected 5 fields", broken.display())),
        "{stderr}"
    );
    // The good track of the other video is still extracted; the first one is skipped.
    assert_complete(&out.join("id2/other/00001"));
    assert!(stderr.contains("1 written, 1 already done"), "{stderr}");
}

#[test]
fn face_video_mode_writes_every_kth_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (faces, out) = (tmp.path().join("faces"), tmp.path().join("out"));
    write_video(&faces.join("id1/v1/00001.mkv"), 12);
    let o = run(
        &[
            "--face-videos",
            "DIR",
            "--out",
            "DIR",
            "--every",
            "5",
            "--format",
            "png",
        ],
        &[&faces, &out],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(out.join("id1/v1/00001"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "frame000000.png",
            "frame000005.png",
            "frame000010.png",
            "manifest.json"
        ]
    );
}

#[test]
fn killed_run_leaves_no_half_track_and_rerun_finishes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    for v in 0..4 {
        write_video(&videos.join(format!("id1/v{v}.mkv")), 90);
        for t in 0..3u32 {
            write_track(
                &tracks.join(format!("id1/v{v}/{:05}.txt", t + 1)),
                t * 30..t * 30 + 30,
            );
        }
    }
    let args = [
        "--tracks",
        "DIR",
        "--videos",
        "DIR",
        "--out",
        "DIR",
        "--jobs",
        "1",
        "--decode-threads",
        "1",
        "--size",
        "256",
    ];
    let mut child = fabnet(&args, &[&tracks, &videos, &out])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while visible_tracks(&out).is_empty() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = visible_tracks(&out);
    assert!(!before.is_empty(), "no track finished within a minute");
    eprintln!("killed after {} of 12 tracks", before.len());
    for t in &before {
        assert_complete(t);
    }
    let stamps: Vec<_> = before
        .iter()
        .map(|t| {
            std::fs::metadata(t.join("manifest.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();

    let rerun = run(&args, &[&tracks, &videos, &out]);
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    let skipped = format!(
        "{} written, {} already done",
        12 - before.len(),
        before.len()
    );
    assert!(
        stderr.contains(&skipped),
        "expected `{skipped}` in {stderr}"
    );
    let after = visible_tracks(&out);
    assert_eq!(after.len(), 12);
    for t in &after {
        assert_complete(t);
    }
    for (t, stamp) in before.iter().zip(stamps) {
        let now = std::fs::metadata(t.join("manifest.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(now, stamp, "{} was rewritten", t.display());
    }
    // Partial folders of the killed run are gone.
    for v in 0..4 {
        let dir = out.join(format!("id1/v{v}"));
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 3);
    }
}
