//! Identity parameters: the shape and colours that make one synthetic person.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::math::mix3;
use crate::seeds::{self, uniform, Stream};

/// Shape and colour of one synthetic person. Shape factors are multipliers around 1
/// (1 = the average head); colours are RGB in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentityParams {
    /// Head width factor (x).
    pub face_width: f32,
    /// Head length factor (y).
    pub face_length: f32,
    /// Jaw width relative to the cheeks, in [0.7, 1.0].
    pub jaw_width: f32,
    /// Chin protrusion offset in head units (±0.06).
    pub chin: f32,
    /// Nose length factor.
    pub nose_length: f32,
    /// Nose width factor.
    pub nose_width: f32,
    /// Nose protrusion factor.
    pub nose_depth: f32,
    /// Eye spacing factor.
    pub eye_spacing: f32,
    /// Eye size factor.
    pub eye_size: f32,
    /// Mouth width factor.
    pub mouth_width: f32,
    /// Lip thickness factor.
    pub lip_fullness: f32,
    /// Eyebrow thickness factor.
    pub brow_thickness: f32,
    /// Eyebrow height offset in radians of latitude (±0.03).
    pub brow_height: f32,
    /// Ear size factor.
    pub ear_size: f32,
    /// Hairline height offset in radians of latitude; large values mean a receding hairline.
    pub hairline: f32,
    /// Hair volume in head units (0 = shaved).
    pub hair_volume: f32,
    /// Whether the hair reaches below the ears at the back and sides.
    pub long_hair: bool,
    /// Skin albedo.
    pub skin: [f32; 3],
    /// Iris colour.
    pub iris: [f32; 3],
    /// Hair colour (eyebrows are a darker shade of it).
    pub hair: [f32; 3],
    /// Lip colour.
    pub lips: [f32; 3],
}

const SKIN_TONES: [[f32; 3]; 6] = [
    [0.97, 0.82, 0.72],
    [0.93, 0.75, 0.63],
    [0.84, 0.64, 0.52],
    [0.68, 0.50, 0.39],
    [0.50, 0.36, 0.27],
    [0.34, 0.24, 0.18],
];

const IRIS_COLOURS: [[f32; 3]; 6] = [
    [0.30, 0.17, 0.08],
    [0.16, 0.09, 0.05],
    [0.28, 0.42, 0.62],
    [0.30, 0.42, 0.28],
    [0.42, 0.46, 0.50],
    [0.42, 0.32, 0.15],
];

const HAIR_COLOURS: [[f32; 3]; 7] = [
    [0.05, 0.04, 0.04],
    [0.16, 0.10, 0.06],
    [0.30, 0.19, 0.10],
    [0.70, 0.55, 0.32],
    [0.50, 0.22, 0.09],
    [0.62, 0.62, 0.62],
    [0.10, 0.08, 0.07],
];

impl IdentityParams {
    /// The average head: every factor 1, mid skin tone, brown eyes, dark brown hair.
    pub fn average() -> Self {
        Self {
            face_width: 1.0,
            face_length: 1.0,
            jaw_width: 0.85,
            chin: 0.0,
            nose_length: 1.0,
            nose_width: 1.0,
            nose_depth: 1.0,
            eye_spacing: 1.0,
            eye_size: 1.0,
            mouth_width: 1.0,
            lip_fullness: 1.0,
            brow_thickness: 1.0,
            brow_height: 0.0,
            ear_size: 1.0,
            hairline: 0.0,
            hair_volume: 0.08,
            long_hair: false,
            skin: SKIN_TONES[1],
            iris: IRIS_COLOURS[0],
            hair: HAIR_COLOURS[1],
            lips: [0.72, 0.38, 0.36],
        }
    }

    /// Draws identity number `index` of the corpus with seed `seed`.
    pub fn from_seed(seed: u64, index: u64) -> Self {
        let mut r = seeds::stream(seed, Stream::Identity, index);
        // Skewed towards lighter tones, roughly as in VoxCeleb, with every tone represented.
        let tone = uniform(&mut r, 0.0, 1.0).powf(1.5) * (SKIN_TONES.len() - 1) as f32;
        let i = (tone.floor() as usize).min(SKIN_TONES.len() - 2);
        let skin = mix3(SKIN_TONES[i], SKIN_TONES[i + 1], tone - i as f32);
        let jitter = |r: &mut rand_chacha::ChaCha8Rng, c: [f32; 3], a: f32| -> [f32; 3] {
            let k = uniform(r, 1.0 - a, 1.0 + a);
            [
                (c[0] * k * uniform(r, 0.95, 1.05)).clamp(0.0, 1.0),
                (c[1] * k * uniform(r, 0.95, 1.05)).clamp(0.0, 1.0),
                (c[2] * k * uniform(r, 0.95, 1.05)).clamp(0.0, 1.0),
            ]
        };
        let iris_base = IRIS_COLOURS[r.random_range(0..IRIS_COLOURS.len())];
        let iris = jitter(&mut r, iris_base, 0.15);
        let hair_base = HAIR_COLOURS[r.random_range(0..HAIR_COLOURS.len())];
        let hair = jitter(&mut r, hair_base, 0.15);
        let lip_base = [skin[0] * 0.86, skin[1] * 0.55, skin[2] * 0.58];
        let lips = jitter(&mut r, lip_base, 0.08);
        let bald = r.random::<f32>() < 0.08;
        Self {
            face_width: uniform(&mut r, 0.9, 1.1),
            face_length: uniform(&mut r, 0.92, 1.08),
            jaw_width: uniform(&mut r, 0.72, 0.98),
            chin: uniform(&mut r, -0.06, 0.06),
            nose_length: uniform(&mut r, 0.82, 1.2),
            nose_width: uniform(&mut r, 0.8, 1.3),
            nose_depth: uniform(&mut r, 0.8, 1.2),
            eye_spacing: uniform(&mut r, 0.92, 1.08),
            eye_size: uniform(&mut r, 0.88, 1.12),
            mouth_width: uniform(&mut r, 0.85, 1.15),
            lip_fullness: uniform(&mut r, 0.75, 1.3),
            brow_thickness: uniform(&mut r, 0.6, 1.5),
            brow_height: uniform(&mut r, -0.03, 0.03),
            ear_size: uniform(&mut r, 0.88, 1.12),
            hairline: if bald {
                0.5
            } else {
                uniform(&mut r, -0.08, 0.12)
            },
            hair_volume: if bald {
                0.0
            } else {
                uniform(&mut r, 0.03, 0.16)
            },
            long_hair: !bald && r.random::<f32>() < 0.35,
            skin,
            iris,
            hair,
            lips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_reproducible_and_distinct() {
        assert_eq!(
            IdentityParams::from_seed(3, 7),
            IdentityParams::from_seed(3, 7)
        );
        assert_ne!(
            IdentityParams::from_seed(3, 7),
            IdentityParams::from_seed(3, 8)
        );
        assert_ne!(
            IdentityParams::from_seed(3, 7),
            IdentityParams::from_seed(4, 7)
        );
    }
}
