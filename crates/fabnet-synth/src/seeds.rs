//! Deterministic random streams: every identity, clip and probe image draws from its own
//! ChaCha8 stream derived from (corpus seed, purpose, index), so results do not depend on
//! the order in which rayon schedules the work.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; part of the stream's seed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Identity = 1,
    Clip = 2,
    Probe = 3,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random stream for `(seed, purpose, index)`.
pub(crate) fn stream(seed: u64, purpose: Stream, index: u64) -> ChaCha8Rng {
    let s = splitmix(splitmix(seed ^ splitmix(purpose as u64)) ^ splitmix(index.wrapping_add(1)));
    ChaCha8Rng::seed_from_u64(s)
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A uniform draw in `[lo, hi)`.
pub(crate) fn uniform<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}
