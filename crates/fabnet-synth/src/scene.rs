//! Per-frame and per-clip scene parameters: head pose, expression (action units),
//! camera placement, lighting and background.

use serde::{Deserialize, Serialize};

use crate::math::{Mat3, Vec3};

/// Number of action units rendered.
pub const NUM_AUS: usize = 9;

/// FACS numbers of the rendered action units, in the order of [`Expression::au`].
pub const AU_NUMBERS: [u8; NUM_AUS] = [1, 2, 4, 6, 12, 15, 25, 26, 45];

/// Index of AU1 (inner brow raiser) in [`Expression::au`].
pub const AU1: usize = 0;
/// Index of AU2 (outer brow raiser).
pub const AU2: usize = 1;
/// Index of AU4 (brow lowerer).
pub const AU4: usize = 2;
/// Index of AU6 (cheek raiser).
pub const AU6: usize = 3;
/// Index of AU12 (lip-corner puller).
pub const AU12: usize = 4;
/// Index of AU15 (lip-corner depressor).
pub const AU15: usize = 5;
/// Index of AU25 (lips part).
pub const AU25: usize = 6;
/// Index of AU26 (jaw drop).
pub const AU26: usize = 7;
/// Index of AU45 (blink).
pub const AU45: usize = 8;

/// Head pose in degrees.
///
/// Sign convention (tested): the head rotates by `Rz(roll) · Rx(-pitch) · Ry(yaw)` in a
/// right-handed camera frame with x to the image right, y up and z towards the camera.
/// - `yaw > 0`: the head turns towards the image right (the subject's left); the nose tip
///   moves right in the image.
/// - `pitch > 0`: the head tilts up (chin up); the nose tip moves up in the image.
/// - `roll > 0`: the head tilts counter-clockwise as the viewer sees it; the eye on the
///   image right moves up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Roll in degrees (in-plane rotation).
    pub roll: f32,
    /// Pitch in degrees (nodding).
    pub pitch: f32,
    /// Yaw in degrees (turning left/right).
    pub yaw: f32,
}

impl Pose {
    /// The rotation matrix from head to camera axes.
    pub fn matrix(&self) -> Mat3 {
        let d = std::f32::consts::PI / 180.0;
        Mat3::rot_z(self.roll * d)
            .mul_mat(&Mat3::rot_x(-self.pitch * d))
            .mul_mat(&Mat3::rot_y(self.yaw * d))
    }
}

/// Facial expression as action-unit intensities in [0, 1], ordered as [`AU_NUMBERS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Expression {
    /// Intensities of AU1, AU2, AU4, AU6, AU12, AU15, AU25, AU26, AU45.
    pub au: [f32; NUM_AUS],
}

impl Expression {
    /// The neutral face (all intensities 0, eyes open).
    pub fn neutral() -> Self {
        Self::default()
    }

    /// The neutral face with one action unit set to `value`.
    pub fn single(index: usize, value: f32) -> Self {
        let mut e = Self::default();
        if let Some(a) = e.au.get_mut(index) {
            *a = value.clamp(0.0, 1.0);
        }
        e
    }
}

/// Background of a clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Background {
    /// Linear gradient between two colours along a direction (radians, 0 = left to right).
    Gradient {
        /// Colour at the start of the gradient, RGB in [0, 1].
        from: [f32; 3],
        /// Colour at the end of the gradient.
        to: [f32; 3],
        /// Direction of the gradient in radians.
        angle: f32,
    },
    /// Value noise of a given scale tinting between two colours.
    Noise {
        /// Dark colour.
        from: [f32; 3],
        /// Light colour.
        to: [f32; 3],
        /// Feature size as a fraction of the image width.
        scale: f32,
        /// Noise seed.
        seed: u32,
    },
}

/// Lighting of a clip: one directional light plus ambient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lighting {
    /// Unit direction towards the light in camera axes (x right, y up, z towards camera).
    pub direction: [f32; 3],
    /// Directional intensity.
    pub diffuse: f32,
    /// Ambient intensity.
    pub ambient: f32,
    /// Light colour multiplier.
    pub colour: [f32; 3],
}

impl Lighting {
    /// A frontal key light slightly from above and the image left.
    pub fn studio() -> Self {
        let d = Vec3::new(-0.35, 0.45, 1.0).normalized();
        Self {
            direction: [d.x, d.y, d.z],
            diffuse: 0.75,
            ambient: 0.35,
            colour: [1.0; 3],
        }
    }
}

/// Everything about one frame except the identity: pose, expression, framing, light.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameParams {
    /// Head pose.
    pub pose: Pose,
    /// Expression.
    pub expression: Expression,
    /// Head translation in head units (x right, y up), a tracker's jitter.
    pub shift: [f32; 2],
    /// Zoom factor around 1.
    pub zoom: f32,
    /// Lighting.
    pub lighting: Lighting,
    /// Background.
    pub background: Background,
    /// Shirt colour.
    pub shirt: [f32; 3],
}

impl FrameParams {
    /// A frontal, neutral, studio-lit frame on a grey gradient.
    pub fn frontal() -> Self {
        Self {
            pose: Pose::default(),
            expression: Expression::neutral(),
            shift: [0.0, 0.0],
            zoom: 1.0,
            lighting: Lighting::studio(),
            background: Background::Gradient {
                from: [0.55, 0.58, 0.62],
                to: [0.30, 0.32, 0.36],
                angle: 1.2,
            },
            shirt: [0.2, 0.25, 0.4],
        }
    }
}
