//! Readers for the probe benchmarks' annotation formats: CelebA/MAFL landmark lists, 300-W `.pts`
//! files, dlib imglab XML, an AFLW-style pose CSV and an EmotioNet-style action-unit CSV.
//!
//! All readers return points in 0-based pixel coordinates, x first (see [`crate::geometry`]), report a
//! malformed file as [`ProbeError::Parse`] with `file:line`, and do not touch the images: call
//! [`check_images`] to verify that every referenced image exists.

mod au;
mod celeba;
mod dlib;
mod pose;
mod pts;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::geometry::CropBox;

pub use au::{read_au_csv, AuSample, AuTable, AU_UNKNOWN};
pub use celeba::{read_celeba_landmarks, read_image_list, read_mafl, CELEBA_LANDMARK_HEADER};
pub use dlib::read_dlib_xml;
pub use pose::{read_pose_csv, PoseSample, POSE_CSV_HEADER};
pub use pts::{read_300w_dir, read_pts};

/// Whether a format's pixel coordinates count from 0 or from 1 (Matlab style, as in 300-W `.pts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelOrigin {
    /// The first pixel's centre is 0: values are kept as they are.
    ZeroBased,
    /// The first pixel's centre is 1: readers subtract 1.
    OneBased,
}

impl PixelOrigin {
    fn offset(self) -> f64 {
        match self {
            PixelOrigin::ZeroBased => 0.0,
            PixelOrigin::OneBased => 1.0,
        }
    }
}

/// One annotated face: its image, its landmarks and, when the format gives one, its box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LandmarkSample {
    /// A unique key for the face, matched against the embeddings' `index.csv`: the image path as written
    /// in (or relative to) the annotation source, plus `#k` for the k-th face (0-based) in multi-face formats.
    pub key: String,
    /// The image file.
    pub image: PathBuf,
    /// Landmarks, `(P, 2)`, 0-based pixel coordinates, x first.
    pub points: Vec<[f64; 2]>,
    /// The annotated face box, if the format has one (dlib XML).
    pub given_box: Option<CropBox>,
}

/// Checks that every image exists; the error names the first missing path.
pub fn check_images<'a>(images: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    for p in images {
        if !p.is_file() {
            return Err(ProbeError::MissingImage(p.to_path_buf()));
        }
    }
    Ok(())
}

fn parse_f64(path: &Path, line: usize, tok: &str, what: &str) -> Result<f64> {
    match tok.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ProbeError::parse(
            path,
            line,
            format!("{what}: expected a number, got {tok:?}"),
        )),
    }
}

/// The directory that relative image names in `annotation` are resolved against.
fn base_dir(annotation: &Path) -> PathBuf {
    annotation
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
