//! AFLW-style head-pose CSV. The format is ours (AFLW ships an SQLite database); its header is
//! [`POSE_CSV_HEADER`]:
//!
//! ```text
//! image,x,y,w,h,roll,pitch,yaw
//! faces/0001.jpg,102,88,140,141,-3.5,10.25,-41
//! ```
//!
//! - `image`: the image path, relative to the CSV's folder (or absolute); also the sample's key.
//! - `x,y,w,h`: the face box as an integer pixel rectangle, 0-based: columns `x..x+w`, rows `y..y+h`.
//! - `roll,pitch,yaw`: degrees, as AFLW gives them. The reader converts them to radians.
//!
//! Columns may come in any order and extra columns are ignored; all eight names are required.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{base_dir, parse_f64};
use crate::csv::split_line;
use crate::error::{ProbeError, Result};
use crate::fsutil::read_text;
use crate::geometry::CropBox;

/// The required column names of the pose CSV.
pub const POSE_CSV_HEADER: [&str; 8] = ["image", "x", "y", "w", "h", "roll", "pitch", "yaw"];

/// One face with its head pose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoseSample {
    /// The `image` field as written: the key matched against the embeddings' index.
    pub key: String,
    /// The image file.
    pub image: PathBuf,
    /// The face box.
    pub bbox: CropBox,
    /// `[roll, pitch, yaw]` in radians.
    pub angles: [f64; 3],
}

/// Reads a pose CSV (see the module docs for the columns).
pub fn read_pose_csv(path: &Path) -> Result<Vec<PoseSample>> {
    let text = read_text(path)?;
    let base = base_dir(path);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, header) = lines
        .next()
        .ok_or_else(|| ProbeError::parse(path, 1, "empty file, expected a header"))?;
    let names = split_line(header).map_err(|m| ProbeError::parse(path, 1, m))?;
    let mut col = [0usize; 8];
    for (c, want) in col.iter_mut().zip(POSE_CSV_HEADER) {
        *c = names.iter().position(|n| n.trim() == want).ok_or_else(|| {
            ProbeError::parse(
                path,
                1,
                format!(
                    "header lacks the column {want:?} (need {})",
                    POSE_CSV_HEADER.join(",")
                ),
            )
        })?;
    }
    let mut out = Vec::new();
    for (ln, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f = split_line(line).map_err(|m| ProbeError::parse(path, ln, m))?;
        if f.len() != names.len() {
            return Err(ProbeError::parse(
                path,
                ln,
                format!("expected {} fields, got {}", names.len(), f.len()),
            ));
        }
        let v = |k: usize| parse_f64(path, ln, f[col[k]].trim(), POSE_CSV_HEADER[k]);
        let (w, h) = (v(3)?, v(4)?);
        if w <= 0.0 || h <= 0.0 {
            return Err(ProbeError::parse(
                path,
                ln,
                format!("box size {w}x{h} must be positive"),
            ));
        }
        let image = f[col[0]].trim().to_string();
        if image.is_empty() {
            return Err(ProbeError::parse(path, ln, "empty image field"));
        }
        out.push(PoseSample {
            image: base.join(&image),
            key: image,
            bbox: CropBox::from_pixel_rect(v(1)?, v(2)?, w, h),
            angles: [v(5)?.to_radians(), v(6)?.to_radians(), v(7)?.to_radians()],
        });
    }
    Ok(out)
}
