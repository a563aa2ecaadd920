//! EmotioNet-style action-unit CSV: a header `image,AU1,AU2,…` (any AU names after `image`), then one
//! line per image with 0 (absent), 1 (present) or 999 (unknown) per AU. Image paths are relative to the
//! CSV's folder; the `image` field as written is the sample's key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{base_dir, parse_f64};
use crate::csv::split_line;
use crate::error::{ProbeError, Result};
use crate::fsutil::read_text;

/// The label value that marks an AU as unknown: excluded from that AU's loss and metric.
pub const AU_UNKNOWN: f64 = 999.0;

/// One image's AU labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuSample {
    /// The `image` field as written.
    pub key: String,
    /// The image file.
    pub image: PathBuf,
    /// One label per AU, in [`AuTable::au_names`] order: `Some(present)` or `None` when unknown (999).
    pub labels: Vec<Option<bool>>,
}

/// An AU CSV: the AU names and one sample per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuTable {
    /// The AU column names, in file order.
    pub au_names: Vec<String>,
    /// The samples, in file order.
    pub samples: Vec<AuSample>,
}

/// Reads an AU CSV (see the module docs).
pub fn read_au_csv(path: &Path) -> Result<AuTable> {
    let text = read_text(path)?;
    let base = base_dir(path);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, header) = lines
        .next()
        .ok_or_else(|| ProbeError::parse(path, 1, "empty file, expected a header"))?;
    let names = split_line(header).map_err(|m| ProbeError::parse(path, 1, m))?;
    if names.first().map(|s| s.trim()) != Some("image") || names.len() < 2 {
        return Err(ProbeError::parse(
            path,
            1,
            "header must be `image` followed by at least one AU name",
        ));
    }
    let au_names: Vec<String> = names[1..].iter().map(|s| s.trim().to_string()).collect();
    let mut samples = Vec::new();
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
        let labels = f[1..]
            .iter()
            .zip(&au_names)
            .map(|(v, name)| match parse_f64(path, ln, v.trim(), name)? {
                0.0 => Ok(Some(false)),
                1.0 => Ok(Some(true)),
                AU_UNKNOWN => Ok(None),
                x => Err(ProbeError::parse(
                    path,
                    ln,
                    format!("{name}: expected 0, 1 or 999, got {x}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let image = f[0].trim().to_string();
        if image.is_empty() {
            return Err(ProbeError::parse(path, ln, "empty image field"));
        }
        samples.push(AuSample {
            image: base.join(&image),
            key: image,
            labels,
        });
    }
    Ok(AuTable { au_names, samples })
}
