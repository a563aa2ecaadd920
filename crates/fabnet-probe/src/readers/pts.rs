//! 300-W / iBUG `.pts` files: `version: 1`, `n_points: N`, `{`, N lines of `x y`, `}`.
//! The coordinates are 1-based pixels (Matlab convention; menpo also subtracts 1 on import).

use std::path::{Path, PathBuf};

use super::{parse_f64, LandmarkSample, PixelOrigin};
use crate::error::{ProbeError, Result};
use crate::fsutil::read_text;

/// Image extensions tried, in order, for the image beside a `.pts` file.
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "ppm", "bmp", "PNG", "JPG", "JPEG"];

/// Reads one `.pts` file; returns `(n_points, 2)` pixel points, x first, shifted by `origin`
/// ([`PixelOrigin::OneBased`] for 300-W).
pub fn read_pts(path: &Path, origin: PixelOrigin) -> Result<Vec<[f64; 2]>> {
    let text = read_text(path)?;
    let off = origin.offset();
    let mut n_points: Option<usize> = None;
    let mut points = Vec::new();
    // 0: header, 1: inside braces, 2: after the closing brace.
    let mut state = 0;
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        last = ln;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match state {
            0 => {
                if line == "{" {
                    if n_points.is_none() {
                        return Err(ProbeError::parse(
                            path,
                            ln,
                            "points start before an n_points line",
                        ));
                    }
                    state = 1;
                } else if let Some((key, value)) = line.split_once(':') {
                    if key.trim() == "n_points" {
                        let n = value.trim().parse::<usize>().map_err(|_| {
                            ProbeError::parse(
                                path,
                                ln,
                                format!("n_points: expected a count, got {:?}", value.trim()),
                            )
                        })?;
                        n_points = Some(n);
                    }
                } else {
                    return Err(ProbeError::parse(
                        path,
                        ln,
                        format!("expected a `key: value` header or `{{`, got {line:?}"),
                    ));
                }
            }
            1 => {
                if line == "}" {
                    state = 2;
                    continue;
                }
                let toks: Vec<&str> = line.split_whitespace().collect();
                if toks.len() != 2 {
                    return Err(ProbeError::parse(
                        path,
                        ln,
                        format!("expected `x y`, got {line:?}"),
                    ));
                }
                let x = parse_f64(path, ln, toks[0], "x")?;
                let y = parse_f64(path, ln, toks[1], "y")?;
                points.push([x - off, y - off]);
            }
            _ => {
                return Err(ProbeError::parse(
                    path,
                    ln,
                    format!("text after the closing brace: {line:?}"),
                ))
            }
        }
    }
    if state != 2 {
        return Err(ProbeError::parse(
            path,
            last.max(1),
            "missing the closing `}`",
        ));
    }
    let n = n_points.unwrap_or(0);
    if points.len() != n {
        return Err(ProbeError::parse(
            path,
            last,
            format!("n_points says {n} but the file has {} points", points.len()),
        ));
    }
    Ok(points)
}

/// Reads every `.pts` file under `root` (recursively, sorted by path) with the image beside it (same stem;
/// png, jpg, jpeg, ppm or bmp). When no image is found the sample names `stem.jpg`, for [`super::check_images`]
/// to report. Keys are image paths relative to `root`, with `/` separators.
pub fn read_300w_dir(root: &Path, origin: PixelOrigin) -> Result<Vec<LandmarkSample>> {
    let mut files = Vec::new();
    collect_pts(root, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|pts| {
            let points = read_pts(&pts, origin)?;
            let image = IMAGE_EXTENSIONS
                .iter()
                .map(|e| pts.with_extension(e))
                .find(|p| p.is_file())
                .unwrap_or_else(|| pts.with_extension("jpg"));
            let rel = image.strip_prefix(root).unwrap_or(&image);
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            Ok(LandmarkSample {
                key,
                image,
                points,
                given_box: None,
            })
        })
        .collect()
}

fn collect_pts(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ProbeError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| ProbeError::io(dir, e))?.path();
        if path.is_dir() {
            collect_pts(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "pts") {
            out.push(path);
        }
    }
    Ok(())
}
