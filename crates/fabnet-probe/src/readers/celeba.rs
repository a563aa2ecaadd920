//! CelebA `list_landmarks_align_celeba.txt` and MAFL's `training.txt` / `testing.txt` image lists.

use std::collections::HashMap;
use std::path::Path;

use super::{parse_f64, LandmarkSample, PixelOrigin};
use crate::error::{ProbeError, Result};
use crate::fsutil::read_text;

/// The ten column names on line 2 of `list_landmarks_align_celeba.txt`: left eye, right eye, nose,
/// left and right mouth corner, x then y.
pub const CELEBA_LANDMARK_HEADER: [&str; 10] = [
    "lefteye_x",
    "lefteye_y",
    "righteye_x",
    "righteye_y",
    "nose_x",
    "nose_y",
    "leftmouth_x",
    "leftmouth_y",
    "rightmouth_x",
    "rightmouth_y",
];

/// Reads `list_landmarks_align_celeba.txt`: line 1 the count, line 2 the header, then
/// `image x1 y1 … x5 y5` per line. Returns `(image name, 5 points)` in file order; points are shifted by
/// `origin` (CelebA is usually taken as 0-based).
pub fn read_celeba_landmarks(
    path: &Path,
    origin: PixelOrigin,
) -> Result<Vec<(String, [[f64; 2]; 5])>> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, first) = lines
        .next()
        .ok_or_else(|| ProbeError::parse(path, 1, "empty file, expected the image count"))?;
    let count: usize = first.trim().parse().map_err(|_| {
        ProbeError::parse(
            path,
            1,
            format!("expected the image count, got {:?}", first.trim()),
        )
    })?;
    let (_, header) = lines
        .next()
        .ok_or_else(|| ProbeError::parse(path, 2, "missing the header line"))?;
    let names: Vec<&str> = header.split_whitespace().collect();
    if names != CELEBA_LANDMARK_HEADER {
        return Err(ProbeError::parse(
            path,
            2,
            format!(
                "expected the header {:?}, got {:?}",
                CELEBA_LANDMARK_HEADER.join(" "),
                header.trim()
            ),
        ));
    }
    let off = origin.offset();
    let mut out = Vec::with_capacity(count);
    let mut last_line = 2;
    for (ln, line) in lines {
        last_line = ln;
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.is_empty() {
            continue;
        }
        if toks.len() != 11 {
            return Err(ProbeError::parse(
                path,
                ln,
                format!(
                    "expected an image name and 10 coordinates, got {} fields",
                    toks.len()
                ),
            ));
        }
        let mut pts = [[0.0; 2]; 5];
        for (k, p) in pts.iter_mut().enumerate() {
            p[0] = parse_f64(path, ln, toks[1 + 2 * k], CELEBA_LANDMARK_HEADER[2 * k])? - off;
            p[1] = parse_f64(path, ln, toks[2 + 2 * k], CELEBA_LANDMARK_HEADER[2 * k + 1])? - off;
        }
        out.push((toks[0].to_string(), pts));
    }
    if out.len() != count {
        return Err(ProbeError::parse(
            path,
            last_line,
            format!(
                "line 1 announces {count} images but the file has {}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Reads an image list such as MAFL's `training.txt`: one image name per line (the first
/// whitespace-separated token), blank lines skipped. Returns `(line, name)` pairs.
pub fn read_image_list(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut toks = line.split_whitespace();
        if let Some(name) = toks.next() {
            if toks.next().is_some() {
                return Err(ProbeError::parse(
                    path,
                    i + 1,
                    format!("expected one image name, got {:?}", line.trim()),
                ));
            }
            out.push((i + 1, name.to_string()));
        }
    }
    Ok(out)
}

/// The MAFL split `list` (e.g. `testing.txt`) joined with CelebA's landmarks: one sample per listed
/// image, in list order, with `image = image_dir/name` and `key = name`. A listed image that has no
/// landmarks is an error at the list's line.
pub fn read_mafl(
    landmarks: &Path,
    list: &Path,
    image_dir: &Path,
    origin: PixelOrigin,
) -> Result<Vec<LandmarkSample>> {
    let table: HashMap<String, [[f64; 2]; 5]> = read_celeba_landmarks(landmarks, origin)?
        .into_iter()
        .collect();
    read_image_list(list)?
        .into_iter()
        .map(|(ln, name)| {
            let pts = table.get(&name).ok_or_else(|| {
                ProbeError::parse(
                    list,
                    ln,
                    format!("{name} has no landmarks in {}", landmarks.display()),
                )
            })?;
            Ok(LandmarkSample {
                image: image_dir.join(&name),
                key: name,
                points: pts.to_vec(),
                given_box: None,
            })
        })
        .collect()
}
