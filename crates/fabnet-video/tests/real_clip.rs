//! Decoding real clips from `../shared/data/real/videos` (skipped with a notice when absent).
//!
//! Expected frame counts and sizes were measured with
//! `ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames,width,height`.

use std::path::PathBuf;
use std::process::Command;

use fabnet_video::{Frame, Region, VideoDecoder};

fn real_video(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/real/videos"
    ))
    .join(name);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipping: real clip {} is absent", path.display());
        None
    }
}

/// FNV-1a, 64 bit: a stable checksum with no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn decode_all(path: &std::path::Path) -> Vec<Frame> {
    VideoDecoder::open(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn real_mp4_matches_ffprobe_and_checksum() {
    let Some(path) = real_video("lia_driving2.mp4") else {
        return;
    };
    let decoder = VideoDecoder::open(&path).unwrap();
    let info = decoder.info().clone();
    assert_eq!((info.width, info.height), (256, 256));
    assert_eq!(info.fps, 25.0);
    assert_eq!(info.codec, "h264");
    assert_eq!(info.declared_frames, Some(221));
    let frames = decode_all(&path);
    // ffprobe -count_frames: 221 frames, 256x256.
    assert_eq!(frames.len(), 221);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!((f.width, f.height, f.data.len()), (256, 256, 256 * 256 * 3));
    }
    assert!(
        (frames[100].time_s - 4.0).abs() < 1e-9,
        "{}",
        frames[100].time_s
    );
    assert_eq!(fnv1a(&frames[100].data), CHECKSUM_LIA_DRIVING2_FRAME100);
}

/// FNV-1a of frame 100 of lia_driving2.mp4 as RGB8, measured with this decoder on x86-64 with
/// FFmpeg 5.1. The colour conversion is swscale's; should a different FFmpeg change it, the
/// exact comparison with the `ffmpeg` CLI below still tells whether decoding is right.
const CHECKSUM_LIA_DRIVING2_FRAME100: u64 = 9593875764526754470;

#[test]
fn real_mov_matches_ffprobe() {
    let Some(path) = real_video("lia_driving3.mov") else {
        return;
    };
    let frames = decode_all(&path);
    // ffprobe -count_frames: 446 frames, 256x256, 24 fps.
    assert_eq!(frames.len(), 446);
    assert!(frames.iter().all(|f| (f.width, f.height) == (256, 256)));
    assert!(
        (frames[48].time_s - 2.0).abs() < 1e-9,
        "{}",
        frames[48].time_s
    );
}

/// Our RGB frame equals the `ffmpeg` CLI's rgb24 output of the same frame when the CLI converts
/// with the same swscale flags.
#[test]
fn real_non_square_frame_agrees_with_ffmpeg_cli() {
    let Some(path) = real_video("pyfeat_single_face.mp4") else {
        return;
    };
    let frames = decode_all(&path);
    // ffprobe -count_frames: 72 frames, 640x360.
    assert_eq!(frames.len(), 72);
    let ours = &frames[40];
    assert_eq!((ours.width, ours.height), (640, 360));
    let Ok(out) = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args([
            "-vf",
            "select=eq(n\\,40),scale=flags=bilinear",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
    else {
        eprintln!("skipping the comparison: no ffmpeg CLI");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), ours.data.len());
    let differing = ours
        .data
        .iter()
        .zip(&out.stdout)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "bytes differing from the ffmpeg CLI");
}

/// Converting only a region (the fast path of tracked extraction) gives the same pixels as
/// converting the whole frame and cutting the region out.
#[test]
fn real_region_equals_the_cut_of_the_full_frame() {
    let Some(path) = real_video("pyfeat_single_face.mp4") else {
        return;
    };
    let full = decode_all(&path);
    let mut decoder = VideoDecoder::open(&path).unwrap();
    let asked = Region {
        left: 101,
        top: 57,
        width: 200,
        height: 150,
    };
    let mut regions = Vec::new();
    while let Some(f) = decoder
        .next_region(&mut |i| (i % 10 == 3).then_some(asked))
        .unwrap()
    {
        regions.push(f);
    }
    assert_eq!(regions.len(), 7);
    for r in &regions {
        // Columns widened to multiples of 16, rows to the 4:2:0 chroma grid.
        assert_eq!((r.left, r.top, r.width, r.height), (96, 56, 208, 152));
        let f = &full[r.index as usize];
        assert_eq!(r.time_s, f.time_s);
        for y in 0..r.height {
            let src = ((r.top + y) * f.width + r.left) as usize * 3;
            let dst = (y * r.width) as usize * 3;
            let n = r.width as usize * 3;
            assert_eq!(
                &r.data[dst..dst + n],
                &f.data[src..src + n],
                "frame {} row {y}",
                r.index
            );
        }
    }
    // A region reaching past the frame is clamped to it.
    let mut decoder = VideoDecoder::open(&path).unwrap();
    let edge = Region {
        left: 600,
        top: 300,
        width: 100,
        height: 100,
    };
    let f = decoder.next_region(&mut |_| Some(edge)).unwrap().unwrap();
    assert_eq!((f.left, f.top, f.width, f.height), (592, 300, 48, 60));
}
