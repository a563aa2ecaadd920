//! Corpus generation throughput at 128×128 (render with 2× supersampling, H.264 encoding
//! and ground-truth files), all cores through rayon. Goal: at least 100 frames/s on the
//! 2-core reference machine.
//!
//! Run: `cargo bench -p fabnet-synth --bench synth` (set `FABNET_BENCH_FRAMES` to change
//! the frames per clip, default 100). Writes `target/fabnet-bench/synth.json`.

use std::time::Instant;

use fabnet_synth::{render_corpus, FrameParams, Head, IdentityParams, Renderer, SynthConfig};

fn main() {
    let frames: usize = std::env::var("FABNET_BENCH_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let threads = rayon::current_num_threads();

    // Single-thread render cost (no encoding), for the breakdown.
    let head = Head::new(&IdentityParams::from_seed(1, 0));
    let mut r = Renderer::new(128, 2);
    let fp = FrameParams::frontal();
    let n = frames.max(10);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(r.render(&head, &fp));
    }
    let render_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;

    let cfg = SynthConfig {
        seed: 1,
        identities: 4,
        clips_per_identity: 2,
        frames_per_clip: frames,
        size: 128,
        probe_train_identities: 0,
        probe_test_identities: 0,
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let s = render_corpus(&cfg, dir.path(), &|_| {}).expect("render corpus");
    let fps = s.images_per_second;
    println!("synth 128x128: {fps:.1} frames/s end to end ({} frames, {threads} threads); render alone {render_ms:.2} ms/frame on one thread", s.video_frames);

    let json = serde_json::json!({
        "bench": "synth",
        "rows": [
            {"case": "corpus 128x128, render+encode+truth, all threads", "ours": fps, "reference": null,
             "reference_name": "goal: >= 100 frames/s on 2 cores", "unit": "frames/s", "lower_is_better": false},
            {"case": "render 128x128 (2x supersampling), one thread", "ours": render_ms, "reference": null,
             "reference_name": "none", "unit": "ms/frame", "lower_is_better": true}
        ],
        "notes": format!("{threads} rayon threads; {} frames in {} clips; no reference implementation exists (goal 100 frames/s)", s.video_frames, s.videos),
    });
    let out = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/fabnet-bench"
    ));
    std::fs::create_dir_all(out).expect("bench dir");
    std::fs::write(
        out.join("synth.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write synth.json");
}
