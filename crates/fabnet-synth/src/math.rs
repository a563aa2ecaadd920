//! Small 3-vector and rotation helpers for the renderer.
//!
//! Head coordinates: x towards the subject's left (image right in a frontal view),
//! y up, z out of the face towards the camera. One unit is about 75 mm (half a head width).

use std::ops::{Add, AddAssign, Mul, Neg, Sub};

/// A 3-vector of f32.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Vec3 {
    /// x component.
    pub x: f32,
    /// y component.
    pub y: f32,
    /// z component.
    pub z: f32,
}

impl Vec3 {
    /// Builds a vector from its components.
    pub const fn new(x: f32, y: f32, z: f32) -> Self {
        Self { x, y, z }
    }

    /// Dot product.
    pub fn dot(self, o: Self) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    /// Cross product.
    pub fn cross(self, o: Self) -> Self {
        Self::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }

    /// Euclidean length.
    pub fn norm(self) -> f32 {
        self.dot(self).sqrt()
    }

    /// Unit vector in the same direction; the zero vector stays zero.
    pub fn normalized(self) -> Self {
        let n = self.norm();
        if n > 1e-12 {
            self * (1.0 / n)
        } else {
            self
        }
    }

    /// Linear interpolation `self + t (o - self)`.
    pub fn lerp(self, o: Self, t: f32) -> Self {
        self + (o - self) * t
    }
}

impl Add for Vec3 {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl AddAssign for Vec3 {
    fn add_assign(&mut self, o: Self) {
        self.x += o.x;
        self.y += o.y;
        self.z += o.z;
    }
}

impl Sub for Vec3 {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f32> for Vec3 {
    type Output = Self;
    fn mul(self, s: f32) -> Self {
        Self::new(self.x * s, self.y * s, self.z * s)
    }
}

impl Neg for Vec3 {
    type Output = Self;
    fn neg(self) -> Self {
        Self::new(-self.x, -self.y, -self.z)
    }
}

/// A 3×3 rotation matrix, row-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mat3(pub [[f32; 3]; 3]);

impl Mat3 {
    /// Identity matrix.
    pub const IDENTITY: Self = Self([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Rotation about the x axis by `a` radians (right-handed).
    pub fn rot_x(a: f32) -> Self {
        let (s, c) = a.sin_cos();
        Self([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    }

    /// Rotation about the y axis by `a` radians (right-handed).
    pub fn rot_y(a: f32) -> Self {
        let (s, c) = a.sin_cos();
        Self([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    }

    /// Rotation about the z axis by `a` radians (right-handed).
    pub fn rot_z(a: f32) -> Self {
        let (s, c) = a.sin_cos();
        Self([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    }

    /// Matrix product `self · o`.
    pub fn mul_mat(&self, o: &Self) -> Self {
        let mut r = [[0.0; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| self.0[i][k] * o.0[k][j]).sum();
            }
        }
        Self(r)
    }

    /// Matrix-vector product.
    pub fn apply(&self, v: Vec3) -> Vec3 {
        let m = &self.0;
        Vec3::new(
            m[0][0] * v.x + m[0][1] * v.y + m[0][2] * v.z,
            m[1][0] * v.x + m[1][1] * v.y + m[1][2] * v.z,
            m[2][0] * v.x + m[2][1] * v.y + m[2][2] * v.z,
        )
    }
}

/// Hermite smoothstep from 0 at `e0` to 1 at `e1` (either order).
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Unnormalised Gaussian bump `exp(-((x - mu) / sigma)^2 / 2)`.
pub fn gauss(x: f32, mu: f32, sigma: f32) -> f32 {
    let d = (x - mu) / sigma;
    (-0.5 * d * d).exp()
}

/// Mixes two RGB colours (components in [0, 1]).
pub fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Cheap deterministic 2D value noise in [0, 1], smooth at scale 1.
pub fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let xi = x.floor();
    let yi = y.floor();
    let fx = x - xi;
    let fy = y - yi;
    let h = |i: i32, j: i32| -> f32 {
        let mut n = (i as u32).wrapping_mul(0x27d4_eb2d)
            ^ (j as u32).wrapping_mul(0x1656_67b1)
            ^ seed.wrapping_mul(0x9e37_79b9);
        n ^= n >> 15;
        n = n.wrapping_mul(0x2c1b_3c6d);
        n ^= n >> 12;
        n = n.wrapping_mul(0x297a_2d39);
        n ^= n >> 15;
        (n & 0x00ff_ffff) as f32 / 16_777_215.0
    };
    let (i, j) = (xi as i32, yi as i32);
    let sx = fx * fx * (3.0 - 2.0 * fx);
    let sy = fy * fy * (3.0 - 2.0 * fy);
    let a = h(i, j) + (h(i + 1, j) - h(i, j)) * sx;
    let b = h(i, j + 1) + (h(i + 1, j + 1) - h(i, j + 1)) * sx;
    a + (b - a) * sy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_are_right_handed() {
        let z = Vec3::new(0.0, 0.0, 1.0);
        let r = Mat3::rot_y(std::f32::consts::FRAC_PI_2).apply(z);
        assert!((r.x - 1.0).abs() < 1e-6 && r.z.abs() < 1e-6);
        let y = Vec3::new(0.0, 1.0, 0.0);
        let r = Mat3::rot_x(std::f32::consts::FRAC_PI_2).apply(y);
        assert!((r.z - 1.0).abs() < 1e-6);
    }

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let a = value_noise(3.2, 7.9, 5);
        let b = value_noise(3.2001, 7.9, 5);
        assert!((0.0..=1.0).contains(&a));
        assert!((a - b).abs() < 1e-2);
    }
}
