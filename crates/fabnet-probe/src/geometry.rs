//! Crop geometry for the probe benchmarks: crop boxes, the MAFL and 300-W crops, and the mapping of
//! landmark pixel coordinates to and from the paper's [-1, 1] crop coordinates.
//!
//! Conventions, used everywhere in this crate:
//! - Pixel coordinates are 0-based with pixel centres on integers: column `i` spans `[i − ½, i + ½)`.
//!   Readers of 1-based formats (300-W `.pts`) subtract 1 when they read.
//! - A [`CropBox`] is given by its edges in those coordinates. An integer pixel rectangle of columns
//!   `x..x+w` therefore has `left = x − ½` and `width = w` ([`CropBox::from_pixel_rect`]).
//! - Crop coordinates are `u = 2 (x − left) / width − 1`, x first: the box's left edge is −1 and its
//!   right edge +1 (the half-pixel, "align_corners = false" convention). A bilinear resize of the crop
//!   with that convention leaves `u` unchanged, so targets do not depend on the output size.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};

/// An axis-aligned crop box in pixel coordinates (edges, not centres; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropBox {
    /// x of the left edge, pixels.
    pub left: f64,
    /// y of the top edge, pixels.
    pub top: f64,
    /// Width, pixels (> 0).
    pub width: f64,
    /// Height, pixels (> 0).
    pub height: f64,
}

impl CropBox {
    /// The box covering the integer pixel rectangle of columns `x..x+w` and rows `y..y+h`
    /// (the convention of dlib boxes and of the pose CSV's `x,y,w,h`).
    pub fn from_pixel_rect(x: f64, y: f64, w: f64, h: f64) -> Self {
        CropBox {
            left: x - 0.5,
            top: y - 0.5,
            width: w,
            height: h,
        }
    }

    /// Maps a pixel point `[x, y]` to crop coordinates `[u, v]` (−1 and +1 at the box edges).
    pub fn to_crop(&self, p: [f64; 2]) -> [f64; 2] {
        [
            2.0 * (p[0] - self.left) / self.width - 1.0,
            2.0 * (p[1] - self.top) / self.height - 1.0,
        ]
    }

    /// Maps crop coordinates `[u, v]` back to a pixel point `[x, y]`; the inverse of [`CropBox::to_crop`].
    pub fn from_crop(&self, u: [f64; 2]) -> [f64; 2] {
        [
            self.left + (u[0] + 1.0) * 0.5 * self.width,
            self.top + (u[1] + 1.0) * 0.5 * self.height,
        ]
    }

    /// The box grown by `fraction` of its width (height) on the left and right (top and bottom), about
    /// its centre; e.g. a margin around a detector or AFLW box before cropping.
    pub fn expand(&self, fraction: f64) -> CropBox {
        CropBox {
            left: self.left - fraction * self.width,
            top: self.top - fraction * self.height,
            width: self.width * (1.0 + 2.0 * fraction),
            height: self.height * (1.0 + 2.0 * fraction),
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = [self.left, self.top, self.width, self.height]
            .iter()
            .all(|v| v.is_finite())
            && self.width > 0.0
            && self.height > 0.0;
        if ok {
            Ok(())
        } else {
            Err(ProbeError::Invalid(format!("degenerate crop box {self:?}")))
        }
    }
}

/// The MAFL / CelebA-aligned crop of §5: drop the top `drop_top` rows, then centre-crop
/// `(w − shrink) × (h′ − shrink)` where `h′ = h − drop_top` is the height left after the drop.
/// On CelebA's 178×218 aligned images the defaults give the 108×113 window at columns 35..143, rows 70..183.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaflCrop {
    /// Rows removed from the top first (35).
    pub drop_top: u32,
    /// Pixels removed in total from each dimension by the centre crop (70); must be even.
    pub shrink: u32,
}

impl Default for MaflCrop {
    fn default() -> Self {
        MaflCrop {
            drop_top: 35,
            shrink: 70,
        }
    }
}

impl MaflCrop {
    /// The crop box for an image of `width × height` pixels.
    pub fn crop_box(&self, width: u32, height: u32) -> Result<CropBox> {
        if self.shrink % 2 != 0 {
            return Err(ProbeError::Invalid(format!(
                "mafl crop shrink {} must be even",
                self.shrink
            )));
        }
        let h_left = height.saturating_sub(self.drop_top);
        if width <= self.shrink || h_left <= self.shrink {
            return Err(ProbeError::Invalid(format!(
                "image of {width}x{height} is too small for the mafl crop (drop {}, shrink {})",
                self.drop_top, self.shrink
            )));
        }
        let half = f64::from(self.shrink / 2);
        Ok(CropBox::from_pixel_rect(
            half,
            f64::from(self.drop_top) + half,
            f64::from(width - self.shrink),
            f64::from(h_left - self.shrink),
        ))
    }
}

/// How a 300-W style box is derived from the landmarks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointsBox {
    /// Margin added on each side, as a fraction of the points' extent along that axis (§5: 0.1).
    pub margin: f64,
    /// Grow the shorter side about the centre so the box is square (off by default, as in §5).
    pub square: bool,
}

impl Default for PointsBox {
    fn default() -> Self {
        PointsBox {
            margin: 0.1,
            square: false,
        }
    }
}

impl PointsBox {
    /// The box around `points` (pixels, x first): their bounding box grown by `margin` on each side.
    pub fn crop_box(&self, points: &[[f64; 2]]) -> Result<CropBox> {
        if points.is_empty() {
            return Err(ProbeError::Invalid(
                "cannot make a box from zero points".into(),
            ));
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(ProbeError::Invalid(format!(
                "box margin {} must be >= 0",
                self.margin
            )));
        }
        let (mut x0, mut y0, mut x1, mut y1) = (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        );
        for p in points {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        let (mut w, mut h) = (
            (x1 - x0) * (1.0 + 2.0 * self.margin),
            (y1 - y0) * (1.0 + 2.0 * self.margin),
        );
        let (cx, cy) = ((x0 + x1) * 0.5, (y0 + y1) * 0.5);
        if self.square {
            let s = w.max(h);
            w = s;
            h = s;
        }
        let b = CropBox {
            left: cx - w * 0.5,
            top: cy - h * 0.5,
            width: w,
            height: h,
        };
        b.validate()?;
        Ok(b)
    }
}

/// Crops `img` to `bbox` and resizes it to `out_w × out_h` with bilinear sampling in the module's
/// convention. Samples are clamped to the centres of the box's outermost pixels (so an integer box gives
/// exactly "crop, then resize"); parts of the box outside the image are black.
pub fn crop_resize(img: &RgbImage, bbox: &CropBox, out_w: u32, out_h: u32) -> Result<RgbImage> {
    bbox.validate()?;
    if out_w == 0 || out_h == 0 {
        return Err(ProbeError::Invalid(format!(
            "output size {out_w}x{out_h} is empty"
        )));
    }
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let px = |x: i64, y: i64| -> [f64; 3] {
        if x < 0 || y < 0 || x >= iw || y >= ih {
            [0.0; 3]
        } else {
            let p = img.get_pixel(x as u32, y as u32).0;
            [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]
        }
    };
    let clamp = |v: f64, lo: f64, len: f64| {
        let (a, b) = (lo + 0.5, lo + len - 0.5);
        if a > b {
            lo + len * 0.5
        } else {
            v.clamp(a, b)
        }
    };
    let mut out = RgbImage::new(out_w, out_h);
    for j in 0..out_h {
        let v = (2.0 * f64::from(j) + 1.0) / f64::from(out_h) - 1.0;
        for i in 0..out_w {
            let u = (2.0 * f64::from(i) + 1.0) / f64::from(out_w) - 1.0;
            let [x, y] = bbox.from_crop([u, v]);
            let (x, y) = (
                clamp(x, bbox.left, bbox.width),
                clamp(y, bbox.top, bbox.height),
            );
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let (a, b, c, d) = (
                px(x0, y0),
                px(x0 + 1, y0),
                px(x0, y0 + 1),
                px(x0 + 1, y0 + 1),
            );
            let mut rgb = [0u8; 3];
            for k in 0..3 {
                let top = a[k] * (1.0 - fx) + b[k] * fx;
                let bot = c[k] * (1.0 - fx) + d[k] * fx;
                rgb[k] = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
            }
            out.put_pixel(i, j, Rgb(rgb));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mafl_box_on_celeba_aligned_size() {
        let b = MaflCrop::default().crop_box(178, 218).unwrap();
        // Columns 35..143 and rows 35 + 35 = 70..183, as edges at −½.
        assert_eq!(
            b,
            CropBox {
                left: 34.5,
                top: 69.5,
                width: 108.0,
                height: 113.0
            }
        );
        // The centre of the first kept pixel lies half a pixel inside the −1 edge.
        let u = b.to_crop([35.0, 70.0]);
        assert!(
            (u[0] - (-1.0 + 1.0 / 108.0)).abs() < 1e-12
                && (u[1] - (-1.0 + 1.0 / 113.0)).abs() < 1e-12
        );
        assert!(MaflCrop {
            drop_top: 35,
            shrink: 71
        }
        .crop_box(178, 218)
        .is_err());
        assert!(MaflCrop::default().crop_box(60, 218).is_err());
    }

    #[test]
    fn points_box_margin_and_round_trip() {
        let pts = [[10.0, 20.0], [30.0, 60.0], [20.0, 40.0]];
        let b = PointsBox::default().crop_box(&pts).unwrap();
        // Extent 20 × 40 grown by 10 % a side: 24 × 48 about the centre (20, 40).
        assert!((b.left - 8.0).abs() < 1e-12 && (b.top - 16.0).abs() < 1e-12);
        assert!((b.width - 24.0).abs() < 1e-12 && (b.height - 48.0).abs() < 1e-12);
        let sq = PointsBox {
            margin: 0.1,
            square: true,
        }
        .crop_box(&pts)
        .unwrap();
        assert!((sq.width - 48.0).abs() < 1e-12 && (sq.left + 4.0).abs() < 1e-12);
        for p in pts {
            let q = b.from_crop(b.to_crop(p));
            assert!((q[0] - p[0]).abs() < 1e-12 && (q[1] - p[1]).abs() < 1e-12);
        }
        assert_eq!(b.to_crop([8.0, 64.0]), [-1.0, 1.0]);
        // Growing the points' own bounding box by 10 % gives the same box.
        let tight = CropBox {
            left: 10.0,
            top: 20.0,
            width: 20.0,
            height: 40.0,
        };
        let grown = tight.expand(0.1);
        assert!((grown.left - b.left).abs() < 1e-12 && (grown.top - b.top).abs() < 1e-12);
        assert!((grown.width - b.width).abs() < 1e-12 && (grown.height - b.height).abs() < 1e-12);
    }

    #[test]
    fn crop_resize_identity_and_upscale() {
        let mut img = RgbImage::new(4, 3);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([(x * 60) as u8, (y * 100) as u8, 7]);
        }
        let full = CropBox::from_pixel_rect(0.0, 0.0, 4.0, 3.0);
        assert_eq!(crop_resize(&img, &full, 4, 3).unwrap(), img);
        // A 2×1 crop at column 1, row 1 doubled to 4×2: samples at x = 0.75, 1.25, 1.75, 2.25 (clamped to
        // [1, 2]) give red 60, 75, 105, 120; rows stay at y = 1 (green 100).
        let out = crop_resize(&img, &CropBox::from_pixel_rect(1.0, 1.0, 2.0, 1.0), 4, 2).unwrap();
        let reds: Vec<u8> = (0..4).map(|i| out.get_pixel(i, 0)[0]).collect();
        assert_eq!(reds, vec![60, 75, 105, 120]);
        assert_eq!(out.get_pixel(2, 1)[1], 100);
        // Outside the image is black.
        let off = crop_resize(&img, &CropBox::from_pixel_rect(10.0, 10.0, 2.0, 2.0), 2, 2).unwrap();
        assert!(off.pixels().all(|p| p.0 == [0, 0, 0]));
    }
}
