//! The crop recipe: a square window around a track box, zero padding outside the frame, and a
//! separable resampling filter that widens with the downscale factor (so it antialiases).
//!
//! Coordinates are continuous: pixel `i` covers `[i, i + 1)` and its centre is `i + 0.5`.
//! Output pixel `j` of an `n`-pixel axis samples the window at `start + (j + 0.5) · extent / n`.
//! Weights are normalised over all taps, then the taps outside the frame are dropped; this equals
//! padding the frame with zeros and resampling the padded image.

use image::RgbImage;

use crate::decode::{Frame, Region};
use crate::track::PixelBox;

/// The resampling kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Linear interpolation (support 1); PIL's and torchvision's antialiased "bilinear".
    #[default]
    Triangle,
    /// Catmull-Rom cubic (support 2), sharper.
    CatmullRom,
    /// Lanczos with 3 lobes (support 3), sharpest, slowest.
    Lanczos3,
}

impl Filter {
    /// Half-width of the kernel in source pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Triangle => 1.0,
            Filter::CatmullRom => 2.0,
            Filter::Lanczos3 => 3.0,
        }
    }

    /// The kernel at distance `x` (in source pixels at scale 1).
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Triangle => (1.0 - x).max(0.0),
            Filter::CatmullRom => {
                if x < 1.0 {
                    1.5 * x * x * x - 2.5 * x * x + 1.0
                } else if x < 2.0 {
                    -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0
                } else {
                    0.0
                }
            }
            Filter::Lanczos3 => {
                if x < 1e-12 {
                    1.0
                } else if x < 3.0 {
                    let px = std::f64::consts::PI * x;
                    3.0 * px.sin() * (px / 3.0).sin() / (px * px)
                } else {
                    0.0
                }
            }
        }
    }
}

/// A rectangular window of a frame in continuous pixel coordinates; it may extend past the frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Left edge in pixels.
    pub x: f64,
    /// Top edge in pixels.
    pub y: f64,
    /// Width in pixels.
    pub w: f64,
    /// Height in pixels.
    pub h: f64,
}

impl Window {
    /// The square window centred on `b` whose side is `scale` times the box's longer side.
    pub fn square_around(b: &PixelBox, scale: f64) -> Window {
        let side = b.w.max(b.h) * scale;
        let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
        Window {
            x: cx - side / 2.0,
            y: cy - side / 2.0,
            w: side,
            h: side,
        }
    }

    /// The whole of a `width`×`height` frame.
    pub fn full(width: u32, height: u32) -> Window {
        Window {
            x: 0.0,
            y: 0.0,
            w: f64::from(width),
            h: f64::from(height),
        }
    }
}

/// The taps of one output sample: source indices `first..first + weights.len()`.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Per-output-sample taps along one axis, restricted to `0..src_len`.
fn axis_taps(start: f64, extent: f64, out: u32, src_len: u32, filter: Filter) -> Vec<Taps> {
    let step = extent / f64::from(out);
    let stretch = step.max(1.0);
    let support = filter.support() * stretch;
    (0..out)
        .map(|j| {
            let centre = start + (f64::from(j) + 0.5) * step;
            let lo = (centre - support).floor() as i64;
            let hi = (centre + support).ceil() as i64;
            let raw: Vec<(i64, f64)> = (lo..hi)
                .map(|k| (k, filter.eval((k as f64 + 0.5 - centre) / stretch)))
                .collect();
            let total: f64 = raw.iter().map(|&(_, w)| w).sum();
            let inside: Vec<(i64, f64)> = raw
                .into_iter()
                .filter(|&(k, _)| k >= 0 && k < i64::from(src_len))
                .collect();
            match inside.first() {
                Some(&(first, _)) if total.abs() > 1e-12 => Taps {
                    first: first as usize,
                    weights: inside.iter().map(|&(_, w)| (w / total) as f32).collect(),
                },
                _ => Taps {
                    first: 0,
                    weights: Vec::new(),
                },
            }
        })
        .collect()
}

/// The pixels of a frame that [`resample`] reads for `window` at `out_w`×`out_h`: decoding
/// only this region gives the same result as decoding the whole frame.
pub fn footprint(window: &Window, out_w: u32, out_h: u32, filter: Filter) -> Region {
    let axis = |start: f64, extent: f64, out: u32| {
        let reach = filter.support() * (extent / f64::from(out.max(1))).max(1.0) + 1.0;
        let lo = (start - reach).floor().max(0.0);
        let hi = (start + extent + reach).ceil().max(lo);
        // `as` saturates: windows far outside any frame give an empty or clamped region.
        (lo as u32, (hi - lo) as u32)
    };
    let (left, width) = axis(window.x, window.w, out_w);
    let (top, height) = axis(window.y, window.h, out_h);
    Region {
        left,
        top,
        width,
        height,
    }
}

/// Resamples `window` (in video-frame pixels) of `frame` to an `out_w`×`out_h` RGB image.
///
/// Pixels outside `frame`'s data (outside the video frame, or outside the region it holds)
/// count as black. A zero-sized output or a degenerate window gives an all-black image.
pub fn resample(
    frame: &Frame,
    window: &Window,
    out_w: u32,
    out_h: u32,
    filter: Filter,
) -> RgbImage {
    let mut out = RgbImage::new(out_w, out_h);
    if out_w == 0 || out_h == 0 || !(window.w > 0.0 && window.h > 0.0) {
        return out;
    }
    let (left, top) = (f64::from(frame.left), f64::from(frame.top));
    let cols = axis_taps(window.x - left, window.w, out_w, frame.width, filter);
    let rows = axis_taps(window.y - top, window.h, out_h, frame.height, filter);
    let used = cols.iter().filter(|t| !t.weights.is_empty());
    let Some(c0) = used.clone().map(|t| t.first).min() else {
        return out;
    };
    let c1 = used.map(|t| t.first + t.weights.len()).max().unwrap_or(c0);
    let span_w = (c1 - c0) * 3;
    let src_row = frame.width as usize * 3;

    // Vertical pass first, over the columns the horizontal taps touch: it runs on contiguous
    // rows (vectorised), and leaves the scalar horizontal pass only `out_h` rows to do.
    // Rows of `tmp` carry `n` zero pixels past the span, which the padded taps read.
    let n = match cols.iter().map(|t| t.weights.len()).max().unwrap_or(1) {
        5 => 6,
        7 => 8,
        n => n.max(1),
    };
    let row_w = span_w + n * 3;
    let mut tmp = vec![0f32; out_h as usize * row_w];
    for (taps, row) in rows.iter().zip(tmp.chunks_exact_mut(row_w)) {
        let acc = &mut row[..span_w];
        for (k, &w) in taps.weights.iter().enumerate() {
            let r = taps.first + k;
            let src = &frame.data[r * src_row + c0 * 3..r * src_row + c1 * 3];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += w * f32::from(v);
            }
        }
    }

    // Horizontal pass into the output. Every column gets the same number of taps `n` (the
    // widest column's, zero-padded) so that the inner loop has a fixed length the compiler
    // unrolls; columns with no taps get all-zero weights and stay black (padding).
    let mut starts = Vec::with_capacity(cols.len());
    let mut weights = vec![0f32; cols.len() * n];
    for (taps, w) in cols.iter().zip(weights.chunks_exact_mut(n)) {
        starts.push(if taps.weights.is_empty() {
            0
        } else {
            (taps.first - c0) * 3
        });
        w[..taps.weights.len()].copy_from_slice(&taps.weights);
    }
    let out_buf: &mut [u8] = &mut out;
    let row_fn: RowFn = match n {
        1 => horizontal::<1>,
        2 => horizontal::<2>,
        3 => horizontal::<3>,
        4 => horizontal::<4>,
        6 => horizontal::<6>,
        8 => horizontal::<8>,
        _ => horizontal_any,
    };
    // Rounding a whole row at once, apart from the filtering, lets it vectorise.
    let mut sums = vec![0f32; out_w as usize * 3];
    for (src, dst) in tmp
        .chunks_exact(row_w)
        .zip(out_buf.chunks_exact_mut(out_w as usize * 3))
    {
        row_fn(src, &starts, &weights, n, &mut sums);
        for (d, &v) in dst.iter_mut().zip(&sums) {
            *d = to_byte(v);
        }
    }
    out
}

/// Rounds a filtered sample to a byte; `+ 0.5` and truncation equal rounding once clamped to
/// non-negative values, and avoid a libm `roundf` call per sample.
#[inline(always)]
fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// A horizontal pass over one row: filtered row, first-tap offsets, weights, taps per column,
/// output row (interleaved RGB, before rounding).
type RowFn = fn(&[f32], &[usize], &[f32], usize, &mut [f32]);

/// One output row from one filtered row: `N` taps per column, weights `(out_w, N)` row-major,
/// `starts` the first tap's offset (in floats) into `src` per column.
fn horizontal<const N: usize>(
    src: &[f32],
    starts: &[usize],
    weights: &[f32],
    _n: usize,
    dst: &mut [f32],
) {
    for ((px, &s), w) in dst
        .chunks_exact_mut(3)
        .zip(starts)
        .zip(weights.chunks_exact(N))
    {
        let span = &src[s..s + 3 * N];
        let mut acc = [0f32; 3];
        for k in 0..N {
            acc[0] += w[k] * span[3 * k];
            acc[1] += w[k] * span[3 * k + 1];
            acc[2] += w[k] * span[3 * k + 2];
        }
        px.copy_from_slice(&acc);
    }
}

/// [`horizontal`] with a run-time tap count.
fn horizontal_any(src: &[f32], starts: &[usize], weights: &[f32], n: usize, dst: &mut [f32]) {
    for ((px, &s), w) in dst
        .chunks_exact_mut(3)
        .zip(starts)
        .zip(weights.chunks_exact(n))
    {
        let mut acc = [0f32; 3];
        for (&wk, v) in w.iter().zip(src[s..s + 3 * n].chunks_exact(3)) {
            acc[0] += wk * v[0];
            acc[1] += wk * v[1];
            acc[2] += wk * v[2];
        }
        px.copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: u32, height: u32) -> Frame {
        let data = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [(x * 6) as u8, (y * 5) as u8, 200]))
            .collect();
        Frame {
            index: 0,
            time_s: 0.0,
            left: 0,
            top: 0,
            width,
            height,
            data,
        }
    }

    #[test]
    fn same_size_full_window_is_identity_for_every_filter() {
        let frame = ramp(13, 9);
        for filter in [Filter::Triangle, Filter::CatmullRom, Filter::Lanczos3] {
            let out = resample(&frame, &Window::full(13, 9), 13, 9, filter);
            assert_eq!(out.as_raw(), &frame.data, "{filter:?}");
        }
    }

    #[test]
    fn window_outside_the_frame_is_black_and_half_outside_is_half_black() {
        let frame = Frame {
            data: vec![255; 8 * 8 * 3],
            ..ramp(8, 8)
        };
        let off = Window {
            x: 100.0,
            y: 0.0,
            w: 8.0,
            h: 8.0,
        };
        let out = resample(&frame, &off, 4, 4, Filter::Triangle);
        assert!(out.as_raw().iter().all(|&v| v == 0));

        // Window covers x in [-8, 8): the left half of the output is padding.
        let half = Window {
            x: -8.0,
            y: 0.0,
            w: 16.0,
            h: 8.0,
        };
        let out = resample(&frame, &half, 16, 8, Filter::Triangle);
        for x in 0..16 {
            let v = out.get_pixel(x, 4).0[0];
            if x < 8 {
                assert_eq!(v, 0, "column {x}");
            } else {
                assert_eq!(v, 255, "column {x}");
            }
        }

        // The same vertically: the top half of the output lies above the frame.
        let above = Window {
            x: 0.0,
            y: -8.0,
            w: 8.0,
            h: 16.0,
        };
        let out = resample(&frame, &above, 8, 16, Filter::Triangle);
        for y in 0..16 {
            let v = out.get_pixel(4, y).0[1];
            assert_eq!(v, if y < 8 { 0 } else { 255 }, "row {y}");
        }
        // And below it, where the first source row read is not row 0.
        let below = Window {
            x: 0.0,
            y: 4.0,
            w: 8.0,
            h: 8.0,
        };
        let out = resample(&frame, &below, 8, 8, Filter::Triangle);
        for y in 0..8 {
            let v = out.get_pixel(4, y).0[1];
            assert_eq!(v, if y < 4 { 255 } else { 0 }, "row {y}");
        }
    }

    #[test]
    fn downscale_by_two_averages_pixel_pairs() {
        // Triangle stretched by 2 puts weights 1/4, 3/4, 3/4, 1/4 (normalised) on four pixels.
        // One row scaled 1:1 vertically, so only the horizontal weights act.
        let frame = ramp(8, 1);
        let out = resample(&frame, &Window::full(8, 1), 4, 1, Filter::Triangle);
        // Red = 6x; output j samples centre 2j + 1: taps at columns 2j-1..=2j+2.
        // 6 * (0.125*1 + 0.375*2 + 0.375*3 + 0.125*4) = 15 and 6 * 4.5 = 27.
        assert_eq!(out.get_pixel(1, 0).0[0], 15);
        assert_eq!(out.get_pixel(2, 0).0[0], 27);
        // Column -1 is padding: 6 * (0.375*0 + 0.375*1 + 0.125*2) = 3.75.
        assert_eq!(out.get_pixel(0, 0).0[0], 4);
    }

    #[test]
    fn resampling_the_footprint_region_equals_resampling_the_whole_frame() {
        let frame = ramp(80, 60);
        let window = Window {
            x: 9.3,
            y: -4.0,
            w: 21.0,
            h: 21.0,
        };
        for filter in [Filter::Triangle, Filter::Lanczos3] {
            let whole = resample(&frame, &window, 8, 8, filter);
            let r = footprint(&window, 8, 8, filter);
            let (l, t) = (r.left as usize, r.top as usize);
            let (w, h) = (
                r.width.min(80 - r.left) as usize,
                r.height.min(60 - r.top) as usize,
            );
            let data = (t..t + h)
                .flat_map(|y| frame.data[(y * 80 + l) * 3..(y * 80 + l + w) * 3].to_vec())
                .collect();
            let part = Frame {
                left: l as u32,
                top: t as u32,
                width: w as u32,
                height: h as u32,
                data,
                ..frame.clone()
            };
            assert!(w < 80 && h < 60, "the region must be a real cut: {r:?}");
            assert_eq!(resample(&part, &window, 8, 8, filter), whole, "{filter:?}");
        }
    }

    /// The separable filter written as one direct 2-D sum per output pixel, in f64.
    fn direct(frame: &Frame, window: &Window, out_w: u32, out_h: u32, filter: Filter) -> Vec<u8> {
        let cols = axis_taps(window.x, window.w, out_w, frame.width, filter);
        let rows = axis_taps(window.y, window.h, out_h, frame.height, filter);
        let mut out = Vec::new();
        for ty in &rows {
            for tx in &cols {
                for c in 0..3 {
                    let mut acc = 0f64;
                    for (i, &wy) in ty.weights.iter().enumerate() {
                        for (j, &wx) in tx.weights.iter().enumerate() {
                            let v = frame.pixel((tx.first + j) as u32, (ty.first + i) as u32);
                            acc += f64::from(wy) * f64::from(wx) * f64::from(v.unwrap()[c]);
                        }
                    }
                    out.push(acc.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn every_tap_count_matches_the_direct_two_dimensional_sum() {
        // Output sizes from 2x upscaling to 6x downscaling walk the tap counts through the
        // fixed-length row passes (2..=4, 6, 8) and the run-time one; windows hang over edges.
        let frame = ramp(40, 30);
        for filter in [Filter::Triangle, Filter::CatmullRom, Filter::Lanczos3] {
            for out in [60, 30, 21, 13, 9, 5] {
                for (x, y) in [(0.0, 0.0), (-7.5, 3.25), (12.0, -9.0)] {
                    let window = Window {
                        x,
                        y,
                        w: 30.0,
                        h: 30.0,
                    };
                    let got = resample(&frame, &window, out, out, filter);
                    let want = direct(&frame, &window, out, out, filter);
                    let worst = got
                        .as_raw()
                        .iter()
                        .zip(&want)
                        .map(|(&a, &b)| a.abs_diff(b))
                        .max();
                    assert!(
                        worst <= Some(1),
                        "{filter:?} out {out} at ({x}, {y}): {worst:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn square_window_is_centred_and_scaled() {
        let b = PixelBox {
            x: 10.0,
            y: 20.0,
            w: 40.0,
            h: 60.0,
        };
        let w = Window::square_around(&b, 1.5);
        assert_eq!((w.w, w.h), (90.0, 90.0));
        assert_eq!((w.x + w.w / 2.0, w.y + w.h / 2.0), (30.0, 50.0));
    }
}
