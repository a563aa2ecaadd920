//! Z-buffer rasteriser with a perspective camera, per-pixel Lambert + ambient shading and
//! supersampling, plus the exact per-frame ground truth (landmarks, visibility, pose, AUs,
//! face box).
//!
//! Image coordinates are continuous pixels: x to the right, y down, (0, 0) the top-left
//! corner of the image, so the centre of pixel (i, j) is (i + 0.5, j + 0.5).

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::head::{Head, Part, Posed, NUM_LANDMARKS};
use crate::math::{mix3, value_noise, Vec3};
use crate::scene::{Background, Expression, FrameParams, Pose};

/// Camera distance from the head centre, in head units (1 unit ≈ 75 mm).
const CAM_DIST: f32 = 9.0;
/// Height of the field of view at the head centre's depth, in head units.
const VIEW_HEIGHT: f32 = 3.4;
/// Height in head coordinates that the optical axis passes through.
const CAM_Y: f32 = -0.25;
/// Neck pivot the head rotates about.
const PIVOT: Vec3 = Vec3::new(0.0, -0.8, -0.25);
/// Depth tolerance of the landmark visibility test, in head units (≈ 4 mm).
const VIS_TOL: f32 = 0.05;

/// Exact ground truth of one rendered frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    /// 68 landmarks in iBUG / 300-W order, continuous pixel coordinates `[x, y]`
    /// (see the module docs), in the output image.
    pub landmarks: Vec<[f32; 2]>,
    /// Per-landmark visibility: not hidden by another surface (z-buffer test) and inside
    /// the image.
    pub visible: Vec<bool>,
    /// The 5 MAFL / CelebA points `[x, y]`: image-left eye centre (the subject's right
    /// pupil), image-right eye centre, nose tip (landmark 31), image-left mouth corner
    /// (landmark 49), image-right mouth corner (landmark 55).
    pub mafl: [[f32; 2]; 5],
    /// Head pose in degrees.
    pub pose: Pose,
    /// Action-unit intensities.
    pub expression: Expression,
    /// Face box `[x, y, w, h]` in pixels: a square around the 68 landmarks, 10 % larger
    /// than their larger extent, centred 5 % of their height above their centre.
    pub face_box: [f32; 4],
}

/// Reusable render buffers for one output size.
#[derive(Debug)]
pub struct Renderer {
    size: u32,
    ss: u32,
    posed: Posed,
    screen: Vec<[f32; 3]>,
    normals: Vec<Vec3>,
    depth: Vec<f32>,
    tri: Vec<u32>,
    bary: Vec<[f32; 2]>,
    bg: Option<(Background, Vec<[f32; 3]>)>,
}

const NONE: u32 = u32::MAX;

impl Renderer {
    /// Buffers for `size × size` output images rendered at `supersample`× resolution
    /// (1 or more).
    pub fn new(size: u32, supersample: u32) -> Self {
        let ss = supersample.max(1);
        let n = (size * ss) as usize * (size * ss) as usize;
        Self {
            size,
            ss,
            posed: Posed::default(),
            screen: Vec::new(),
            normals: Vec::new(),
            depth: vec![0.0; n],
            tri: vec![NONE; n],
            bary: vec![[0.0; 2]; n],
            bg: None,
        }
    }

    /// Output image side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    fn background(&mut self, b: &Background) {
        if matches!(&self.bg, Some((cached, _)) if cached == b) {
            return;
        }
        let s = (self.size * self.ss) as usize;
        let mut px = Vec::with_capacity(s * s);
        for y in 0..s {
            for x in 0..s {
                let fx = (x as f32 + 0.5) / s as f32;
                let fy = (y as f32 + 0.5) / s as f32;
                let c = match b {
                    Background::Gradient { from, to, angle } => {
                        let t = (fx - 0.5) * angle.cos() + (fy - 0.5) * angle.sin() + 0.5;
                        mix3(*from, *to, t.clamp(0.0, 1.0))
                    }
                    Background::Noise {
                        from,
                        to,
                        scale,
                        seed,
                    } => {
                        let (nx, ny) = (fx / scale, fy / scale);
                        let n = 0.55 * value_noise(nx, ny, *seed)
                            + 0.3 * value_noise(2.1 * nx, 2.1 * ny, seed.wrapping_add(1))
                            + 0.15 * value_noise(4.3 * nx, 4.3 * ny, seed.wrapping_add(2));
                        mix3(*from, *to, n)
                    }
                };
                let r2 = (fx - 0.5).powi(2) + (fy - 0.5).powi(2);
                px.push(c.map(|v| v * (1.0 - 0.35 * r2)));
            }
        }
        self.bg = Some((b.clone(), px));
    }

    /// Renders one frame of `head` and returns the image and its exact ground truth.
    pub fn render(&mut self, head: &Head, fp: &FrameParams) -> (RgbImage, FrameTruth) {
        self.background(&fp.background);
        head.pose_into(&fp.expression, &mut self.posed);
        let s = (self.size * self.ss) as f32;
        let f = s * CAM_DIST / VIEW_HEIGHT * fp.zoom;
        let c = s / 2.0;
        let r = fp.pose.matrix();
        let shift = Vec3::new(fp.shift[0], fp.shift[1], 0.0);
        let to_world = |p: Vec3, body: bool| -> Vec3 {
            if body {
                p + shift
            } else {
                r.apply(p - PIVOT) + PIVOT + shift
            }
        };
        let project = |w: Vec3| -> [f32; 3] {
            let d = CAM_DIST - w.z;
            [c + f * w.x / d, c - f * (w.y - CAM_Y) / d, 1.0 / d]
        };
        let posed = &self.posed;
        self.screen.clear();
        self.normals.clear();
        for (i, (&p, &n)) in posed.pos.iter().zip(&posed.normal).enumerate() {
            let body = i >= posed.body_from;
            self.screen.push(project(to_world(p, body)));
            self.normals.push(if body { n } else { r.apply(n) });
        }

        self.raster();
        let img = self.shade(head, fp);
        let truth = self.truth(fp, &to_world, &project);
        (img, truth)
    }

    /// Fills the z-buffer, triangle ids and perspective-correct barycentrics.
    fn raster(&mut self) {
        self.depth.fill(0.0);
        self.tri.fill(NONE);
        let side = (self.size * self.ss) as i32;
        for (ti, (t, _)) in self.posed.tris.iter().enumerate() {
            let [i0, i1, i2] = *t;
            let (p0, p1, p2) = (
                self.screen[i0 as usize],
                self.screen[i1 as usize],
                self.screen[i2 as usize],
            );
            if p0[2] <= 0.0 || p1[2] <= 0.0 || p2[2] <= 0.0 {
                continue;
            }
            let area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1]);
            // Front faces wind clockwise on a y-down screen: negative area.
            if area >= 0.0 {
                continue;
            }
            // Pixels whose centres (i + 0.5) fall inside the bounding box.
            let x0 = ((p0[0].min(p1[0]).min(p2[0]) - 0.5).ceil() as i32).max(0);
            let x1 = ((p0[0].max(p1[0]).max(p2[0]) - 0.5).floor() as i32).min(side - 1);
            let y0 = ((p0[1].min(p1[1]).min(p2[1]) - 0.5).ceil() as i32).max(0);
            let y1 = ((p0[1].max(p1[1]).max(p2[1]) - 0.5).floor() as i32).min(side - 1);
            if x0 > x1 || y0 > y1 {
                continue;
            }
            let inv = 1.0 / area;
            let e = [
                edge(i1, i2, p1, p2),
                edge(i2, i0, p2, p0),
                edge(i0, i1, p0, p1),
            ];
            for py in y0..=y1 {
                let y = py as f32 + 0.5;
                let rows = e.map(|c| c[1] * y + c[2]);
                let base = py as usize * side as usize;
                for px in x0..=x1 {
                    let x = px as f32 + 0.5;
                    let e0 = e[0][3] * (e[0][0] * x + rows[0]);
                    let e1 = e[1][3] * (e[1][0] * x + rows[1]);
                    let e2 = e[2][3] * (e[2][0] * x + rows[2]);
                    if e0 > 0.0 || e1 > 0.0 || e2 > 0.0 {
                        continue;
                    }
                    let (l0, l1, l2) = (e0 * inv, e1 * inv, e2 * inv);
                    let iz = l0 * p0[2] + l1 * p1[2] + l2 * p2[2];
                    let k = base + px as usize;
                    if iz > self.depth[k] {
                        self.depth[k] = iz;
                        self.tri[k] = ti as u32;
                        self.bary[k] = [l0 * p0[2] / iz, l1 * p1[2] / iz];
                    }
                }
            }
        }
    }

    fn shade(&self, head: &Head, fp: &FrameParams) -> RgbImage {
        let lt = &fp.lighting;
        let ld = Vec3::new(lt.direction[0], lt.direction[1], lt.direction[2]).normalized();
        let half = (ld + Vec3::new(0.0, 0.0, 1.0)).normalized();
        let side = (self.size * self.ss) as usize;
        let bg = self.bg.as_ref().map(|b| &b.1);
        let mut acc = vec![[0.0f32; 3]; (self.size * self.size) as usize];
        for y in 0..side {
            for x in 0..side {
                let k = y * side + x;
                let col = if self.tri[k] == NONE {
                    bg.map_or([0.0; 3], |b| b[k])
                } else {
                    let (t, part) = self.posed.tris[self.tri[k] as usize];
                    let [b0, b1] = self.bary[k];
                    let b2 = 1.0 - b0 - b1;
                    let [i0, i1, i2] = t.map(|i| i as usize);
                    let n = (self.normals[i0] * b0 + self.normals[i1] * b1 + self.normals[i2] * b2)
                        .normalized();
                    let (a0, a1, a2) = (
                        self.posed.attr[i0],
                        self.posed.attr[i1],
                        self.posed.attr[i2],
                    );
                    let a = std::array::from_fn(|j| a0[j] * b0 + a1[j] * b1 + a2[j] * b2);
                    let (albedo, spec) = head.material(part, a, fp.shirt);
                    let diff = n.dot(ld).max(0.0);
                    let shade = lt.ambient + lt.diffuse * diff;
                    let hl = if spec > 0.0 {
                        let exponent = if part == Part::Eyeball { 60.0 } else { 16.0 };
                        spec * lt.diffuse * n.dot(half).max(0.0).powf(exponent)
                    } else {
                        0.0
                    };
                    std::array::from_fn(|j| albedo[j] * shade * lt.colour[j] + hl)
                };
                let o = (y / self.ss as usize) * self.size as usize + x / self.ss as usize;
                for j in 0..3 {
                    acc[o][j] += col[j];
                }
            }
        }
        let norm = 255.0 / (self.ss * self.ss) as f32;
        RgbImage::from_fn(self.size, self.size, |x, y| {
            let a = acc[(y * self.size + x) as usize];
            Rgb(a.map(|v| (v * norm).round().clamp(0.0, 255.0) as u8))
        })
    }

    fn truth(
        &self,
        fp: &FrameParams,
        to_world: &dyn Fn(Vec3, bool) -> Vec3,
        project: &dyn Fn(Vec3) -> [f32; 3],
    ) -> FrameTruth {
        let ss = self.ss as f32;
        let side = (self.size * self.ss) as i32;
        let mut landmarks = Vec::with_capacity(NUM_LANDMARKS);
        let mut visible = Vec::with_capacity(NUM_LANDMARKS);
        for &p in &self.posed.landmarks {
            let q = project(to_world(p, false));
            landmarks.push([q[0] / ss, q[1] / ss]);
            let (px, py) = (q[0].floor() as i32, q[1].floor() as i32);
            // Visible unless every z-buffer sample around it is clearly nearer: one sample
            // alone misjudges grazing surfaces, whose depth changes fast across a pixel.
            let vis = px >= 0
                && py >= 0
                && px < side
                && py < side
                && (-1..=1).any(|dy| {
                    (-1..=1).any(|dx| {
                        let (x, y) = ((px + dx).clamp(0, side - 1), (py + dy).clamp(0, side - 1));
                        let z = self.depth[(y * side + x) as usize];
                        z <= 0.0 || 1.0 / q[2] <= 1.0 / z + VIS_TOL
                    })
                });
            visible.push(vis);
        }
        let pupils = self.posed.pupils.map(|p| {
            let q = project(to_world(p, false));
            [q[0] / ss, q[1] / ss]
        });
        let mafl = [
            pupils[0],
            pupils[1],
            landmarks[30],
            landmarks[48],
            landmarks[54],
        ];
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for l in &landmarks {
            x0 = x0.min(l[0]);
            x1 = x1.max(l[0]);
            y0 = y0.min(l[1]);
            y1 = y1.max(l[1]);
        }
        let h = y1 - y0;
        let sidelen = 1.1 * (x1 - x0).max(h);
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.05 * h);
        FrameTruth {
            landmarks,
            visible,
            mafl,
            pose: fp.pose,
            expression: fp.expression,
            face_box: [cx - sidelen / 2.0, cy - sidelen / 2.0, sidelen, sidelen],
        }
    }

    /// Inverse depth (1 / distance along the optical axis, head units) of the supersampled
    /// z-buffer of the last frame, row-major, `(size·ss)²` values; 0 where nothing was drawn.
    pub fn inverse_depth(&self) -> &[f32] {
        &self.depth
    }

    /// Supersampling factor.
    pub fn supersample(&self) -> u32 {
        self.ss
    }
}

/// Edge function of screen points `a → b` as `[A, B, C, sign]`: its value at `(x, y)` is
/// `sign · (A x + (B y + C))`. The coefficients are computed in a canonical vertex order so
/// that two triangles sharing an edge get exactly opposite values (no cracks).
fn edge(ia: u32, ib: u32, a: [f32; 3], b: [f32; 3]) -> [f32; 4] {
    let (a, b, sign) = if ia < ib { (a, b, 1.0) } else { (b, a, -1.0) };
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    [-dy, dx, dy * a[0] - dx * a[1], sign]
}

/// Renders one `size × size` frame of `head` with 2× supersampling.
pub fn render_frame(head: &Head, params: &FrameParams, size: u32) -> (RgbImage, FrameTruth) {
    Renderer::new(size, 2).render(head, params)
}
