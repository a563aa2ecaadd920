//! Talking-head dynamics: per-clip lighting and background, smooth pose and expression
//! trajectories, speech-like mouth motion and blinks; and independent draws for probe
//! images.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::math::Vec3;
use crate::scene::{
    Background, Expression, FrameParams, Lighting, Pose, AU1, AU12, AU15, AU2, AU25, AU26, AU4,
    AU45, AU6, NUM_AUS,
};
use crate::seeds::{normal, uniform};

/// Pose limits in degrees: yaw, pitch, roll.
pub const MAX_YAW: f32 = 60.0;
/// Pitch limit in degrees.
pub const MAX_PITCH: f32 = 30.0;
/// Roll limit in degrees.
pub const MAX_ROLL: f32 = 25.0;

/// A smooth random signal with zero mean and unit variance: a sum of sinusoids.
#[derive(Clone, Debug)]
struct Smooth(Vec<(f32, f32, f32)>);

impl Smooth {
    fn new(r: &mut ChaCha8Rng, lo_hz: f32, hi_hz: f32) -> Self {
        let k = 3;
        let amp = (2.0f32 / k as f32).sqrt();
        Self(
            (0..k)
                .map(|_| {
                    (
                        amp,
                        uniform(r, lo_hz, hi_hz),
                        uniform(r, 0.0, std::f32::consts::TAU),
                    )
                })
                .collect(),
        )
    }

    fn at(&self, t: f32) -> f32 {
        self.0
            .iter()
            .map(|&(a, f, p)| a * (std::f32::consts::TAU * f * t + p).sin())
            .sum()
    }
}

fn random_colour(r: &mut ChaCha8Rng, lo: f32, hi: f32) -> [f32; 3] {
    let base = uniform(r, lo, hi);
    let sat = uniform(r, 0.0, 0.5);
    std::array::from_fn(|_| (base * (1.0 - sat + 2.0 * sat * r.random::<f32>())).clamp(0.0, 1.0))
}

fn random_lighting(r: &mut ChaCha8Rng) -> Lighting {
    let az = uniform(r, -70.0, 70.0).to_radians();
    let el = uniform(r, -10.0, 60.0).to_radians();
    let d = Vec3::new(az.sin() * el.cos(), el.sin(), az.cos() * el.cos()).normalized();
    Lighting {
        direction: [d.x, d.y, d.z],
        diffuse: uniform(r, 0.5, 0.9),
        ambient: uniform(r, 0.2, 0.45),
        colour: std::array::from_fn(|_| uniform(r, 0.92, 1.08)),
    }
}

fn random_background(r: &mut ChaCha8Rng) -> Background {
    let from = random_colour(r, 0.1, 0.9);
    let to = random_colour(r, 0.1, 0.9);
    if r.random::<bool>() {
        Background::Gradient {
            from,
            to,
            angle: uniform(r, 0.0, std::f32::consts::TAU),
        }
    } else {
        Background::Noise {
            from,
            to,
            scale: uniform(r, 0.05, 0.4),
            seed: r.random(),
        }
    }
}

/// The plan of one clip: its static scene and its trajectories.
#[derive(Clone, Debug)]
pub struct ClipPlan {
    lighting: Lighting,
    background: Background,
    shirt: [f32; 3],
    mean_pose: [f32; 3],
    pose_amp: [f32; 3],
    pose: [Smooth; 3],
    shift0: [f32; 2],
    zoom0: f32,
    jitter: [Smooth; 3],
    au_bias: [f32; NUM_AUS],
    au_gain: [f32; NUM_AUS],
    au: Vec<Smooth>,
    talk: Smooth,
    talk_bias: f32,
    syllable_hz: f32,
    syllable_phase: Smooth,
    blinks: Vec<f32>,
}

impl ClipPlan {
    /// The plan of clip number `index` (counted over the whole corpus) for corpus seed
    /// `seed`; `duration` in seconds.
    pub fn from_seed(seed: u64, index: u64, duration: f32) -> Self {
        Self::draw(
            &mut crate::seeds::stream(seed, crate::seeds::Stream::Clip, index),
            duration,
        )
    }

    /// Draws a clip plan from a random stream; `duration` in seconds (used for blinks).
    pub(crate) fn draw(r: &mut ChaCha8Rng, duration: f32) -> Self {
        // Near-frontal on average, as in VoxCeleb: most clips face the camera.
        let mean_pose = [
            (normal(r) * 6.0).clamp(-15.0, 15.0),
            (normal(r) * 8.0).clamp(-20.0, 20.0),
            (normal(r) * 22.0).clamp(-45.0, 45.0),
        ];
        let pose_amp = [
            uniform(r, 2.0, 7.0),
            uniform(r, 3.0, 9.0),
            uniform(r, 4.0, 15.0),
        ];
        let pose = [
            Smooth::new(r, 0.1, 0.6),
            Smooth::new(r, 0.1, 0.6),
            Smooth::new(r, 0.1, 0.6),
        ];
        let jitter = [
            Smooth::new(r, 0.2, 1.5),
            Smooth::new(r, 0.2, 1.5),
            Smooth::new(r, 0.2, 1.0),
        ];
        let au_bias = std::array::from_fn(|_| uniform(r, -1.4, 0.4));
        let au_gain = std::array::from_fn(|_| uniform(r, 0.4, 1.0));
        let au = (0..NUM_AUS).map(|_| Smooth::new(r, 0.15, 0.9)).collect();
        let mut blinks = Vec::new();
        let mut t = uniform(r, 0.0, 3.0);
        while t < duration {
            blinks.push(t);
            t += uniform(r, 1.5, 6.0);
        }
        Self {
            lighting: random_lighting(r),
            background: random_background(r),
            shirt: random_colour(r, 0.1, 0.8),
            mean_pose,
            pose_amp,
            pose,
            shift0: [uniform(r, -0.12, 0.12), uniform(r, -0.1, 0.1)],
            zoom0: uniform(r, 0.93, 1.07),
            jitter,
            au_bias,
            au_gain,
            au,
            talk: Smooth::new(r, 0.1, 0.4),
            talk_bias: uniform(r, -0.3, 1.0),
            syllable_hz: uniform(r, 3.0, 5.0),
            syllable_phase: Smooth::new(r, 0.3, 1.0),
            blinks,
        }
    }

    /// Scene parameters at time `t` seconds.
    pub fn at(&self, t: f32) -> FrameParams {
        let p = |i: usize| self.mean_pose[i] + self.pose_amp[i] * self.pose[i].at(t);
        let pose = Pose {
            roll: p(0).clamp(-MAX_ROLL, MAX_ROLL),
            pitch: p(1).clamp(-MAX_PITCH, MAX_PITCH),
            yaw: p(2).clamp(-MAX_YAW, MAX_YAW),
        };
        let mut au = [0.0f32; NUM_AUS];
        for k in [AU1, AU2, AU4, AU6, AU12, AU15] {
            au[k] = self.au_bias[k] + self.au_gain[k] * self.au[k].at(t);
        }
        // Brow raisers move together; a smile lifts the cheeks.
        au[AU2] = 0.6 * au[AU2] + 0.5 * au[AU1];
        au[AU6] = 0.5 * au[AU6] + 0.7 * au[AU12];
        let talking = (self.talk_bias + self.talk.at(t)).clamp(0.0, 1.0);
        let phase = std::f32::consts::TAU * self.syllable_hz * t + 1.5 * self.syllable_phase.at(t);
        let syll = 0.5 + 0.5 * phase.sin();
        au[AU25] = talking * (0.2 + 0.9 * syll) + self.au_bias[AU25].max(0.0);
        au[AU26] = talking * (1.1 * syll - 0.3) + self.au_bias[AU26] + 0.3 * self.au[AU26].at(t);
        au[AU45] = self
            .blinks
            .iter()
            .map(|&b| 1.0 - ((t - b).abs() / 0.12).min(1.0))
            .fold(0.0, f32::max);
        for a in &mut au {
            *a = a.clamp(0.0, 1.0);
        }
        FrameParams {
            pose,
            expression: Expression { au },
            shift: [
                self.shift0[0] + 0.04 * self.jitter[0].at(t),
                self.shift0[1] + 0.04 * self.jitter[1].at(t),
            ],
            zoom: self.zoom0 * (1.0 + 0.02 * self.jitter[2].at(t)),
            lighting: self.lighting,
            background: self.background.clone(),
            shirt: self.shirt,
        }
    }
}

/// An independent random frame for probe sets: pose from the clip distribution at a random
/// time, each AU active with probability 0.45 at a uniform intensity, random scene.
pub(crate) fn probe_frame(r: &mut ChaCha8Rng) -> FrameParams {
    let plan = ClipPlan::draw(r, 0.0);
    let mut fp = plan.at(uniform(r, 0.0, 100.0));
    for a in &mut fp.expression.au {
        *a = if r.random::<f32>() < 0.45 {
            uniform(r, 0.05, 1.0)
        } else {
            0.0
        };
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::{stream, Stream};

    #[test]
    fn trajectories_are_smooth_and_in_range() {
        let mut r = stream(1, Stream::Clip, 0);
        let plan = ClipPlan::draw(&mut r, 4.0);
        let mut prev = plan.at(0.0);
        for i in 1..100 {
            let f = plan.at(i as f32 / 25.0);
            assert!(
                f.pose.yaw.abs() <= MAX_YAW
                    && f.pose.pitch.abs() <= MAX_PITCH
                    && f.pose.roll.abs() <= MAX_ROLL
            );
            assert!(
                (f.pose.yaw - prev.pose.yaw).abs() < 5.0,
                "yaw jumps at frame {i}"
            );
            assert!(f.expression.au.iter().all(|a| (0.0..=1.0).contains(a)));
            prev = f;
        }
    }

    #[test]
    fn speech_moves_the_mouth_at_syllable_rate() {
        // Over many clips the mouth opening changes direction several times per second.
        let mut reversals = 0;
        let mut talking_clips = 0;
        for c in 0..20 {
            let mut r = stream(2, Stream::Clip, c);
            let plan = ClipPlan::draw(&mut r, 4.0);
            let xs: Vec<f32> = (0..100)
                .map(|i| plan.at(i as f32 / 25.0).expression.au[AU25])
                .collect();
            let rev = xs
                .windows(3)
                .filter(|w| (w[1] - w[0]) * (w[2] - w[1]) < -1e-6)
                .count();
            if rev > 0 {
                talking_clips += 1;
                reversals += rev;
            }
        }
        assert!(talking_clips >= 10, "only {talking_clips} of 20 clips talk");
        let per_second = reversals as f32 / (talking_clips as f32 * 4.0);
        assert!(
            (3.0..14.0).contains(&per_second),
            "{per_second} mouth reversals per second"
        );
    }
}
