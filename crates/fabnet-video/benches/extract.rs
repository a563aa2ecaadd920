//! Extraction speed against the `ffmpeg` CLI doing the same decode + crop + scale + JPEG write.
//!
//! Command: `cargo bench -p fabnet-video --bench extract` (the lead's `cargo xtask bench` runs it).
//! Writes `target/fabnet-bench/extract.json`. Environment: `FABNET_BENCH_CLIP` picks the clip
//! (default `../shared/data/real/videos/lp_d13.mp4`, 720x1280 h264, else a synthetic 640x480
//! clip), `FABNET_BENCH_REPS` the repetitions (default 3; the best time counts). It also
//! prints each side's mean CPU seconds per run, which a busy machine disturbs less than wall time.
//!
//! Both sides crop the same fixed square (the track box of a one-track file), scale it to
//! 256x256 and write high-quality JPEGs (both FFmpeg's mjpeg at `-q:v 2`), using all cores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fabnet_video::extract::{run, ExtractConfig, RunOptions};
use fabnet_video::{plan_tracked, VideoDecoder, VideoWriter};

fn clip(tmp: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("FABNET_BENCH_CLIP") {
        return PathBuf::from(p);
    }
    let real = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/real/videos/lp_d13.mp4"
    ));
    if real.is_file() {
        return real;
    }
    eprintln!("real clip absent: using a synthetic 640x480 clip");
    let path = tmp.join("synthetic.mkv");
    let mut w = VideoWriter::create(&path, 640, 480, 25.0).expect("create clip");
    for t in 0..200u32 {
        let rgb: Vec<u8> = (0..480u32)
            .flat_map(|y| {
                (0..640u32).flat_map(move |x| [(x + t) as u8, (y * 2) as u8, (x ^ y) as u8])
            })
            .collect();
        w.write(&rgb).expect("write frame");
    }
    w.finish().expect("finish clip");
    path
}

/// CPU seconds (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (Linux only; zeros elsewhere). Under load, CPU time is steadier than wall time.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 of the full line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    (get(11) + get(12), get(13) + get(14))
}

fn best_of<F: FnMut() -> f64>(reps: usize, mut f: F) -> f64 {
    (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let clip = clip(tmp.path());
    let reps: usize = std::env::var("FABNET_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let info = VideoDecoder::open(&clip).expect("open clip").info().clone();
    let frames = VideoDecoder::open(&clip).expect("open clip").count() as f64;
    let side = info.width.min(info.height) / 2;
    let (x, y) = ((info.width - side) / 2, (info.height - side) / 3);
    println!(
        "clip {} ({}x{}, {frames} frames); crop {side}x{side}+{x}+{y} -> 256x256 jpg; best of {reps}",
        clip.display(),
        info.width,
        info.height
    );

    // Our extractor on a one-track layout with a constant box.
    let (videos, tracks) = (tmp.path().join("videos"), tmp.path().join("tracks"));
    std::fs::create_dir_all(&videos).expect("mkdir");
    std::fs::create_dir_all(tracks.join("id/clip")).expect("mkdir");
    let ext = clip.extension().and_then(|e| e.to_str()).unwrap_or("mp4");
    std::fs::copy(&clip, videos.join(format!("clip.{ext}"))).expect("copy clip");
    let mut text = String::from("FRAME X Y W H\n");
    for f in 0..frames as u64 {
        text += &format!("{f} {x} {y} {side} {side}\n");
    }
    std::fs::write(tracks.join("id/clip/00001.txt"), text).expect("write track");
    let plan = plan_tracked(&videos, &tracks).expect("plan");
    let cpu0 = cpu_seconds();
    let ours_s = best_of(reps, || {
        let out = tmp.path().join("ours");
        let _ = std::fs::remove_dir_all(&out);
        let start = Instant::now();
        let summary = run(
            &plan.jobs,
            &ExtractConfig::new(&out),
            &RunOptions::default(),
        );
        let secs = start.elapsed().as_secs_f64();
        assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        assert_eq!(summary.totals.frames_written as f64, frames);
        secs
    });
    let ours = frames / ours_s;
    let cpu1 = cpu_seconds();
    let ours_cpu = (cpu1.0 - cpu0.0) / reps as f64;
    println!("ours:   {ours:8.1} frames/s ({ours_s:.3} s; {ours_cpu:.3} cpu s per run)");

    let ffmpeg_s = {
        let probe = Command::new("ffmpeg").arg("-version").output();
        if probe.is_ok_and(|o| o.status.success()) {
            Some(best_of(reps, || {
                let out = tmp.path().join("ffmpeg");
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir_all(&out).expect("mkdir");
                let start = Instant::now();
                let status = Command::new("ffmpeg")
                    .args(["-v", "error", "-threads", "0", "-i"])
                    .arg(&clip)
                    .args([
                        "-vf",
                        &format!("crop={side}:{side}:{x}:{y},scale=256:256:flags=bilinear"),
                        "-q:v",
                        "2",
                        "-start_number",
                        "0",
                    ])
                    .arg(out.join("frame%06d.jpg"))
                    .status()
                    .expect("run ffmpeg");
                let secs = start.elapsed().as_secs_f64();
                assert!(status.success(), "ffmpeg failed");
                secs
            }))
        } else {
            eprintln!("no ffmpeg CLI: reference left empty");
            None
        }
    };
    let ffmpeg_cpu = (cpu_seconds().1 - cpu1.1) / reps as f64;
    let reference = ffmpeg_s.map(|s| frames / s);
    if let Some(r) = reference {
        println!(
            "ffmpeg: {r:8.1} frames/s ({:.3} s; {ffmpeg_cpu:.3} cpu s per run)",
            frames / r
        );
        println!("ratio ours/ffmpeg: {:.2}", ours / r);
    }

    let json = serde_json::json!({
        "bench": "extract",
        "rows": [{
            "case": format!(
                "{} {}x{} {frames} frames, crop {side} -> 256 jpg",
                clip.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                info.width,
                info.height
            ),
            "ours": ours,
            "reference": reference,
            "reference_name": "ffmpeg CLI (crop,scale=256:256:flags=bilinear, -q:v 2, -threads 0)",
            "unit": "frames/s",
            "lower_is_better": false,
        }],
        "notes": format!(
            "wall clock, best of {reps}, {} cores; both sides decode, crop, scale and write jpgs; \
             mean cpu s per run: ours {ours_cpu:.3}, ffmpeg {ffmpeg_cpu:.3}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        ),
    });
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/fabnet-bench"
    ));
    std::fs::create_dir_all(&dir).expect("create target/fabnet-bench");
    let tmp_json = dir.join("extract.json.tmp");
    std::fs::write(
        &tmp_json,
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write");
    std::fs::rename(&tmp_json, dir.join("extract.json")).expect("rename");
    println!("wrote {}", dir.join("extract.json").display());
}
