//! The parametric 3D head: a deformable skin surface with features, eyeballs, eyelids,
//! ears, neck and torso, plus the 68 landmark definitions and the materials.
//!
//! The skin is a latitude/longitude grid in parameters `(u, v)`: `u` is the longitude in
//! radians (0 = front, positive towards +x), `v` the latitude (positive up). A thin band of
//! latitudes at the mouth is collapsed to a line at rest; opening the mouth stretches it into
//! the mouth cavity (dark interior and teeth). Expressions are linear blend shapes over the
//! skin, except the eyelids, which are rebuilt per frame from their opening angles.
//! Landmarks are surface points given by parameters and evaluated with the same shape and
//! blend-shape functions as the mesh vertices, so they move exactly with the surface.

use crate::identity::IdentityParams;
use crate::math::{gauss, mix3, smoothstep, value_noise, Vec3};
use crate::scene::{Expression, AU1, AU12, AU15, AU2, AU25, AU26, AU4, AU45, AU6, NUM_AUS};

/// Which part of the model a triangle belongs to; selects the material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Face, scalp and hair surface; attributes `(u, v, 0)`.
    Skin,
    /// Eyeball; attributes are the unit direction in the eye frame.
    Eyeball,
    /// Upper eyelid; attributes `(phi, t, 0)` with `t` = 0 at the lid margin.
    UpperLid,
    /// Lower eyelid; attributes as for the upper lid.
    LowerLid,
    /// Ear; attributes are the point on the unit sphere of the ear ellipsoid.
    Ear,
    /// Neck.
    Neck,
    /// Shoulders and shirt; does not rotate with the head.
    Torso,
}

/// Derived feature placement of one identity (head units and radians).
#[derive(Clone, Debug)]
struct Layout {
    ax: f32,
    ax_top: f32,
    ay: f32,
    ay_top: f32,
    jaw: f32,
    chin: f32,
    u_e: f32,
    v_e: f32,
    r_e: f32,
    eye: [Vec3; 2],
    v_brow: f32,
    brow_th: f32,
    v_root: f32,
    v_tip: f32,
    v_base: f32,
    nose_w: f32,
    nose_d: f32,
    v_m: f32,
    delta: f32,
    u_m: f32,
    lip: f32,
    hairline: f32,
    hair_vol: f32,
    long_hair: bool,
}

/// Half-angle of the eye opening (radians around the eye's vertical axis).
const PHI_C: f32 = 1.2;
/// Iris angular radius on the eyeball.
const IRIS: f32 = 0.52;
/// Pupil angular radius on the eyeball.
const PUPIL: f32 = 0.22;
/// Lid sphere radius relative to the eyeball.
const LID_R: f32 = 1.05;

impl Layout {
    fn new(id: &IdentityParams) -> Self {
        let r_e = 0.155 * id.eye_size;
        let mut l = Self {
            ax: 0.80 * id.face_width,
            ax_top: 0.84 * id.face_width,
            ay: 1.2 * id.face_length,
            ay_top: 1.35 * id.face_length,
            jaw: id.jaw_width,
            chin: id.chin,
            u_e: 0.40 * id.eye_spacing,
            v_e: 0.03,
            r_e,
            eye: [Vec3::default(); 2],
            v_brow: 0.23 + id.brow_height,
            brow_th: 0.028 * id.brow_thickness,
            v_root: 0.08,
            v_tip: -0.26 * id.nose_length,
            v_base: -0.26 * id.nose_length - 0.085,
            nose_w: id.nose_width,
            nose_d: id.nose_depth,
            v_m: -0.62,
            delta: 0.025,
            u_m: 0.29 * id.mouth_width,
            lip: id.lip_fullness,
            hairline: 0.72 + id.hairline,
            hair_vol: id.hair_volume,
            long_hair: id.long_hair,
        };
        for (k, s) in [-1.0f32, 1.0].into_iter().enumerate() {
            let p = l.shape(s * l.u_e, l.v_e, false);
            l.eye[k] = Vec3::new(p.x, p.y, p.z - 0.80 * r_e);
        }
        l
    }

    /// Geometric latitude of a raw parameter latitude; the mouth band collapses to `v_m`.
    fn geo(&self, v: f32) -> f32 {
        let half = std::f32::consts::FRAC_PI_2;
        let (m, d) = (self.v_m, self.delta);
        if v > m + d {
            m + (v - m - d) * (half - m) / (half - m - d)
        } else if v < m - d {
            m + (v - m + d) * (half + m) / (half + m - d)
        } else {
            m
        }
    }

    /// Raw parameter latitude of a geometric latitude on the given side of the mouth band.
    fn raw(&self, vg: f32, upper: bool) -> f32 {
        let half = std::f32::consts::FRAC_PI_2;
        let (m, d) = (self.v_m, self.delta);
        if vg > m || (vg == m && upper) {
            m + d + (vg - m) * (half - m - d) / (half - m)
        } else {
            m - d + (vg - m) * (half + m - d) / (half + m)
        }
    }

    /// Position in the mouth band in [0, 1] (0 = lower lip edge), if `v` is in the band.
    fn band(&self, v: f32) -> Option<f32> {
        let s = (v - (self.v_m - self.delta)) / (2.0 * self.delta);
        (0.0..=1.0).contains(&s).then_some(s)
    }

    /// Mouth opening profile across the mouth: 1 at the centre, 0 at and beyond the corners.
    fn inside(&self, u: f32) -> f32 {
        let t = 1.0 - (u / self.u_m).powi(2);
        if t > 0.0 {
            t.powf(0.7)
        } else {
            0.0
        }
    }

    fn upper_lip_h(&self, u: f32) -> f32 {
        let t = (1.0 - (u / (1.02 * self.u_m)).powi(2)).max(0.0).sqrt();
        (0.05 * self.lip * t - 0.012 * gauss(u, 0.0, 0.035) + 0.006 * gauss(u.abs(), 0.06, 0.03))
            .max(0.0)
    }

    fn lower_lip_h(&self, u: f32) -> f32 {
        let t = (1.0 - (u / (1.02 * self.u_m)).powi(2)).max(0.0).sqrt();
        0.065 * self.lip * t
    }

    fn nose_profile(&self, u: f32, vg: f32) -> f32 {
        let span = self.v_root - self.v_tip;
        let t = ((self.v_root - vg) / span).clamp(0.0, 1.0);
        let mut p = (0.05 + 0.17 * t.powf(1.3)) * self.nose_d;
        if vg > self.v_root {
            p *= gauss(vg, self.v_root, 0.06);
        }
        if vg < self.v_tip {
            p *= 1.0 - smoothstep(self.v_tip, self.v_base, vg);
        }
        let w = (0.075 + 0.055 * t) * self.nose_w;
        let c = (1.0 - (u / w).powi(2)).max(0.0);
        let bulb = 0.045
            * self.nose_d
            * gauss(u, 0.0, 0.05 * self.nose_w)
            * gauss(vg, self.v_tip + 0.015, 0.045);
        let alae = 0.10
            * self.nose_d
            * gauss(u.abs(), 0.085 * self.nose_w, 0.045)
            * gauss(vg, self.v_base + 0.03, 0.035);
        p * c * c + bulb + alae
    }

    /// The rest skin surface at longitude `u` and geometric latitude `vg`.
    fn shape(&self, u: f32, vg: f32, socket: bool) -> Vec3 {
        let (su, cu) = u.sin_cos();
        let (sv, cv) = vg.sin_cos();
        let front = cu.max(0.0);
        let n = if cu > 0.0 { 2.5 } else { 2.0 };
        let sx = su.signum() * su.abs().powf(2.0 / n);
        let sz = cu.signum() * cu.abs().powf(2.0 / n);
        let taper = 1.0
            - (1.0 - self.jaw) * smoothstep(-0.1, -1.1, vg)
            - 0.12 * smoothstep(-0.5, -1.2, vg) * smoothstep(0.6, 1.4, u.abs());
        let az = if cu > 0.0 { 0.92 } else { 1.08 };
        let up = smoothstep(0.0, 0.6, vg);
        let ax = self.ax + (self.ax_top - self.ax) * up;
        let ay = if vg > 0.0 { self.ay_top } else { self.ay };
        let mut p = Vec3::new(ax * taper * cv * sx, ay * sv, az * cv * sz);
        // Below the jaw line, the sides and back of the head narrow into the neck.
        let into_neck = smoothstep(-0.25, -0.8, vg) * smoothstep(0.65, 1.15, u.abs());
        if into_neck > 0.0 {
            let (dx, dz) = (p.x, p.z + 0.2);
            let (rx, rz) = (0.64 * self.ax / 0.8, 0.56);
            let t = 1.0 / ((dx / rx).powi(2) + (dz / rz).powi(2)).sqrt().max(1e-6);
            if t < 1.0 {
                let k = 1.0 + (t - 1.0) * into_neck;
                p.x = dx * k;
                p.z = dz * k - 0.2;
            }
        }
        // The lower face sits forward of the cranium; the throat recedes to the neck.
        let fwd = 0.30 * smoothstep(0.15, -0.6, vg) * (1.0 - smoothstep(-1.12, -1.45, vg));
        p.z += fwd * front.powf(1.5);
        p.z += (0.07 + self.chin) * gauss(u, 0.0, 0.3) * gauss(vg, -1.0, 0.13);
        p.z += 0.05 * gauss(u.abs(), 0.33, 0.3) * gauss(vg, self.v_brow + 0.03, 0.07);
        let cheek = 0.05 * gauss(u.abs(), 0.62, 0.2) * gauss(vg, -0.12, 0.14);
        p.x += cheek * su.signum() * 0.6;
        p.z += cheek * 0.8;
        p.z += self.nose_profile(u, vg);
        p.z += 0.04
            * self.lip
            * gauss(vg, self.v_m + 0.028, 0.03)
            * (1.0 - (u / (1.05 * self.u_m)).powi(2)).max(0.0).powf(0.6);
        p.z += 0.045
            * self.lip
            * gauss(vg, self.v_m - 0.04, 0.035)
            * (1.0 - (u / (1.05 * self.u_m)).powi(2)).max(0.0).powf(0.6);
        if socket {
            for e in &self.eye {
                let d2 = (p.x - e.x).powi(2) + (p.y - e.y).powi(2);
                p.z -= 0.78 * self.r_e * (-d2 / (2.0 * (0.95 * self.r_e).powi(2))).exp();
            }
        }
        let hv = self.hair_vol * smoothstep(self.hair_line(u) - 0.03, self.hair_line(u) + 0.25, vg);
        if hv > 0.0 {
            let radial = Vec3::new(p.x, 0.3 * p.y, p.z).normalized();
            p += radial * hv;
        }
        p
    }

    /// Latitude of the hairline at longitude `u`.
    fn hair_line(&self, u: f32) -> f32 {
        let a = u.abs();
        let front = self.hairline - 0.04 * (a / 0.9).powi(2);
        let side = if self.long_hair { -0.15 } else { 0.22 };
        let back = if self.long_hair { -1.0 } else { -0.5 };
        let sideburn = -0.05;
        let h1 = front + (sideburn - front) * smoothstep(0.85, 1.3, a);
        let h2 = h1 + (side - h1) * smoothstep(1.3, 1.42, a);
        h2 + (back - h2) * smoothstep(1.75, 2.4, a)
    }

    fn brow(&self, u: f32, vg: f32) -> f32 {
        let a = u.abs();
        let t = (a - 0.09) / 0.6;
        if !(-0.1..=1.1).contains(&t) {
            return 0.0;
        }
        let centre = self.v_brow
            + 0.045 * (std::f32::consts::PI * t.clamp(0.0, 1.0).powf(0.7)).sin()
            - 0.02 * t;
        let th = self.brow_th * (1.15 - 0.55 * t.clamp(0.0, 1.0));
        let d = (vg - centre).abs();
        let ends = smoothstep(-0.1, 0.05, t) * (1.0 - smoothstep(0.92, 1.08, t));
        (1.0 - smoothstep(0.6 * th, th, d)) * ends
    }

    /// Vertical extent of the brow muscles: the forehead and brows, fading out above the
    /// eyes so that the eyes and the nose stay put.
    fn brow_band(&self, vg: f32) -> f32 {
        gauss(vg, self.v_brow, 0.11) * smoothstep(self.v_root + 0.01, self.v_brow - 0.03, vg)
    }

    /// Blend-shape displacement of AU `k` at longitude `u`, geometric latitude `vg`, on the
    /// upper or lower side of the mouth seam.
    fn disp_geo(&self, k: usize, u: f32, vg: f32, upper: bool) -> Vec3 {
        let a = u.abs();
        let sg = u.signum();
        match k {
            AU1 => Vec3::new(0.0, 0.055, 0.0) * (gauss(a, 0.1, 0.13) * self.brow_band(vg)),
            AU2 => Vec3::new(0.0, 0.055, 0.0) * (gauss(a, 0.52, 0.15) * self.brow_band(vg)),
            AU4 => {
                let w = gauss(a, 0.22, 0.2) * self.brow_band(vg);
                Vec3::new(-sg * 0.035, -0.05, -0.01) * w
            }
            AU6 => {
                let w = gauss(a, 0.42, 0.17) * gauss(vg, -0.13, 0.12);
                Vec3::new(sg * 0.01, 0.045, 0.03) * w
            }
            AU12 | AU15 => {
                let w = gauss(a, self.u_m, 0.16) * gauss(vg, self.v_m, 0.15);
                if k == AU12 {
                    Vec3::new(sg * 0.06, 0.065, -0.03) * w
                } else {
                    Vec3::new(-sg * 0.01, -0.065, 0.0) * w
                }
            }
            AU25 => {
                let inside = self.inside(u);
                if upper {
                    Vec3::new(0.0, 0.025, 0.0) * (inside * gauss(vg, self.v_m, 0.07))
                } else {
                    Vec3::new(0.0, -0.07, 0.0) * (inside * gauss(vg, self.v_m, 0.12))
                }
            }
            AU26 => {
                let lat = 1.0 - smoothstep(0.6, 1.5, a);
                let ramp = smoothstep(self.v_m + 0.08, self.v_m - 0.3, vg);
                let inside = self.inside(u);
                let vert = if upper {
                    ramp * (1.0 - inside)
                } else {
                    ramp + (1.0 - ramp) * inside
                };
                Vec3::new(0.0, -0.24, -0.07) * (lat * vert)
            }
            _ => Vec3::default(),
        }
    }

    /// Displacement of AU `k` at raw parameters `(u, v)`, including the mouth cavity.
    fn disp(&self, k: usize, u: f32, v: f32) -> Vec3 {
        match self.band(v) {
            Some(s) => {
                let lo = self.disp_geo(k, u, self.v_m, false);
                let hi = self.disp_geo(k, u, self.v_m, true);
                let open = match k {
                    AU25 => 0.095,
                    AU26 => 0.24,
                    _ => 0.0,
                } * self.inside(u);
                lo.lerp(hi, s)
                    + Vec3::new(0.0, 0.0, -0.55 * open * (std::f32::consts::PI * s).sin())
            }
            None => self.disp_geo(k, u, self.geo(v), v > self.v_m),
        }
    }
}

/// A landmark on the skin, in raw surface parameters.
#[derive(Clone, Copy, Debug)]
struct SkinMark {
    u: f32,
    v: f32,
}

/// A mesh part with static topology.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartMesh {
    pub(crate) pos: Vec<Vec3>,
    pub(crate) normal: Vec<Vec3>,
    pub(crate) attr: Vec<[f32; 3]>,
    pub(crate) tris: Vec<[u32; 3]>,
}

/// Builds a triangle grid over `rows × cols` vertices (row-major), optionally wrapping
/// columns; winding is fixed afterwards by [`orient`].
fn grid_tris(rows: usize, cols: usize, wrap: bool) -> Vec<[u32; 3]> {
    let mut t = Vec::new();
    let cmax = if wrap { cols } else { cols - 1 };
    for r in 0..rows - 1 {
        for c in 0..cmax {
            let c1 = (c + 1) % cols;
            let a = (r * cols + c) as u32;
            let b = (r * cols + c1) as u32;
            let d = ((r + 1) * cols + c) as u32;
            let e = ((r + 1) * cols + c1) as u32;
            t.push([a, b, e]);
            t.push([a, e, d]);
        }
    }
    t
}

/// Flips every triangle if most of them face towards `centre` rather than away.
fn orient(pos: &[Vec3], tris: &mut [[u32; 3]], centre: Vec3) {
    let mut score = 0.0f32;
    for t in tris.iter() {
        let (a, b, c) = (pos[t[0] as usize], pos[t[1] as usize], pos[t[2] as usize]);
        let n = (b - a).cross(c - a);
        score += n.dot(a - centre).signum() * n.norm().min(1.0).ceil();
    }
    if score < 0.0 {
        for t in tris.iter_mut() {
            t.swap(1, 2);
        }
    }
}

/// Accumulates area-weighted vertex normals.
pub(crate) fn vertex_normals(pos: &[Vec3], tris: &[[u32; 3]], out: &mut Vec<Vec3>) {
    out.clear();
    out.resize(pos.len(), Vec3::default());
    for t in tris {
        let (a, b, c) = (pos[t[0] as usize], pos[t[1] as usize], pos[t[2] as usize]);
        let n = (b - a).cross(c - a);
        for &i in t {
            out[i as usize] += n;
        }
    }
    for n in out.iter_mut() {
        *n = n.normalized();
    }
}

fn ellipsoid(
    centre: Vec3,
    axes: [Vec3; 3],
    radii: [f32; 3],
    rings: usize,
    segs: usize,
) -> PartMesh {
    let mut m = PartMesh::default();
    for i in 0..=rings {
        let th = std::f32::consts::PI * i as f32 / rings as f32;
        for j in 0..segs {
            let ph = 2.0 * std::f32::consts::PI * j as f32 / segs as f32;
            let s = Vec3::new(th.sin() * ph.cos(), th.cos(), th.sin() * ph.sin());
            let p = centre
                + axes[0] * (radii[0] * s.x)
                + axes[1] * (radii[1] * s.y)
                + axes[2] * (radii[2] * s.z);
            let n = (axes[0] * (s.x / radii[0])
                + axes[1] * (s.y / radii[1])
                + axes[2] * (s.z / radii[2]))
                .normalized();
            m.pos.push(p);
            m.normal.push(n);
            m.attr.push([s.x, s.y, s.z]);
        }
    }
    m.tris = grid_tris(rings + 1, segs, true);
    orient(&m.pos, &mut m.tris, centre);
    m
}

/// One synthetic person: rest geometry, blend shapes, landmark definitions and materials.
#[derive(Clone, Debug)]
pub struct Head {
    params: IdentityParams,
    l: Layout,
    skin_uv: Vec<[f32; 2]>,
    skin_rest: Vec<Vec3>,
    skin_blend: Vec<Vec<(u32, Vec3)>>,
    skin_tris: Vec<[u32; 3]>,
    marks: Vec<(usize, SkinMark)>,
    mark_rest: Vec<Vec3>,
    mark_blend: Vec<[Vec3; NUM_AUS]>,
    eyeballs: PartMesh,
    ears: PartMesh,
    neck: PartMesh,
    torso: PartMesh,
    lid_phi: Vec<f32>,
    lid_rows: usize,
    lid_tris: Vec<[u32; 3]>,
    skin_tex: Vec<[f32; 4]>,
}

/// Number of landmarks (iBUG / 300-W order).
pub const NUM_LANDMARKS: usize = 68;

/// The posed geometry of a head in head coordinates, before the camera transform.
#[derive(Clone, Debug, Default)]
pub(crate) struct Posed {
    pub(crate) pos: Vec<Vec3>,
    pub(crate) normal: Vec<Vec3>,
    pub(crate) attr: Vec<[f32; 3]>,
    /// Triangles with their part; vertex indices into `pos`.
    pub(crate) tris: Vec<([u32; 3], Part)>,
    /// Whether a vertex is attached to the body (does not rotate with the head).
    pub(crate) body_from: usize,
    /// 68 landmarks in head coordinates, iBUG order.
    pub(crate) landmarks: Vec<Vec3>,
    /// The two pupil centres (subject's right first, i.e. image left in a frontal view).
    pub(crate) pupils: [Vec3; 2],
}

impl Head {
    /// Builds the head of an identity: rest mesh (about 38k triangles in all), blend shapes
    /// and landmark definitions.
    pub fn new(params: &IdentityParams) -> Self {
        let l = Layout::new(params);
        // Longitudes: dense over the face, sparse over the back of the head.
        let mut us = Vec::new();
        let mut u = -std::f32::consts::PI;
        while u < std::f32::consts::PI - 1e-4 {
            us.push(u);
            u += if u.abs() < 1.35 { 0.028 } else { 0.06 };
        }
        // Latitudes: dense over the face, with extra rows inside the mouth band.
        let mut vs = Vec::new();
        let half = std::f32::consts::FRAC_PI_2;
        let mut v = -half;
        let (b0, b1) = (l.v_m - l.delta, l.v_m + l.delta);
        while v < b0 - 1e-4 {
            vs.push(v);
            v += if v > -1.2 { 0.025 } else { 0.05 };
        }
        for i in 0..=8 {
            vs.push(b0 + (b1 - b0) * i as f32 / 8.0);
        }
        v = b1 + 0.025;
        while v < half - 1e-4 {
            vs.push(v);
            v += if v < 0.8 { 0.025 } else { 0.05 };
        }
        vs.push(half);
        let cols = us.len();
        let mut skin_uv = Vec::with_capacity(vs.len() * cols);
        let mut skin_rest = Vec::with_capacity(vs.len() * cols);
        for &v in &vs {
            for &u in &us {
                skin_uv.push([u, v]);
                skin_rest.push(l.shape(u, l.geo(v), true));
            }
        }
        let mut skin_tris = grid_tris(vs.len(), cols, true);
        orient(&skin_rest, &mut skin_tris, Vec3::default());
        let mut skin_blend = vec![Vec::new(); NUM_AUS];
        for (i, &[u, v]) in skin_uv.iter().enumerate() {
            for (k, list) in skin_blend.iter_mut().enumerate() {
                let d = l.disp(k, u, v);
                if d.norm() > 1e-5 {
                    list.push((i as u32, d));
                }
            }
        }

        let nose_tip_v = {
            let mut best = (l.v_tip, f32::MIN);
            let mut vg = l.v_root;
            while vg > l.v_base {
                let z = l.shape(0.0, vg, true).z;
                if z > best.1 {
                    best = (vg, z);
                }
                vg -= 0.0005;
            }
            best.0
        };
        let marks = Self::skin_marks(&l, nose_tip_v);
        let mark_rest = marks
            .iter()
            .map(|(_, m)| l.shape(m.u, l.geo(m.v), true))
            .collect();
        let mark_blend = marks
            .iter()
            .map(|(_, m)| std::array::from_fn(|k| l.disp(k, m.u, m.v)))
            .collect();

        let mut eyeballs = PartMesh::default();
        for e in &l.eye {
            let rings = 12;
            let segs = 20;
            let base = eyeballs.pos.len() as u32;
            let mut m = PartMesh::default();
            for i in 0..=rings {
                let g = 2.0 * i as f32 / rings as f32;
                for j in 0..segs {
                    let a = 2.0 * std::f32::consts::PI * j as f32 / segs as f32;
                    let d = Vec3::new(g.sin() * a.cos(), g.sin() * a.sin(), g.cos());
                    m.pos.push(*e + d * l.r_e);
                    m.normal.push(d);
                    m.attr.push([d.x, d.y, d.z]);
                }
            }
            m.tris = grid_tris(rings + 1, segs, true);
            orient(&m.pos, &mut m.tris, *e);
            eyeballs.pos.extend(m.pos);
            eyeballs.normal.extend(m.normal);
            eyeballs.attr.extend(m.attr);
            eyeballs.tris.extend(
                m.tris
                    .iter()
                    .map(|t| [t[0] + base, t[1] + base, t[2] + base]),
            );
        }

        let mut ears = PartMesh::default();
        for s in [-1.0f32, 1.0] {
            let c = l.shape(s * 1.62, -0.08, false);
            let out = Vec3::new(s, 0.0, 0.12).normalized();
            let up = Vec3::new(0.0, 0.97, -0.25).normalized();
            let side = out.cross(up).normalized();
            let es = params.ear_size;
            let m = ellipsoid(
                c + out * 0.02,
                [side, up, out],
                [0.19 * es, 0.33 * es, 0.06],
                10,
                16,
            );
            let base = ears.pos.len() as u32;
            ears.pos.extend(m.pos);
            ears.normal.extend(m.normal);
            ears.attr.extend(m.attr);
            ears.tris.extend(
                m.tris
                    .iter()
                    .map(|t| [t[0] + base, t[1] + base, t[2] + base]),
            );
        }

        let mut neck = PartMesh::default();
        let segs = 24;
        for i in 0..5 {
            let y = -0.35 - 0.7 * i as f32;
            for j in 0..segs {
                let a = 2.0 * std::f32::consts::PI * j as f32 / segs as f32;
                let (sa, ca) = a.sin_cos();
                neck.pos
                    .push(Vec3::new(0.6 * l.ax / 0.8 * ca, y, -0.2 + 0.52 * sa));
                neck.normal.push(Vec3::new(ca, 0.0, sa));
                neck.attr.push([0.0; 3]);
            }
        }
        neck.tris = grid_tris(5, segs, true);
        orient(&neck.pos, &mut neck.tris, Vec3::new(0.0, -1.7, -0.15));

        let torso = ellipsoid(
            Vec3::new(0.0, -2.8, -0.55),
            [
                Vec3::new(1.0, 0.0, 0.0),
                Vec3::new(0.0, 1.0, 0.0),
                Vec3::new(0.0, 0.0, 1.0),
            ],
            [2.2, 1.45, 0.85],
            14,
            28,
        );

        let lid_phi: Vec<f32> = (0..=18)
            .map(|i| -PHI_C - 0.5 + (2.0 * PHI_C + 1.0) * i as f32 / 18.0)
            .collect();
        let lid_rows = 7;
        let lid_tris = grid_tris(lid_rows, lid_phi.len(), false);

        let skin_tex = bake_skin(&l, params);
        Self {
            params: params.clone(),
            l,
            skin_uv,
            skin_rest,
            skin_blend,
            skin_tris,
            marks,
            mark_rest,
            mark_blend,
            eyeballs,
            ears,
            neck,
            torso,
            lid_phi,
            lid_rows,
            lid_tris,
            skin_tex,
        }
    }

    /// The identity this head was built from.
    pub fn params(&self) -> &IdentityParams {
        &self.params
    }

    /// Number of triangles of the full model.
    pub fn triangle_count(&self) -> usize {
        self.skin_tris.len()
            + self.eyeballs.tris.len()
            + 4 * self.lid_tris.len()
            + self.ears.tris.len()
            + self.neck.tris.len()
            + self.torso.tris.len()
    }

    fn skin_marks(l: &Layout, nose_tip_v: f32) -> Vec<(usize, SkinMark)> {
        let mut m = Vec::new();
        let mut push = |idx: usize, u: f32, vg: f32, upper: bool| {
            m.push((
                idx,
                SkinMark {
                    u,
                    v: l.raw(vg, upper),
                },
            ));
        };
        // 1-17 jaw, subject's right (image left) to left.
        for k in 0..17 {
            let a = std::f32::consts::PI * k as f32 / 16.0;
            let u = -1.22 * a.cos();
            let vg = -0.02 + (-1.1 + 0.02) * a.sin();
            push(k, u, vg, false);
        }
        // 18-22 right brow outer→inner, 23-27 left brow inner→outer.
        let brow_centre =
            |t: f32| l.v_brow + 0.045 * (std::f32::consts::PI * t.powf(0.7)).sin() - 0.02 * t;
        for (i, t) in [0.95f32, 0.72, 0.5, 0.28, 0.06].into_iter().enumerate() {
            push(17 + i, -(0.09 + 0.6 * t), brow_centre(t), true);
        }
        for (i, t) in [0.06f32, 0.28, 0.5, 0.72, 0.95].into_iter().enumerate() {
            push(22 + i, 0.09 + 0.6 * t, brow_centre(t), true);
        }
        // 28-31 nose ridge to tip.
        for i in 0..4 {
            let vg = l.v_root + (nose_tip_v - l.v_root) * i as f32 / 3.0;
            push(27 + i, 0.0, vg, true);
        }
        // 32-36 nose base, right to left.
        for (i, f) in [-1.0f32, -0.5, 0.0, 0.5, 1.0].into_iter().enumerate() {
            let vg = l.v_base + 0.015 * f.abs();
            push(31 + i, f * 0.085 * l.nose_w, vg, true);
        }
        // 49-60 outer lip, 61-68 inner lip.
        let um = l.u_m;
        push(48, -um, l.v_m, true);
        for (i, f) in [-0.62f32, -0.25, 0.0, 0.25, 0.62].into_iter().enumerate() {
            push(49 + i, f * um, l.v_m + l.upper_lip_h(f * um), true);
        }
        push(54, um, l.v_m, true);
        for (i, f) in [0.62f32, 0.25, 0.0, -0.25, -0.62].into_iter().enumerate() {
            push(55 + i, f * um, l.v_m - l.lower_lip_h(f * um), false);
        }
        let edge_hi = l.v_m + l.delta;
        let edge_lo = l.v_m - l.delta;
        let mut raw = |idx: usize, u: f32, v: f32| m.push((idx, SkinMark { u, v }));
        raw(60, -0.9 * um, l.v_m);
        for (i, f) in [-0.4f32, 0.0, 0.4].into_iter().enumerate() {
            raw(61 + i, f * um, edge_hi);
        }
        raw(64, 0.9 * um, l.v_m);
        for (i, f) in [0.4f32, 0.0, -0.4].into_iter().enumerate() {
            raw(65 + i, f * um, edge_lo);
        }
        m
    }

    /// Lid margin angles (upper, lower) in radians for an expression.
    fn lid_angles(e: &Expression) -> (f32, f32) {
        let a = &e.au;
        let blink = a[AU45];
        let up_open = 0.38 - 0.12 * a[AU6] - 0.12 * a[AU4] + 0.08 * a[AU1].max(a[AU2]);
        let lo_open = -0.42 + 0.22 * a[AU6];
        let closed = -0.16;
        let up = up_open + (closed - up_open) * blink;
        let lo = lo_open + (closed - 0.01 - lo_open) * blink;
        (up.max(lo + 0.005), lo)
    }

    /// Point on the lid margin (or the lid surface at `t` towards its far edge) of eye `side`
    /// (0 = subject's right), at lateral angle `phi` (positive towards +x).
    fn lid_point(&self, side: usize, upper: bool, edge: f32, phi: f32, t: f32) -> (Vec3, Vec3) {
        let l = &self.l;
        let s = if side == 0 { -1.0 } else { 1.0 };
        // Canthal tilt: the outer corner sits slightly higher than the inner one.
        let psi_c = 0.02 + 0.06 * (s * phi / PHI_C).clamp(-1.0, 1.0);
        let k = if phi.abs() < PHI_C {
            (std::f32::consts::FRAC_PI_2 * phi / PHI_C).cos().powf(0.6)
        } else {
            0.0
        };
        let psi_edge = psi_c + (edge - psi_c) * k;
        let far = if upper { 1.9 } else { -1.9 };
        let psi = psi_edge + (far - psi_edge) * t;
        let r = l.r_e * if upper { LID_R } else { LID_R - 0.01 };
        let d = Vec3::new(phi.sin(), phi.cos() * psi.sin(), phi.cos() * psi.cos());
        (l.eye[side] + d * r, d)
    }

    /// Poses the head for an expression: deformed skin, eyelids and landmarks, all in head
    /// coordinates. Writes into `out`, reusing its buffers.
    pub(crate) fn pose_into(&self, e: &Expression, out: &mut Posed) {
        out.pos.clear();
        out.attr.clear();
        out.tris.clear();
        out.pos.extend_from_slice(&self.skin_rest);
        for (k, list) in self.skin_blend.iter().enumerate() {
            let a = e.au[k];
            if a != 0.0 {
                for &(i, d) in list {
                    out.pos[i as usize] += d * a;
                }
            }
        }
        let n_skin = out.pos.len();
        vertex_normals(&out.pos, &self.skin_tris, &mut out.normal);
        out.attr
            .extend(self.skin_uv.iter().map(|&[u, v]| [u, v, 0.0]));
        out.tris
            .extend(self.skin_tris.iter().map(|&t| (t, Part::Skin)));

        let add = |out: &mut Posed, m: &PartMesh, part: Part| {
            let base = out.pos.len() as u32;
            out.pos.extend_from_slice(&m.pos);
            out.normal.extend_from_slice(&m.normal);
            out.attr.extend_from_slice(&m.attr);
            out.tris.extend(
                m.tris
                    .iter()
                    .map(|t| ([t[0] + base, t[1] + base, t[2] + base], part)),
            );
        };
        add(out, &self.eyeballs, Part::Eyeball);
        add(out, &self.ears, Part::Ear);
        add(out, &self.neck, Part::Neck);

        let (up, lo) = Self::lid_angles(e);
        for side in 0..2 {
            for (upper, edge, part) in [(true, up, Part::UpperLid), (false, lo, Part::LowerLid)] {
                let base = out.pos.len() as u32;
                let mut lid = PartMesh::default();
                for r in 0..self.lid_rows {
                    let t = (r as f32 / (self.lid_rows - 1) as f32).powf(1.6);
                    for &phi in &self.lid_phi {
                        let (p, d) = self.lid_point(side, upper, edge, phi, t);
                        lid.pos.push(p);
                        lid.normal.push(d);
                        lid.attr.push([phi, t, 0.0]);
                    }
                }
                let mut tris = self.lid_tris.clone();
                orient(&lid.pos, &mut tris, self.l.eye[side]);
                out.pos.extend(lid.pos);
                out.normal.extend(lid.normal);
                out.attr.extend(lid.attr);
                out.tris.extend(
                    tris.iter()
                        .map(|t| ([t[0] + base, t[1] + base, t[2] + base], part)),
                );
            }
        }
        out.body_from = out.pos.len();
        add(out, &self.torso, Part::Torso);
        debug_assert!(n_skin <= out.body_from);

        out.landmarks.clear();
        out.landmarks.resize(NUM_LANDMARKS, Vec3::default());
        for (j, (idx, _)) in self.marks.iter().enumerate() {
            let mut p = self.mark_rest[j];
            for k in 0..NUM_AUS {
                p += self.mark_blend[j][k] * e.au[k];
            }
            out.landmarks[*idx] = p;
        }
        // 37-42 right eye (outer, upper×2, inner, lower×2), 43-48 left eye (inner, upper×2,
        // outer, lower×2): clockwise in the image, as in iBUG.
        let f = PHI_C / 3.0;
        for side in 0..2 {
            let order: [(bool, f32); 6] = [
                (true, -PHI_C),
                (true, -f),
                (true, f),
                (true, PHI_C),
                (false, f),
                (false, -f),
            ];
            for (i, (upper, phi)) in order.into_iter().enumerate() {
                let edge = if upper { up } else { lo };
                out.landmarks[36 + 6 * side + i] = self.lid_point(side, upper, edge, phi, 0.0).0;
            }
        }
        for side in 0..2 {
            out.pupils[side] = self.l.eye[side] + Vec3::new(0.0, 0.0, self.l.r_e);
        }
    }

    /// Albedo (RGB in [0, 1]) and specular strength of a surface point.
    pub(crate) fn material(&self, part: Part, a: [f32; 3], shirt: [f32; 3]) -> ([f32; 3], f32) {
        let p = &self.params;
        match part {
            Part::Skin => self.skin_material(a[0], a[1]),
            Part::Eyeball => {
                let rho = (a[0] * a[0] + a[1] * a[1]).sqrt();
                let g = if a[2] > 0.0 { rho.min(1.0).asin() } else { 2.0 };
                if g < PUPIL {
                    ([0.03, 0.03, 0.03], 0.3)
                } else if g < IRIS {
                    let ang = a[1].atan2(a[0]);
                    let streak = 0.85 + 0.3 * value_noise(ang * 6.0, 0.5, 7);
                    let limbus = smoothstep(IRIS - 0.1, IRIS, g);
                    let c = p.iris.map(|x| (x * streak).min(1.0));
                    (mix3(c, [0.05, 0.04, 0.04], 0.7 * limbus), 0.3)
                } else {
                    (
                        mix3(
                            [0.93, 0.9, 0.86],
                            [0.85, 0.65, 0.62],
                            smoothstep(1.0, 1.5, g),
                        ),
                        0.5,
                    )
                }
            }
            Part::UpperLid | Part::LowerLid => {
                let t = a[1];
                let lid = p.skin.map(|x| x * 0.92);
                if part == Part::UpperLid {
                    let lash = 1.0 - smoothstep(0.05, 0.12, t);
                    let crease = 0.15 * gauss(t, 0.35, 0.05);
                    let c = lid.map(|x| x * (1.0 - crease));
                    (mix3(c, [0.05, 0.04, 0.04], 0.95 * lash), 0.0)
                } else {
                    let lash = 1.0 - smoothstep(0.02, 0.06, t);
                    (mix3(lid, [0.25, 0.15, 0.13], 0.7 * lash), 0.0)
                }
            }
            Part::Ear => {
                let c = [p.skin[0], p.skin[1] * 0.92, p.skin[2] * 0.9];
                let concha = if a[2] > 0.0 {
                    1.0 - smoothstep(0.2, 0.5, a[0] * a[0] + a[1] * a[1])
                } else {
                    0.0
                };
                (c.map(|x| x * (1.0 - 0.35 * concha)), 0.0)
            }
            Part::Neck => (p.skin.map(|x| x * 0.8), 0.0),
            Part::Torso => (shirt, 0.0),
        }
    }

    fn skin_material(&self, u: f32, v: f32) -> ([f32; 3], f32) {
        let l = &self.l;
        if let Some(s) = l.band(v) {
            let a = u.abs() / l.u_m;
            let dark = mix3(
                [0.32, 0.10, 0.10],
                [0.06, 0.02, 0.02],
                (std::f32::consts::PI * s).sin(),
            );
            if s > 0.68 && a < 0.8 {
                let gap = (u / 0.035).fract().abs();
                let line = if !(0.08..=0.92).contains(&gap) {
                    0.75
                } else {
                    1.0
                };
                return ([0.92 * line, 0.9 * line, 0.84 * line], 0.4);
            }
            if s < 0.18 && a < 0.7 {
                return ([0.82, 0.8, 0.74], 0.3);
            }
            if s < 0.4 {
                return (mix3(dark, [0.55, 0.22, 0.22], 0.6), 0.1);
            }
            return (dark, 0.0);
        }
        self.texel(u, l.geo(v))
    }

    /// Bilinear lookup in the baked skin texture at longitude `u`, geometric latitude `vg`.
    fn texel(&self, u: f32, vg: f32) -> ([f32; 3], f32) {
        let fx = (u + std::f32::consts::PI) / std::f32::consts::TAU * TEX_W as f32 - 0.5;
        let fy = ((vg + std::f32::consts::FRAC_PI_2) / std::f32::consts::PI * TEX_H as f32 - 0.5)
            .clamp(0.0, (TEX_H - 1) as f32);
        // Truncation after a shift floors without a libm call (fx ≥ -0.5, fy ≥ 0).
        let xs = (fx + 1.0) as i64 - 1;
        let ys = fy as usize;
        let (tx, ty) = (fx - xs as f32, fy - ys as f32);
        let (xa, xb) = (
            xs.rem_euclid(TEX_W as i64) as usize,
            (xs + 1).rem_euclid(TEX_W as i64) as usize,
        );
        let (ya, yb) = (ys, (ys + 1).min(TEX_H - 1));
        let t = &self.skin_tex;
        let mut out = [0.0f32; 4];
        for (j, o) in out.iter_mut().enumerate() {
            let top = t[ya * TEX_W + xa][j] + (t[ya * TEX_W + xb][j] - t[ya * TEX_W + xa][j]) * tx;
            let bot = t[yb * TEX_W + xa][j] + (t[yb * TEX_W + xb][j] - t[yb * TEX_W + xa][j]) * tx;
            *o = top + (bot - top) * ty;
        }
        ([out[0], out[1], out[2]], out[3])
    }
}

/// Skin texture size: longitude × latitude texels (about 0.008 rad each).
const TEX_W: usize = 768;
/// Skin texture height in texels.
const TEX_H: usize = 384;

/// Bakes the skin albedo (RGB) and specular strength over the whole parameter sphere.
fn bake_skin(l: &Layout, p: &IdentityParams) -> Vec<[f32; 4]> {
    let mut t = Vec::with_capacity(TEX_W * TEX_H);
    for j in 0..TEX_H {
        let vg =
            -std::f32::consts::FRAC_PI_2 + (j as f32 + 0.5) * std::f32::consts::PI / TEX_H as f32;
        for i in 0..TEX_W {
            let u = -std::f32::consts::PI + (i as f32 + 0.5) * std::f32::consts::TAU / TEX_W as f32;
            let (c, s) = paint_skin(l, p, u, vg);
            t.push([c[0], c[1], c[2], s]);
        }
    }
    t
}

/// Procedural skin albedo and specular strength at longitude `u`, geometric latitude `vg`:
/// skin with blush, lips, nostrils, eyebrows and hair.
fn paint_skin(l: &Layout, p: &IdentityParams, u: f32, vg: f32) -> ([f32; 3], f32) {
    let a = u.abs();
    let n = 0.94 + 0.1 * value_noise(u * 9.0, vg * 9.0, 11);
    let mut c = p.skin.map(|x| x * n);
    let blush = 0.35 * gauss(a, 0.5, 0.15) * gauss(vg, -0.25, 0.12);
    c = mix3(c, [p.skin[0], p.skin[1] * 0.78, p.skin[2] * 0.78], blush);
    // Lips (vermilion), with a darker line where they meet.
    let (h, dist) = if vg >= l.v_m {
        (l.upper_lip_h(u), vg - l.v_m)
    } else {
        (l.lower_lip_h(u), l.v_m - vg)
    };
    if h > 0.0 {
        let m = 1.0 - smoothstep(0.8 * h, h + 0.004, dist);
        let seam = (1.0 - smoothstep(0.0, 0.012, dist)) * l.inside(u).sqrt();
        let lc = mix3(p.lips, p.lips.map(|x| x * 0.45), seam);
        c = mix3(c, lc, m);
    }
    // Nostrils.
    for sg in [-1.0f32, 1.0] {
        let dx = (u - sg * 0.038 * l.nose_w) / (0.022 * l.nose_w);
        let dy = (vg - (l.v_base - 0.002)) / 0.013;
        let r = dx * dx + dy * dy;
        c = mix3(c, [0.12, 0.06, 0.05], 0.9 * (1.0 - smoothstep(0.6, 1.0, r)));
    }
    // Eyebrows, a darker shade of the hair.
    let b = l.brow(u, vg);
    if b > 0.0 {
        let bc = p.hair.map(|x| x * 0.6 + 0.02);
        let tex = 0.8 + 0.4 * value_noise(u * 90.0, vg * 30.0, 3);
        c = mix3(c, bc.map(|x| x * tex), 0.92 * b);
    }
    // Hair.
    let hl = l.hair_line(u);
    let hm = smoothstep(hl - 0.01, hl + 0.05, vg) * if l.hair_vol > 0.0 { 1.0 } else { 0.0 };
    if hm > 0.0 {
        let tex =
            0.7 + 0.55 * value_noise(u * 70.0, vg * 9.0, 5) * value_noise(u * 20.0, vg * 4.0, 9);
        c = mix3(c, p.hair.map(|x| (x * tex).min(1.0)), hm);
        return (c, 0.25 * hm);
    }
    (c, 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_mapping_round_trips() {
        let l = Layout::new(&IdentityParams::average());
        for vg in [-1.4f32, -0.9, -0.63, -0.61, 0.0, 1.2] {
            let up = vg > l.v_m;
            assert!((l.geo(l.raw(vg, up)) - vg).abs() < 1e-5, "vg {vg}");
        }
        assert_eq!(l.geo(l.v_m), l.v_m);
        assert!((l.geo(std::f32::consts::FRAC_PI_2) - std::f32::consts::FRAC_PI_2).abs() < 1e-6);
    }

    #[test]
    fn mouth_band_is_closed_at_rest_and_opens_with_jaw_drop() {
        let l = Layout::new(&IdentityParams::average());
        let lo = l.shape(0.0, l.geo(l.v_m - l.delta), true);
        let hi = l.shape(0.0, l.geo(l.v_m + l.delta), true);
        assert!((lo - hi).norm() < 1e-6);
        let open = (l.disp(AU26, 0.0, l.v_m + l.delta) - l.disp(AU26, 0.0, l.v_m - l.delta)).y;
        assert!(open > 0.2, "jaw drop opens the mouth by {open}");
        let corner = (l.disp(AU26, l.u_m * 1.2, l.v_m + l.delta)
            - l.disp(AU26, l.u_m * 1.2, l.v_m - l.delta))
        .norm();
        assert!(corner < 1e-6, "no gap outside the mouth: {corner}");
    }
}
