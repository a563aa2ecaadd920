//! Retrieval figures: the query image, a separator, then its neighbours, in one row of square cells.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{ImageFormat, Rgb, RgbImage};

use crate::error::{ProbeError, Result};
use crate::fsutil::write_atomic;

/// Layout of a retrieval grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridStyle {
    /// Side of each square cell, pixels; images are scaled to fit and centred on black.
    pub cell: u32,
    /// Gap between neighbour cells, pixels.
    pub gap: u32,
    /// Width of the bar between the query and its neighbours, pixels.
    pub separator: u32,
    /// Colour of the gaps.
    pub background: [u8; 3],
    /// Colour of the separator bar.
    pub separator_colour: [u8; 3],
}

impl Default for GridStyle {
    /// 128-px cells, 4-px white gaps, a 12-px red bar after the query.
    fn default() -> Self {
        GridStyle {
            cell: 128,
            gap: 4,
            separator: 12,
            background: [255, 255, 255],
            separator_colour: [200, 30, 30],
        }
    }
}

fn fit(img: &RgbImage, cell: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(cell, cell);
    if w == 0 || h == 0 {
        return out;
    }
    let s = f64::from(cell) / f64::from(w.max(h));
    let (nw, nh) = (
        ((f64::from(w) * s).round() as u32).clamp(1, cell),
        ((f64::from(h) * s).round() as u32).clamp(1, cell),
    );
    let scaled = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    image::imageops::replace(
        &mut out,
        &scaled,
        i64::from((cell - nw) / 2),
        i64::from((cell - nh) / 2),
    );
    out
}

/// Draws `query | neighbours…` in one row: width `cell·(1+n) + separator + gap·(n+1)`, height
/// `cell + 2·gap`.
pub fn draw_grid(query: &RgbImage, neighbours: &[RgbImage], style: &GridStyle) -> Result<RgbImage> {
    if style.cell == 0 {
        return Err(ProbeError::Invalid("grid cell size must be > 0".into()));
    }
    let n = neighbours.len() as u32;
    let width = style.cell * (1 + n) + style.separator + style.gap * (n + 1);
    let height = style.cell + 2 * style.gap;
    let mut out = RgbImage::from_pixel(width, height, Rgb(style.background));
    let sep_x = style.gap + style.cell;
    for y in 0..height {
        for x in sep_x..sep_x + style.separator {
            out.put_pixel(x, y, Rgb(style.separator_colour));
        }
    }
    image::imageops::replace(
        &mut out,
        &fit(query, style.cell),
        i64::from(style.gap),
        i64::from(style.gap),
    );
    for (i, img) in neighbours.iter().enumerate() {
        let x = sep_x + style.separator + i as u32 * (style.cell + style.gap);
        image::imageops::replace(
            &mut out,
            &fit(img, style.cell),
            i64::from(x),
            i64::from(style.gap),
        );
    }
    Ok(out)
}

/// Loads the images, draws the grid and writes it as PNG to `out` atomically. A missing or unreadable
/// image is reported by path.
pub fn draw_grid_files(
    query: &Path,
    neighbours: &[&Path],
    style: &GridStyle,
    out: &Path,
) -> Result<()> {
    let load = |p: &Path| -> Result<RgbImage> {
        if !p.is_file() {
            return Err(ProbeError::MissingImage(p.to_path_buf()));
        }
        Ok(image::open(p)
            .map_err(|e| ProbeError::Image {
                path: p.to_path_buf(),
                source: e,
            })?
            .to_rgb8())
    };
    let q = load(query)?;
    let ns = neighbours
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>>>()?;
    let grid = draw_grid(&q, &ns, style)?;
    let mut bytes = Vec::new();
    grid.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| ProbeError::Image {
            path: out.to_path_buf(),
            source: e,
        })?;
    write_atomic(out, |w| w.write_all(&bytes))
}
