//! Shared fixtures of the training tests: a frame tree whose tracks show one
//! textured scene per identity under known per-frame translations, so that a
//! warp can explain the difference between two frames of a track.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Side of the generated frames, pixels.
pub const FRAME: u32 = 64;
/// Largest translation between a frame and the scene centre, pixels.
pub const SHIFT: i64 = 10;

/// A smooth random scene of `side` pixels: a colour gradient and a few
/// Gaussian blobs of random colours.
fn scene(rng: &mut ChaCha8Rng, side: u32) -> RgbImage {
    let base: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    let tilt: [f32; 3] = [
        rng.random::<f32>() - 0.5,
        rng.random::<f32>() - 0.5,
        rng.random::<f32>() - 0.5,
    ];
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..7)
        .map(|_| {
            (
                rng.random::<f32>() * side as f32,
                rng.random::<f32>() * side as f32,
                4.0 + rng.random::<f32>() * 10.0,
                [rng.random(), rng.random(), rng.random()],
            )
        })
        .collect();
    RgbImage::from_fn(side, side, |x, y| {
        let mut c = [0f32; 3];
        for k in 0..3 {
            c[k] = base[k] * 0.5 + tilt[k] * (x as f32 / side as f32 - 0.5);
        }
        for (bx, by, r, col) in &blobs {
            let d2 = (x as f32 - bx).powi(2) + (y as f32 - by).powi(2);
            let w = (-d2 / (2.0 * r * r)).exp();
            for k in 0..3 {
                c[k] = c[k] * (1.0 - w) + col[k] * w;
            }
        }
        Rgb(c.map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8))
    })
}

/// Writes `identities` identities with one video of `tracks` tracks of
/// `frames` frames each; every frame is a window of a scene at a random
/// offset of up to ±[`SHIFT`] pixels. With `shared_scene` every identity
/// films the same scene (so a short run can learn to register it), else each
/// has its own.
pub fn write_moving_tree(
    root: &Path,
    identities: usize,
    tracks: usize,
    frames: usize,
    seed: u64,
    shared_scene: bool,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let margin = SHIFT as u32;
    let common = scene(&mut rng, FRAME + 2 * margin);
    for id in 0..identities {
        let world = if shared_scene {
            common.clone()
        } else {
            scene(&mut rng, FRAME + 2 * margin)
        };
        for track in 0..tracks {
            let dir = root.join(format!("id{id:05}/vid00/{track:05}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 1..=frames {
                let dx = rng.random_range(-SHIFT..=SHIFT);
                let dy = rng.random_range(-SHIFT..=SHIFT);
                let x0 = (i64::from(margin) + dx) as u32;
                let y0 = (i64::from(margin) + dy) as u32;
                let frame = image::imageops::crop_imm(&world, x0, y0, FRAME, FRAME).to_image();
                frame.save(dir.join(format!("frame{f:06}.png"))).unwrap();
            }
        }
    }
}
