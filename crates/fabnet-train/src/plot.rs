//! Small raster plots for people to look at: line plots (loss curves), bar
//! charts (probe results) and image grids (reconstructions), drawn straight
//! into RGB images with an 8×8 bitmap font, so no system font is needed.

use image::{Rgb, RgbImage};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const GREY: Rgb<u8> = Rgb([215, 215, 215]);

/// Distinct colours for series and bars, in order.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

/// Writes ASCII `text` with its top-left corner at (x, y), `scale` pixels per
/// font pixel. Characters outside ASCII are drawn as `?`.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let gx = x + (i as i64) * 8 * i64::from(scale);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        put(
                            img,
                            gx + (col * scale + dx) as i64,
                            y + (row as u32 * scale + dy) as i64,
                            colour,
                        );
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> i64 {
    (text.chars().count() as i64) * 8 * i64::from(scale)
}

fn put(img: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    colour: Rgb<u8>,
    width: i64,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let x = (x0 + (x1 - x0) * t).round() as i64;
        let y = (y0 + (y1 - y0) * t).round() as i64;
        for dy in 0..width {
            for dx in 0..width {
                put(img, x + dx - width / 2, y + dy - width / 2, colour);
            }
        }
    }
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb<u8>) {
    for y in y0.min(y1)..y0.max(y1) {
        for x in x0.min(x1)..x0.max(x1) {
            put(img, x, y, colour);
        }
    }
}

/// Formats an axis value compactly (`0.031`, `1.2e-4`, `1500`).
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e5 {
        format!("{v:.0}")
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// "Nice" tick positions covering [lo, hi].
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// One line of a [`line_plot`].
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// (x, y) points in drawing order; non-finite points are skipped.
    pub points: &'a [(f64, f64)],
}

/// Tick positions in log10 units for a log axis over [lo, hi] (log10 units):
/// 1, 2 and 5 times each power of ten, or powers of ten alone when that
/// would be too many.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for multipliers in [&[1.0, 2.0, 5.0][..], &[1.0][..]] {
        out.clear();
        for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for m in multipliers {
                let t = (m * 10f64.powi(k as i32)).log10();
                if t >= lo && t <= hi {
                    out.push(t);
                }
            }
        }
        if out.len() <= 10 {
            break;
        }
    }
    out
}

/// Draws a title at scale 2 when it fits the width, else at scale 1.
fn title_text(img: &mut RgbImage, x: i64, y: i64, title: &str) {
    let scale = if x + text_width(title, 2) < img.width() as i64 {
        2
    } else {
        1
    };
    draw_text(img, x, y, title, scale, BLACK);
}

/// A line plot of several series with axes, ticks, labels and a legend.
/// `log_y` plots log10(y) (non-positive values are skipped).
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> RgbImage {
    let (w, h) = (900u32, 560u32);
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    let (left, right, top, bottom) = (90i64, w as i64 - 30, 50i64, h as i64 - 60);
    let tf = |y: f64| if log_y { y.log10() } else { y };
    let valid = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(valid))
        .map(|(x, y)| (x, tf(y)))
        .collect();
    title_text(&mut img, left, 15, title);
    if all.is_empty() {
        draw_text(&mut img, left, h as i64 / 2, "no data", 2, BLACK);
        return img;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    y0 -= pad;
    y1 += pad;
    let px = |x: f64| left as f64 + (x - x0) / (x1 - x0) * (right - left) as f64;
    let py = |y: f64| bottom as f64 - (y - y0) / (y1 - y0) * (bottom - top) as f64;
    let y_ticks = if log_y {
        log_ticks(y0, y1)
    } else {
        ticks(y0, y1, 6)
    };
    for t in y_ticks {
        let y = py(t);
        line(&mut img, (left as f64, y), (right as f64, y), GREY, 1);
        let label = format_tick(if log_y { 10f64.powf(t) } else { t });
        draw_text(
            &mut img,
            left - 8 - text_width(&label, 1),
            y as i64 - 4,
            &label,
            1,
            BLACK,
        );
    }
    for t in ticks(x0, x1, 8) {
        let x = px(t);
        line(
            &mut img,
            (x, bottom as f64),
            (x, bottom as f64 + 5.0),
            BLACK,
            1,
        );
        let label = format_tick(t);
        draw_text(
            &mut img,
            x as i64 - text_width(&label, 1) / 2,
            bottom + 10,
            &label,
            1,
            BLACK,
        );
    }
    line(
        &mut img,
        (left as f64, top as f64),
        (left as f64, bottom as f64),
        BLACK,
        1,
    );
    line(
        &mut img,
        (left as f64, bottom as f64),
        (right as f64, bottom as f64),
        BLACK,
        1,
    );
    draw_text(
        &mut img,
        (left + right) / 2 - text_width(x_label, 1) / 2,
        bottom + 30,
        x_label,
        1,
        BLACK,
    );
    let y_text = if log_y {
        format!("{y_label} (log)")
    } else {
        y_label.to_string()
    };
    draw_text(&mut img, 5, top - 20, &y_text, 1, BLACK);
    for (i, s) in series.iter().enumerate() {
        let c = Rgb(PALETTE[i % PALETTE.len()]);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(valid)
            .map(|(x, y)| (px(x), py(tf(y))))
            .collect();
        for pair in pts.windows(2) {
            line(&mut img, pair[0], pair[1], c, 2);
        }
        if pts.len() == 1 {
            fill(
                &mut img,
                pts[0].0 as i64 - 3,
                pts[0].1 as i64 - 3,
                pts[0].0 as i64 + 3,
                pts[0].1 as i64 + 3,
                c,
            );
        }
        let ly = top + 10 + 14 * i as i64;
        fill(&mut img, right - 200, ly, right - 185, ly + 8, c);
        draw_text(&mut img, right - 180, ly, s.label, 1, BLACK);
    }
    img
}

/// A grouped bar chart: one group per category, one bar per method, with the
/// value printed over each bar.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[&str],
    methods: &[&str],
    values: &[Vec<f64>],
) -> RgbImage {
    let (w, h) = (160 + 130 * categories.len().max(1) as u32, 520u32);
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    // The legend sits under the title, as many 170-px entries per row as fit.
    let (left, right) = (80i64, w as i64 - 20);
    let per_row = (((right - left) / 170).max(1)) as usize;
    let legend_rows = methods.len().div_ceil(per_row) as i64;
    let (top, bottom) = (58 + 12 * legend_rows, h as i64 - 60);
    title_text(&mut img, left, 12, title);
    draw_text(&mut img, 5, top - 20, y_label, 1, BLACK);
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12)
        * 1.15;
    let py = |v: f64| bottom as f64 - v / max * (bottom - top) as f64;
    for t in ticks(0.0, max, 6) {
        let y = py(t);
        line(&mut img, (left as f64, y), (right as f64, y), GREY, 1);
        let label = format_tick(t);
        draw_text(
            &mut img,
            left - 8 - text_width(&label, 1),
            y as i64 - 4,
            &label,
            1,
            BLACK,
        );
    }
    line(
        &mut img,
        (left as f64, bottom as f64),
        (right as f64, bottom as f64),
        BLACK,
        1,
    );
    let group = (right - left) as f64 / categories.len().max(1) as f64;
    let bar = group * 0.8 / methods.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = left as f64 + group * ci as f64 + group * 0.1;
        for (mi, _) in methods.iter().enumerate() {
            let Some(&v) = values.get(mi).and_then(|row| row.get(ci)) else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            let x0 = (gx + bar * mi as f64) as i64;
            let x1 = (gx + bar * (mi + 1) as f64) as i64 - 2;
            fill(
                &mut img,
                x0,
                py(v) as i64,
                x1,
                bottom,
                Rgb(PALETTE[mi % PALETTE.len()]),
            );
            let label = format_tick(v);
            draw_text(
                &mut img,
                (x0 + x1) / 2 - text_width(&label, 1) / 2,
                py(v) as i64 - 10,
                &label,
                1,
                BLACK,
            );
        }
        draw_text(
            &mut img,
            (gx + group * 0.4) as i64 - text_width(cat, 1) / 2,
            bottom + 10,
            cat,
            1,
            BLACK,
        );
    }
    for (mi, m) in methods.iter().enumerate() {
        let lx = left + 10 + (mi % per_row) as i64 * 170;
        let ly = 38 + (mi / per_row) as i64 * 12;
        fill(
            &mut img,
            lx,
            ly,
            lx + 12,
            ly + 8,
            Rgb(PALETTE[mi % PALETTE.len()]),
        );
        draw_text(&mut img, lx + 16, ly, m, 1, BLACK);
    }
    img
}

/// Tiles equally sized images into rows, with `gap` white pixels between
/// tiles and an optional label above each column.
pub fn image_grid(rows: &[Vec<RgbImage>], column_labels: &[&str], gap: u32) -> RgbImage {
    let tile_w = rows.iter().flatten().map(|t| t.width()).max().unwrap_or(1);
    let tile_h = rows.iter().flatten().map(|t| t.height()).max().unwrap_or(1);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let header = if column_labels.is_empty() { 0 } else { 14 };
    let w = cols * tile_w + (cols + 1) * gap;
    let h = header + rows.len() as u32 * tile_h + (rows.len() as u32 + 1) * gap;
    let mut img = RgbImage::from_pixel(w.max(1), h.max(1), WHITE);
    for (c, label) in column_labels.iter().enumerate() {
        let x = gap + c as u32 * (tile_w + gap);
        draw_text(&mut img, i64::from(x), 3, label, 1, BLACK);
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let x = gap + c as u32 * (tile_w + gap);
            let y = header + gap + r as u32 * (tile_h + gap);
            image::imageops::replace(&mut img, tile, i64::from(x), i64::from(y));
        }
    }
    img
}

/// Saves a PNG atomically (temp file + rename), creating the parent folder.
pub fn save_png(img: &RgbImage, path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(std::io::Error::other)?;
    std::fs::rename(&tmp, path)
}
