//! End-to-end extraction on tiny synthetic videos written with video-rs's encoder.

use std::path::{Path, PathBuf};

use fabnet_video::extract::{run, ExtractConfig, ExtractError, RunOptions, Sampling};
use fabnet_video::{
    plan_face_videos, plan_tracked, TrackManifest, VideoDecoder, VideoError, VideoWriter,
};

const W: u32 = 128;
const H: u32 = 96;
const FRAMES: u32 = 30;
const FPS: f64 = 25.0;

/// Integer centre of the 8×8 white marker in frame `t` (it covers `[c - 4, c + 4)`).
fn marker_centre(t: u32) -> (i64, i64) {
    let x = 20 + 3 * i64::from(t);
    let y = 48 + (30.0 * (f64::from(t) / 5.0).sin()).round() as i64;
    (x, y)
}

/// The marker video: black background, white square moving right and up/down, to `path`.
///
/// Tests write Matroska: video-rs's mp4 output lacks the last packet's duration, so FFmpeg's
/// edit-list handling drops the final frame of such mp4s.
fn write_marker_video(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = VideoWriter::create(path, W, H, FPS).unwrap();
    for t in 0..FRAMES {
        let (cx, cy) = marker_centre(t);
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        for y in cy - 4..cy + 4 {
            for x in cx - 4..cx + 4 {
                let i = ((y * i64::from(W) + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        writer.write(&rgb).unwrap();
    }
    writer.finish().unwrap();
}

/// Track box of frame `t`: centred on the marker, size changing over time.
fn track_box(t: u32) -> (f64, f64, f64, f64) {
    let (cx, cy) = marker_centre(t);
    let (w, h) = (40.0 + f64::from(t), 30.0 + f64::from(t) / 2.0);
    (cx as f64 - w / 2.0, cy as f64 - h / 2.0, w, h)
}

const HEADER: &str = "Identity  : \tidA\nReference : \tvidA\nOffset    : \t1\nFV Conf   : \t16.6\t(1)\nASD Conf  : \t4.5\n\nFRAME \tX \tY \tW \tH \n";

/// A track file over frames `range` whose numbers are shifted by `offset`, in pixels or
/// fractions of the frame.
fn track_text(range: std::ops::Range<u32>, offset: u32, fractions: bool) -> String {
    let mut s = HEADER.to_string();
    for t in range {
        let (x, y, w, h) = track_box(t.min(FRAMES - 1));
        if fractions {
            let (fw, fh) = (f64::from(W), f64::from(H));
            s += &format!(
                "{:06} \t{:.6} \t{:.6} \t{:.6} \t{:.6} \n",
                t + offset,
                x / fw,
                y / fh,
                w / fw,
                h / fh
            );
        } else {
            s += &format!("{:06} \t{x} \t{y} \t{w} \t{h} \n", t + offset);
        }
    }
    s
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn manifest(dir: &Path) -> TrackManifest {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn quiet() -> RunOptions {
    RunOptions::default()
}

/// Intensity-weighted centroid of the bright pixels, in pixel-index coordinates.
fn centroid(img: &image::RgbImage) -> (f64, f64) {
    let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        let w = (f64::from(p.0[0]) - 64.0).max(0.0);
        sx += w * f64::from(x);
        sy += w * f64::from(y);
        sw += w;
    }
    assert!(sw > 0.0, "no marker in the crop");
    (sx / sw, sy / sw)
}

#[test]
fn marker_is_centred_in_every_crop_for_both_track_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    write_marker_video(&videos.join("idA/vidA.mkv"));
    // Frame numbers index a longer original: 100 frames before our excerpt.
    write(
        &tracks.join("idA/vidA/00001.txt"),
        &track_text(0..FRAMES, 100, false),
    );
    write(
        &tracks.join("idA/vidA/00002.txt"),
        &track_text(0..FRAMES, 100, true),
    );
    let plan = plan_tracked(&videos, &tracks).unwrap();
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let mut config = ExtractConfig::new(&out);
    config.size = 64;
    config.scale = 1.3;
    config.frame_offset = 100;
    config.format = fabnet_video::ImageFormat::Png;
    let summary = run(&plan.jobs, &config, &quiet());
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.totals.tracks_written, 2);
    assert_eq!(summary.totals.frames_written, 2 * u64::from(FRAMES));

    let m1 = manifest(&out.join("idA/vidA/00001"));
    let m2 = manifest(&out.join("idA/vidA/00002"));
    assert_eq!(m1.unit, Some(fabnet_video::BoxUnit::Pixels));
    assert_eq!(m2.unit, Some(fabnet_video::BoxUnit::Fractions));
    assert_eq!((m1.frame_count, m2.frame_count), (30, 30));
    for (a, b) in m1.frames.iter().zip(&m2.frames) {
        let (ba, bb) = (a.track_box.unwrap(), b.track_box.unwrap());
        assert!(
            (ba.x - bb.x).abs() < 1e-3 && (ba.w - bb.w).abs() < 1e-3,
            "{ba:?} {bb:?}"
        );
        assert_eq!(a.video_frame + 100, a.track_frame.unwrap());
    }
    // Frames near the right edge have windows past the frame: the padding path is exercised.
    assert!(m1
        .frames
        .iter()
        .any(|f| f.window.x + f.window.w > f64::from(W)));

    for track in ["00001", "00002"] {
        for t in 0..FRAMES {
            let path = out.join(format!("idA/vidA/{track}/frame{t:06}.png"));
            let img = image::open(&path).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (64, 64));
            let (x, y) = centroid(&img);
            // The window centre is output coordinate 32, i.e. index 31.5.
            assert!(
                (x - 31.5).abs() <= 1.0 && (y - 31.5).abs() <= 1.0,
                "{}: marker at ({x:.2}, {y:.2})",
                path.display()
            );
        }
    }
}

#[test]
fn bad_videos_fail_by_name_while_good_ones_are_extracted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("faces");
    let good = root.join("good/v/00001.mkv");
    write_marker_video(&good);

    let corrupt = root.join("corrupt/v/00001.mp4");
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&corrupt, "");
    std::fs::write(&corrupt, noise).unwrap();

    // An mp4 with its index at the end, cut in half: the index is gone.
    let whole = tmp.path().join("whole.mp4");
    write_marker_video(&whole);
    let bytes = std::fs::read(&whole).unwrap();
    let truncated_tail = root.join("cut_tail/v/00001.mp4");
    write(&truncated_tail, "");
    std::fs::write(&truncated_tail, &bytes[..bytes.len() / 2]).unwrap();

    // An mp4 with its index at the front (as web videos have it), cut at 90 %: the index
    // promises frames whose data is missing.
    let front = tmp.path().join("front.mp4");
    let remuxed = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&good)
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&front)
        .status()
        .is_ok_and(|s| s.success());
    let truncated_front = root.join("cut_front/v/00001.mp4");
    if remuxed {
        let front_bytes = std::fs::read(&front).unwrap();
        write(&truncated_front, "");
        std::fs::write(&truncated_front, &front_bytes[..front_bytes.len() * 9 / 10]).unwrap();
        let decoded: Result<Vec<_>, _> = VideoDecoder::open(&truncated_front)
            .unwrap_or_else(|e| panic!("{e}"))
            .collect();
        match decoded {
            Err(VideoError::Corrupt { path, .. })
            | Err(VideoError::Truncated { path, .. })
            | Err(VideoError::Read { path, .. }) => assert_eq!(path, truncated_front),
            other => panic!(
                "front-indexed truncated video: {:?}",
                other.map(|v| v.len())
            ),
        }
    } else {
        eprintln!("no ffmpeg CLI: skipping the front-indexed truncated mp4");
    }

    let empty = root.join("empty/v/00001.mp4");
    write(&empty, "");

    match VideoDecoder::open(&corrupt) {
        Err(VideoError::Open { path, .. }) => assert_eq!(path, corrupt),
        other => panic!("corrupt video: {:?}", other.err()),
    }
    match VideoDecoder::open(&truncated_tail) {
        Err(VideoError::Open { path, .. }) => assert_eq!(path, truncated_tail),
        other => panic!("tail-indexed truncated video: {:?}", other.err()),
    }

    let plan = plan_face_videos(&root).unwrap();
    let out = tmp.path().join("out");
    let summary = run(&plan.jobs, &ExtractConfig::new(&out), &quiet());
    let failed: Vec<&PathBuf> = summary.failures.iter().map(|f| &f.path).collect();
    let mut expected = vec![&truncated_tail, &corrupt, &empty];
    if remuxed {
        expected.push(&truncated_front);
    }
    expected.sort();
    assert_eq!(plan.jobs.len(), expected.len() + 1);
    assert_eq!(failed, expected);
    for f in &summary.failures {
        assert!(matches!(f.error, ExtractError::Video(_)), "{}", f.error);
        let message = f.error.to_string();
        assert!(message.contains(&f.path.display().to_string()), "{message}");
    }
    assert_eq!(summary.videos_ok, 1);
    assert_eq!(
        manifest(&out.join("good/v/00001")).frame_count,
        FRAMES as usize
    );
    // Failed videos leave nothing behind, not even hidden partial folders.
    for name in ["corrupt", "cut_tail", "cut_front", "empty"] {
        let dir = out.join(name).join("v");
        let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{}", dir.display());
    }
}

#[test]
fn stopped_run_resumes_without_redoing_finished_tracks() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    for v in ["vidA", "vidB"] {
        write_marker_video(&videos.join(format!("idA/{v}.mkv")));
        for (k, range) in [(1, 0..10), (2, 10..20), (3, 20..30)] {
            write(
                &tracks.join(format!("idA/{v}/{k:05}.txt")),
                &track_text(range, 0, false),
            );
        }
    }
    let plan = plan_tracked(&videos, &tracks).unwrap();
    let config = ExtractConfig::new(&out);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let stop = RunOptions {
        stop_after_tracks: Some(2),
        ..Default::default()
    };
    let first = pool.install(|| run(&plan.jobs, &config, &stop));
    assert_eq!(first.totals.tracks_written, 2);
    assert!(first
        .failures
        .iter()
        .all(|f| matches!(f.error, ExtractError::Cancelled { .. })));

    let visible = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // Every visible track is complete: manifest plus its 10 frames.
    let done = visible(&out.join("idA/vidA"));
    assert_eq!(done, ["00001", "00002"]);
    assert!(visible(&out.join("idA/vidB")).is_empty());
    let mut stamps = Vec::new();
    for t in &done {
        let dir = out.join("idA/vidA").join(t);
        assert_eq!(manifest(&dir).frame_count, 10);
        assert_eq!(visible(&dir).len(), 11);
        stamps.push(
            std::fs::metadata(dir.join("manifest.json"))
                .unwrap()
                .modified()
                .unwrap(),
        );
    }

    let second = run(&plan.jobs, &config, &quiet());
    assert!(second.failures.is_empty(), "{:?}", second.failures);
    assert_eq!(second.totals.tracks_skipped, 2);
    assert_eq!(second.totals.tracks_written, 4);
    for (t, stamp) in done.iter().zip(stamps) {
        let m = out.join("idA/vidA").join(t).join("manifest.json");
        assert_eq!(std::fs::metadata(m).unwrap().modified().unwrap(), stamp);
    }
    for v in ["vidA", "vidB"] {
        // No partial folders are left once everything is done.
        let all: Vec<_> = std::fs::read_dir(out.join("idA").join(v))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            visible(&out.join("idA").join(v)),
            ["00001", "00002", "00003"]
        );
        for t in 1..=3 {
            let m = manifest(&out.join(format!("idA/{v}/{t:05}")));
            assert_eq!(m.frame_count, 10);
            assert_eq!(m.frames[0].video_frame, (t - 1) * 10);
        }
    }
}

#[test]
fn frames_beyond_the_end_are_counted_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    write_marker_video(&videos.join("vidA.mkv"));
    write(
        &tracks.join("idA/vidA/00001.txt"),
        &track_text(20..40, 0, false),
    );
    let plan = plan_tracked(&videos, &tracks).unwrap();
    let summary = run(&plan.jobs, &ExtractConfig::new(&out), &quiet());
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.totals.frames_written, 10);
    assert_eq!(summary.totals.frames_missing, 10);
    let m = manifest(&out.join("idA/vidA/00001"));
    assert_eq!((m.frame_count, m.missing_frames), (10, 10));
    assert_eq!(m.frames.last().unwrap().video_frame, 29);
}

#[test]
fn subsampling_every_k_and_fps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("faces");
    write_marker_video(&root.join("idA/vidA/00001.mkv"));
    let plan = plan_face_videos(&root).unwrap();
    for (sampling, expected) in [
        (Sampling::Every(4), vec![0, 4, 8, 12, 16, 20, 24, 28]),
        (Sampling::Fps(5.0), vec![0, 5, 10, 15, 20, 25]),
        (Sampling::All, (0..30).collect()),
    ] {
        let out = tmp.path().join(format!("out-{sampling:?}"));
        let mut config = ExtractConfig::new(&out);
        config.sampling = sampling;
        config.size = 32;
        let summary = run(&plan.jobs, &config, &quiet());
        assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        let m = manifest(&out.join("idA/vidA/00001"));
        let got: Vec<u64> = m.frames.iter().map(|f| f.video_frame).collect();
        assert_eq!(got, expected, "{sampling:?}");
        for f in &m.frames {
            let img = image::open(out.join("idA/vidA/00001").join(&f.file)).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
    }
}

/// Other containers and codecs (transcoded with the `ffmpeg` CLI when it has the encoder):
/// every frame decodes, and the marker sits where it was drawn.
#[test]
fn webm_vp9_and_mov_hevc_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("marker.mkv");
    write_marker_video(&source);
    for (name, codec) in [("marker.webm", "libvpx-vp9"), ("marker.mov", "libx265")] {
        let path = tmp.path().join(name);
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&source)
            .args(["-c:v", codec, "-crf", "10"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            eprintln!("skipping {name}: no ffmpeg CLI with {codec}");
            continue;
        }
        let frames: Vec<_> = VideoDecoder::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(frames.len(), FRAMES as usize, "{name}");
        for f in frames.iter().step_by(7) {
            let img = image::RgbImage::from_raw(f.width, f.height, f.data.clone()).unwrap();
            let (x, y) = centroid(&img);
            let (cx, cy) = marker_centre(f.index as u32);
            // Pixel-index centroid of a square covering [c - 4, c + 4) is c - 0.5.
            assert!(
                (x - (cx as f64 - 0.5)).abs() < 0.5 && (y - (cy as f64 - 0.5)).abs() < 0.5,
                "{name} frame {}: ({x:.2}, {y:.2}) vs ({cx}, {cy})",
                f.index
            );
        }
    }
}

/// Boxes in the wrong unit (fractions read as pixels and vice versa) never hang or panic: tiny
/// windows are resampled, huge ones are skipped and counted.
#[test]
fn wrong_units_are_survived() {
    let tmp = tempfile::tempdir().unwrap();
    let (videos, tracks, out) = (
        tmp.path().join("videos"),
        tmp.path().join("tracks"),
        tmp.path().join("out"),
    );
    write_marker_video(&videos.join("vidA.mkv"));
    write(
        &tracks.join("idA/vidA/00001.txt"),
        &track_text(0..5, 0, true),
    );
    let mut huge = String::from("FRAME X Y W H\n");
    for f in 0..5 {
        huge += &format!("{f} 1e12 -3e11 5e12 5e12\n");
    }
    write(&tracks.join("idA/vidA/00002.txt"), &huge);
    let plan = plan_tracked(&videos, &tracks).unwrap();
    let mut config = ExtractConfig::new(&out);
    config.unit = fabnet_video::UnitChoice::Force(fabnet_video::BoxUnit::Pixels);
    config.size = 16;
    let summary = run(&plan.jobs, &config, &quiet());
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(manifest(&out.join("idA/vidA/00001")).frame_count, 5);
    assert_eq!(summary.totals.tracks_empty, 1);
    assert_eq!(summary.totals.frames_missing, 5);
    assert!(!out.join("idA/vidA/00002").exists());
}
