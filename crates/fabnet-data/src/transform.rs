//! The frame transform of the reference §1, and frame decoding.
//!
//! Every frame, target and source alike, goes through:
//! 1. resize to 256×256 (bilinear);
//! 2. zero-pad left 20, top 80, right 20, bottom 30 (giving 296×366);
//! 3. centre-crop 190;
//! 4. crop c×c at an offset inside that 190 window (c drawn per epoch, offset per frame), or,
//!    without jitter, the centre 170×170;
//! 5. resize to S×S (256 in the paper; S is configurable);
//! 6. RGB as f32 in [0, 1], CHW, no normalisation.
//!
//! Steps 2–4 are one [`CropWindow`], expressed in pixels of the 256×256 image of step 1.
//! All resizing uses the triangle (bilinear) filter, widened when downscaling like PIL's, and
//! intermediate images stay 8-bit as in the PIL pipeline of the authors' code; the output matches
//! PIL 9.4 within 2 levels of 255 (golden test, fixtures made by `tests/fixtures/pil_recipe.py`).

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ColorType, ImageReader, RgbImage};

use crate::error::{DataError, Result};

/// Side of the first resize (step 1), pixels.
pub const RESIZE: u32 = 256;
/// Zero padding of step 2, pixels: left, top, right, bottom.
pub const PAD: [u32; 4] = [20, 80, 20, 30];
/// Side of the centre crop of step 3, pixels.
pub const CENTRE_CROP: u32 = 190;
/// Smallest jitter crop side c (step 4), pixels.
pub const JITTER_CROP_MIN: u32 = 170;
/// Largest jitter crop side c (step 4), pixels; inclusive.
pub const JITTER_CROP_MAX: u32 = 189;
/// Side of the centred crop used without jitter, pixels.
pub const NO_JITTER_CROP: u32 = 170;

/// Left edge of step 3's 190 window, in pixels of the 256×256 image (padding removed).
const WINDOW_X: i32 = ((RESIZE + PAD[0] + PAD[2] - CENTRE_CROP) / 2) as i32 - PAD[0] as i32;
/// Top edge of step 3's 190 window, in pixels of the 256×256 image (padding removed).
const WINDOW_Y: i32 = ((RESIZE + PAD[1] + PAD[3] - CENTRE_CROP) / 2) as i32 - PAD[1] as i32;

/// A square crop (steps 2–4) in pixels of the 256×256 resized frame; it may reach into the
/// zero padding, i.e. have negative or out-of-range coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CropWindow {
    /// Left edge, pixels (x grows to the right).
    pub x: i32,
    /// Top edge, pixels (y grows downwards).
    pub y: i32,
    /// Side, pixels.
    pub size: u32,
}

impl CropWindow {
    /// Step 4 with jitter: a `size`×`size` crop at offset (`dx`, `dy`) inside step 3's 190
    /// window; offsets range over `0..=190 - size`.
    pub fn jittered(size: u32, dx: u32, dy: u32) -> Result<CropWindow> {
        if size == 0 || size > CENTRE_CROP {
            return Err(DataError::config(
                "crop size",
                format!("{size} is outside 1..={CENTRE_CROP}"),
            ));
        }
        let max = CENTRE_CROP - size;
        if dx > max || dy > max {
            return Err(DataError::config(
                "crop offset",
                format!("({dx}, {dy}) is outside 0..={max} for crop size {size}"),
            ));
        }
        Ok(CropWindow::at_offset(size, dx, dy))
    }

    /// [`CropWindow::jittered`] for offsets already known to be in range.
    pub(crate) fn at_offset(size: u32, dx: u32, dy: u32) -> CropWindow {
        CropWindow {
            x: WINDOW_X + dx as i32,
            y: WINDOW_Y + dy as i32,
            size,
        }
    }

    /// The no-jitter crop for validation and embedding: the centred 170×170 of step 3's window.
    pub fn centre() -> CropWindow {
        let offset = (CENTRE_CROP - NO_JITTER_CROP) / 2;
        CropWindow::at_offset(NO_JITTER_CROP, offset, offset)
    }
}

/// What had to be fixed while decoding a frame; reported with the frame's path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameIssues {
    /// The file was grayscale (with or without alpha) and was expanded to RGB.
    pub grayscale: bool,
    /// The file was not 8-bit RGB (alpha, 16-bit or grayscale) and was converted.
    pub converted: bool,
    /// The frame was not square, so step 1 changed its aspect ratio.
    pub non_square: bool,
}

impl FrameIssues {
    /// Whether anything had to be fixed.
    pub fn any(&self) -> bool {
        self.grayscale || self.converted || self.non_square
    }
}

/// Decodes a PNG or JPEG file (format guessed from its bytes) into 8-bit RGB.
pub fn load_frame(path: &Path) -> Result<(RgbImage, FrameIssues)> {
    let decode_err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let image = ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| decode_err(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(decode_err("the image is empty".to_string()));
    }
    let color = image.color();
    let issues = FrameIssues {
        grayscale: matches!(
            color,
            ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
        ),
        converted: color != ColorType::Rgb8,
        non_square: image.width() != image.height(),
    };
    Ok((image.into_rgb8(), issues))
}

/// Applies steps 1–6 to `image` with crop `window`: returns a (3, S, S) CHW buffer, RGB in
/// [0, 1], with S = `out_size`.
pub fn transform_frame(image: &RgbImage, window: CropWindow, out_size: u32) -> Result<Vec<f32>> {
    let mut out = vec![0.0; 3 * out_size as usize * out_size as usize];
    transform_frame_into(image, window, out_size, &mut out)?;
    Ok(out)
}

/// [`transform_frame`] into `out`, which must hold exactly 3·S·S values.
pub fn transform_frame_into(
    image: &RgbImage,
    window: CropWindow,
    out_size: u32,
    out: &mut [f32],
) -> Result<()> {
    let plane = out_size as usize * out_size as usize;
    if out_size == 0 || window.size == 0 {
        return Err(DataError::config(
            "transform size",
            format!(
                "output {out_size} and crop {} must be positive",
                window.size
            ),
        ));
    }
    if out.len() != 3 * plane {
        return Err(DataError::config(
            "transform buffer",
            format!("holds {} values, expected 3·{out_size}²", out.len()),
        ));
    }
    if image.width() == 0 || image.height() == 0 {
        return Err(DataError::config("transform input", "the image is empty"));
    }
    let resized;
    let base = if image.dimensions() == (RESIZE, RESIZE) {
        image
    } else {
        resized = imageops::resize(image, RESIZE, RESIZE, FilterType::Triangle);
        &resized
    };
    let crop = crop_zero_padded(base, window);
    let scaled;
    let last = if window.size == out_size {
        &crop
    } else {
        scaled = imageops::resize(&crop, out_size, out_size, FilterType::Triangle);
        &scaled
    };
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in last.as_raw().chunks_exact(3).enumerate() {
        r[i] = f32::from(px[0]) / 255.0;
        g[i] = f32::from(px[1]) / 255.0;
        b[i] = f32::from(px[2]) / 255.0;
    }
    Ok(())
}

/// Reads `path` and applies [`transform_frame`]; the convenience for embedding single frames.
pub fn transform_file(path: &Path, window: CropWindow, out_size: u32) -> Result<Vec<f32>> {
    let (image, _) = load_frame(path)?;
    transform_frame(&image, window, out_size)
}

/// Cuts `window` out of `base`, with zeros wherever the window leaves the image.
fn crop_zero_padded(base: &RgbImage, window: CropWindow) -> RgbImage {
    let c = window.size as i64;
    let (w, h) = (i64::from(base.width()), i64::from(base.height()));
    let (x0, y0) = (i64::from(window.x), i64::from(window.y));
    let mut crop = RgbImage::new(window.size, window.size);
    let (x_lo, x_hi) = (x0.max(0), (x0 + c).min(w));
    let (y_lo, y_hi) = (y0.max(0), (y0 + c).min(h));
    if x_lo < x_hi {
        let src = base.as_raw();
        let dst: &mut [u8] = &mut crop;
        let len = (x_hi - x_lo) as usize * 3;
        for sy in y_lo..y_hi {
            let s = ((sy * w + x_lo) * 3) as usize;
            let d = (((sy - y0) * c + (x_lo - x0)) * 3) as usize;
            dst[d..d + len].copy_from_slice(&src[s..s + len]);
        }
    }
    crop
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb};

    /// A black 256×256 image with a 4×4 block of `colour` whose top-left corner is (x, y).
    fn marker(x: u32, y: u32, colour: [u8; 3]) -> RgbImage {
        let mut img = RgbImage::new(RESIZE, RESIZE);
        for dy in 0..4 {
            for dx in 0..4 {
                img.put_pixel(x + dx, y + dy, Rgb(colour));
            }
        }
        img
    }

    fn pixel(chw: &[f32], s: usize, x: usize, y: usize) -> [f32; 3] {
        let p = s * s;
        [chw[y * s + x], chw[p + y * s + x], chw[2 * p + y * s + x]]
    }

    #[test]
    fn window_geometry_matches_the_recipe() {
        // Padded image 296×366; centre 190 starts at (53, 88), i.e. (33, 8) after removing the
        // padding: shifted up, more forehead and less chin.
        assert_eq!((WINDOW_X, WINDOW_Y), (33, 8));
        assert_eq!(
            CropWindow::centre(),
            CropWindow {
                x: 43,
                y: 18,
                size: 170
            }
        );
        assert_eq!(
            CropWindow::jittered(170, 20, 0).unwrap(),
            CropWindow {
                x: 53,
                y: 8,
                size: 170
            }
        );
        assert!(CropWindow::jittered(170, 21, 0).is_err());
        assert!(CropWindow::jittered(191, 0, 0).is_err());
    }

    #[test]
    fn no_jitter_crop_maps_a_marker_to_the_expected_pixel() {
        let img = marker(100, 50, [255, 128, 0]);
        // With S = 170 step 5 is the identity, so the mapping is a pure shift by (43, 18).
        let out = transform_frame(&img, CropWindow::centre(), 170).unwrap();
        assert_eq!(pixel(&out, 170, 57, 32), [1.0, 128.0 / 255.0, 0.0]);
        assert_eq!(pixel(&out, 170, 60, 35), [1.0, 128.0 / 255.0, 0.0]);
        assert_eq!(pixel(&out, 170, 56, 32), [0.0; 3]);
        assert_eq!(pixel(&out, 170, 61, 35), [0.0; 3]);
        let lit = out[..170 * 170].iter().filter(|&&v| v > 0.0).count();
        assert_eq!(lit, 16);
    }

    #[test]
    fn jittered_crop_shifts_with_its_offset_and_scales_to_s() {
        let img = marker(120, 100, [0, 255, 0]);
        let w = CropWindow::jittered(180, 7, 3).unwrap();
        let out = transform_frame(&img, w, 180).unwrap();
        // Marker at (120, 100) minus window origin (33 + 7, 8 + 3).
        assert_eq!(pixel(&out, 180, 80, 89)[1], 1.0);
        assert_eq!(pixel(&out, 180, 79, 89)[1], 0.0);

        // Downscaled 180 → 90: the block lands at half the coordinates, 2×2 pixels, blurred.
        let out = transform_frame(&img, w, 90).unwrap();
        let (cx, cy) = (41, 45);
        assert!(
            pixel(&out, 90, cx, cy)[1] > 0.5,
            "{:?}",
            pixel(&out, 90, cx, cy)
        );
        assert!(pixel(&out, 90, cx - 4, cy)[1] == 0.0);
        assert!(pixel(&out, 90, cx, cy + 4)[1] == 0.0);
    }

    #[test]
    fn small_input_is_resized_to_256_first() {
        // A 64×64 frame: each source pixel covers 4×4 pixels after step 1.
        let mut img = RgbImage::new(64, 64);
        for y in 20..30 {
            for x in 30..40 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        let out = transform_frame(&img, CropWindow::centre(), 170).unwrap();
        // Source (30..40, 20..30) → resized (120..160, 80..120) → output (77..117, 62..102).
        assert_eq!(pixel(&out, 170, 97, 82), [1.0; 3]);
        assert_eq!(pixel(&out, 170, 70, 82), [0.0; 3]);
        assert_eq!(pixel(&out, 170, 97, 108), [0.0; 3]);
    }

    #[test]
    fn window_reaching_into_padding_reads_zeros() {
        let img = RgbImage::from_pixel(RESIZE, RESIZE, Rgb([255, 255, 255]));
        let w = CropWindow {
            x: -10,
            y: 250,
            size: 20,
        };
        let out = transform_frame(&img, w, 20).unwrap();
        assert_eq!(pixel(&out, 20, 9, 5), [0.0; 3]);
        assert_eq!(pixel(&out, 20, 10, 5), [1.0; 3]);
        assert_eq!(pixel(&out, 20, 10, 6), [0.0; 3]);
    }

    #[test]
    fn output_is_chw_in_unit_range() {
        let img = RgbImage::from_pixel(RESIZE, RESIZE, Rgb([255, 51, 0]));
        let out = transform_frame(&img, CropWindow::centre(), 32).unwrap();
        assert_eq!(out.len(), 3 * 32 * 32);
        assert!(out[..1024].iter().all(|&v| v == 1.0));
        assert!(out[1024..2048].iter().all(|&v| v == 0.2));
        assert!(out[2048..].iter().all(|&v| v == 0.0));
        let mut short = vec![0.0; 10];
        assert!(transform_frame_into(&img, CropWindow::centre(), 32, &mut short).is_err());
    }

    #[test]
    fn grayscale_and_non_square_files_are_converted_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gray.png");
        GrayImage::from_pixel(40, 30, image::Luma([200]))
            .save(&path)
            .unwrap();
        let (img, issues) = load_frame(&path).unwrap();
        assert_eq!(img.dimensions(), (40, 30));
        assert_eq!(img.get_pixel(3, 3), &Rgb([200, 200, 200]));
        assert!(issues.grayscale && issues.converted && issues.non_square);
        let out = transform_file(&path, CropWindow::centre(), 16).unwrap();
        assert!(out.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn corrupt_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame000001.jpg");
        std::fs::write(&path, b"definitely not a jpeg").unwrap();
        let err = load_frame(&path).unwrap_err().to_string();
        assert!(err.contains("frame000001.jpg"), "{err}");
    }
}

#[cfg(test)]
mod pil_golden {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    /// Max and mean absolute difference, in 8-bit levels, between our transform of the fixture
    /// input and PIL's (tests/fixtures/pil_recipe.py).
    fn compare(window: CropWindow, size: u32, expected: &str) -> (f32, f32) {
        let (input, _) = load_frame(&Path::new(FIXTURES).join("recipe_input.png")).unwrap();
        let (want, _) = load_frame(&Path::new(FIXTURES).join(expected)).unwrap();
        let ours = transform_frame(&input, window, size).unwrap();
        let plane = (size * size) as usize;
        let mut max = 0.0f32;
        let mut sum = 0.0f32;
        for (i, px) in want.pixels().enumerate() {
            for c in 0..3 {
                let d = (ours[c * plane + i] * 255.0 - f32::from(px[c])).abs();
                max = max.max(d);
                sum += d;
            }
        }
        (max, sum / (3 * plane) as f32)
    }

    #[test]
    fn matches_pil_within_rounding() {
        let cases = [
            (CropWindow::centre(), 64, "recipe_centre_s64.png"),
            (
                CropWindow::jittered(175, 3, 11).unwrap(),
                64,
                "recipe_c175_dx3_dy11_s64.png",
            ),
            (
                CropWindow::jittered(181, 9, 0).unwrap(),
                256,
                "recipe_c181_dx9_dy0_s256.png",
            ),
        ];
        // Both pipelines keep 8-bit intermediates, so they differ by rounding only.
        for (window, size, file) in cases {
            let (max, mean) = compare(window, size, file);
            assert!(max <= 2.0 && mean < 0.15, "{file}: max {max}, mean {mean}");
        }
        // The comparison is sharp enough to see a one-pixel shift of the crop.
        let shifted = CropWindow::jittered(175, 4, 11).unwrap();
        let (max, mean) = compare(shifted, 64, "recipe_c175_dx3_dy11_s64.png");
        assert!(max > 20.0 && mean > 1.0, "max {max}, mean {mean}");
    }
}
