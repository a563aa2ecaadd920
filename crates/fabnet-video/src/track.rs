//! VoxCeleb face-track files.
//!
//! A track file has `Key : value` header lines (`Identity`, `Reference`, `Offset`, `FV Conf`,
//! `ASD Conf`), a blank line, the line `FRAME X Y W H`, then one line per frame: the frame number
//! and the box's top-left corner and size.
//! VoxCeleb1 gives the box in pixels, VoxCeleb2 as fractions of the frame width and height.
//! [`BoxUnit::detect`] tells them apart; callers may override it with [`UnitChoice`].

use std::fmt;
use std::path::{Path, PathBuf};

/// An error while reading a track file; parse errors carry `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The file could not be read.
    #[error("cannot read track file {path}: {source}")]
    Io {
        /// The track file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line does not follow the format.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The track file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
}

/// The unit of a track file's box coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxUnit {
    /// Pixels of the video frame (VoxCeleb1).
    Pixels,
    /// Fractions of the frame width (X, W) and height (Y, H) (VoxCeleb2).
    Fractions,
}

impl BoxUnit {
    /// Guesses the unit from a file's boxes.
    ///
    /// Fractions when every coordinate lies in [-1, 2] (boxes may stick out of the frame a
    /// little); pixels otherwise, since a pixel box of a visible face is never that small.
    /// A file without boxes counts as pixels.
    pub fn detect(boxes: &[TrackBox]) -> BoxUnit {
        let small = |v: f64| (-1.0..=2.0).contains(&v);
        if !boxes.is_empty()
            && boxes
                .iter()
                .all(|b| small(b.x) && small(b.y) && small(b.w) && small(b.h))
        {
            BoxUnit::Fractions
        } else {
            BoxUnit::Pixels
        }
    }
}

impl fmt::Display for BoxUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BoxUnit::Pixels => "pixels",
            BoxUnit::Fractions => "fractions",
        })
    }
}

/// How to choose the unit of a track file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitChoice {
    /// Detect per file with [`BoxUnit::detect`].
    #[default]
    Auto,
    /// Use this unit for every file.
    Force(BoxUnit),
}

impl UnitChoice {
    /// The unit to use for `track`.
    pub fn resolve(self, track: &TrackFile) -> BoxUnit {
        match self {
            UnitChoice::Auto => BoxUnit::detect(&track.boxes),
            UnitChoice::Force(unit) => unit,
        }
    }
}

/// One line of a track file, in the file's own unit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrackBox {
    /// Frame number as written in the file.
    pub frame: u64,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl TrackBox {
    /// The box in pixels of a `width`×`height` frame, interpreting the file's numbers as `unit`.
    pub fn to_pixels(&self, unit: BoxUnit, width: u32, height: u32) -> PixelBox {
        let (sx, sy) = match unit {
            BoxUnit::Pixels => (1.0, 1.0),
            BoxUnit::Fractions => (f64::from(width), f64::from(height)),
        };
        PixelBox {
            x: self.x * sx,
            y: self.y * sy,
            w: self.w * sx,
            h: self.h * sy,
        }
    }
}

/// A box in frame pixels: top-left corner and size, continuous coordinates (pixel `i` spans
/// `[i, i + 1)`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PixelBox {
    /// Left edge in pixels.
    pub x: f64,
    /// Top edge in pixels.
    pub y: f64,
    /// Width in pixels.
    pub w: f64,
    /// Height in pixels.
    pub h: f64,
}

/// A parsed track file.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `Identity` header, e.g. `id10001`.
    pub identity: Option<String>,
    /// `Reference` header: the YouTube id of the source video.
    pub reference: Option<String>,
    /// `Offset` header as written (VoxCeleb's audio-visual offset, not a frame offset).
    pub offset: Option<String>,
    /// The boxes in file order.
    pub boxes: Vec<TrackBox>,
}

impl TrackFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<TrackFile, TrackError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrackError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a track file; `path` is used in errors only.
    ///
    /// The header is optional; if present it ends at the `FRAME X Y W H` line.
    /// Frame numbers must be non-negative integers and strictly increasing; W and H must be
    /// positive.
    pub fn parse(path: &Path, text: &str) -> Result<TrackFile, TrackError> {
        let err = |line: usize, message: String| TrackError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut track = TrackFile {
            path: path.to_path_buf(),
            identity: None,
            reference: None,
            offset: None,
            boxes: Vec::new(),
        };
        let has_header = text
            .lines()
            .any(|l| l.split_whitespace().next() == Some("FRAME"));
        let mut in_header = has_header;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if in_header {
                let mut words = line.split_whitespace();
                if words.next() == Some("FRAME") {
                    let rest: Vec<&str> = words.collect();
                    if rest != ["X", "Y", "W", "H"] {
                        return Err(err(
                            line_no,
                            format!("expected the column line `FRAME X Y W H`, found `{line}`"),
                        ));
                    }
                    in_header = false;
                    continue;
                }
                let Some((key, value)) = line.split_once(':') else {
                    return Err(err(
                        line_no,
                        format!("expected a `Key : value` header line, found `{line}`"),
                    ));
                };
                let value = value.trim().to_string();
                match key.trim() {
                    "Identity" => track.identity = Some(value),
                    "Reference" => track.reference = Some(value),
                    "Offset" => track.offset = Some(value),
                    // Confidence lines carry nothing we need; other keys are tolerated.
                    _ => {}
                }
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(err(
                    line_no,
                    format!("expected 5 fields `FRAME X Y W H`, found {}", fields.len()),
                ));
            }
            let frame: u64 = fields[0].parse().map_err(|_| {
                err(
                    line_no,
                    format!("frame number `{}` is not a non-negative integer", fields[0]),
                )
            })?;
            let mut v = [0.0f64; 4];
            for (k, (slot, name)) in v.iter_mut().zip(["X", "Y", "W", "H"]).enumerate() {
                let text = fields[k + 1];
                *slot = text
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        err(line_no, format!("{name} value `{text}` is not a number"))
                    })?;
            }
            if v[2] <= 0.0 || v[3] <= 0.0 {
                return Err(err(
                    line_no,
                    format!("box size must be positive, found W {} H {}", v[2], v[3]),
                ));
            }
            if let Some(prev) = track.boxes.last() {
                if frame <= prev.frame {
                    return Err(err(
                        line_no,
                        format!(
                            "frame {frame} does not follow frame {} (frames must increase)",
                            prev.frame
                        ),
                    ));
                }
            }
            track.boxes.push(TrackBox {
                frame,
                x: v[0],
                y: v[1],
                w: v[2],
                h: v[3],
            });
        }
        if track.boxes.is_empty() {
            return Err(err(
                text.lines().count().max(1),
                "no box lines after the header".into(),
            ));
        }
        Ok(track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "Identity  : \tid10001\nReference : \t1zcIwhmdeo4\nOffset    : \t1\nFV Conf   : \t16.647\t(1)\nASD Conf  : \t4.576\n\nFRAME \tX \tY \tW \tH \n000245 \t80 \t40 \t60 \t50 \n000246 \t81 \t41 \t62 \t52 \n";
    const V2: &str = "Identity  : \tid00012\nReference : \t21Uxsk56VDQ\nOffset    : \t1\nFV Conf   : \t18.051\t(1)\nASD Conf  : \t5.303\n\nFRAME \tX \tY \tW \tH \n000245 \t0.400 \t0.400 \t0.300 \t0.500 \n000246 \t0.405 \t0.410 \t0.310 \t0.520 \n";

    fn parse(text: &str) -> Result<TrackFile, TrackError> {
        TrackFile::parse(Path::new("id/vid/00001.txt"), text)
    }

    #[test]
    fn both_formats_parse_to_the_same_pixel_boxes() {
        let v1 = parse(V1).unwrap();
        let v2 = parse(V2).unwrap();
        assert_eq!(v1.identity.as_deref(), Some("id10001"));
        assert_eq!(v1.reference.as_deref(), Some("1zcIwhmdeo4"));
        assert_eq!(v2.reference.as_deref(), Some("21Uxsk56VDQ"));
        assert_eq!(BoxUnit::detect(&v1.boxes), BoxUnit::Pixels);
        assert_eq!(BoxUnit::detect(&v2.boxes), BoxUnit::Fractions);
        // A 200x100 frame: VoxCeleb2's fractions describe the same boxes as VoxCeleb1's pixels.
        for (a, b) in v1.boxes.iter().zip(&v2.boxes) {
            assert_eq!(a.frame, b.frame);
            let pa = a.to_pixels(UnitChoice::Auto.resolve(&v1), 200, 100);
            let pb = b.to_pixels(UnitChoice::Auto.resolve(&v2), 200, 100);
            for (x, y) in [(pa.x, pb.x), (pa.y, pb.y), (pa.w, pb.w), (pa.h, pb.h)] {
                assert!((x - y).abs() < 1e-9, "{pa:?} vs {pb:?}");
            }
        }
        assert_eq!(v1.boxes.len(), 2);
        assert_eq!(v1.boxes[1].frame, 246);
    }

    #[test]
    fn unit_override_beats_detection() {
        let v2 = parse(V2).unwrap();
        let forced = UnitChoice::Force(BoxUnit::Pixels).resolve(&v2);
        assert_eq!(forced, BoxUnit::Pixels);
        assert_eq!(v2.boxes[0].to_pixels(forced, 200, 100).w, 0.3);
    }

    #[test]
    fn headerless_files_are_accepted() {
        let t = parse("000001 10 20 30 40\n000002 11 21 31 41\n").unwrap();
        assert_eq!(t.boxes.len(), 2);
        assert_eq!(t.identity, None);
    }

    #[test]
    fn malformed_files_fail_with_file_and_line() {
        let cases = [
            (
                V1.replace("000246 \t81", "000246 \tabc"),
                9,
                "X value `abc`",
            ),
            (
                V1.replace("000246 \t81 \t41 \t62 \t52", "000246 \t81 \t41"),
                9,
                "expected 5 fields",
            ),
            (
                V1.replace("000246", "-00246"),
                9,
                "not a non-negative integer",
            ),
            (V1.replace("000246", "000240"), 9, "frames must increase"),
            (
                V1.replace("\t60 \t50", "\t0 \t50"),
                8,
                "box size must be positive",
            ),
            (
                V1.replace("FRAME \tX \tY \tW \tH", "FRAME X Y"),
                7,
                "FRAME X Y W H",
            ),
            (
                V1.replace("Offset    : \t1", "Offset 1"),
                3,
                "`Key : value`",
            ),
            (
                V1.split("000245").next().unwrap().to_string(),
                7,
                "no box lines",
            ),
            (V1.replace("\t52 \n", "\tnan \n"), 9, "H value `nan`"),
        ];
        for (text, line, needle) in cases {
            let err = parse(&text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("id/vid/00001.txt:{line}: ")) && msg.contains(needle),
                "{msg}"
            );
        }
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = TrackFile::read(Path::new("/nonexistent/00001.txt")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/00001.txt"), "{err}");
    }
}
