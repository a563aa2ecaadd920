//! Small generated dataset trees for tests, benchmarks and smoke runs.
//!
//! Every frame is a flat colour that encodes its track and frame number
//! ([`SyntheticTree::colour`]), so a decoded batch can be traced back to its files.

use std::fs;
use std::path::Path;

use image::{codecs::jpeg::JpegEncoder, Rgb, RgbImage};

use crate::error::{DataError, Result};

/// Image format of generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticFormat {
    /// Lossless `frameNNNNNN.png`.
    Png,
    /// `frameNNNNNN.jpg` at quality 95; flat colours survive within ±2 levels.
    Jpeg,
}

/// Shape of a generated `IDENTITY/VIDEO/TRACK/frame*` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticTree {
    /// Number of identities, named `id00000`, `id00001`, …
    pub identities: usize,
    /// Videos per identity, named `vid00`, `vid01`, …
    pub videos: usize,
    /// Tracks per video, named `00000`, `00001`, …
    pub tracks: usize,
    /// Frames per track, numbered from 1.
    pub frames: usize,
    /// If set, the last track of every video has this many frames instead.
    pub short_track_frames: Option<usize>,
    /// Frame side, pixels.
    pub size: u32,
    /// File format.
    pub format: SyntheticFormat,
}

impl SyntheticTree {
    /// A tree of 32×32 PNG frames.
    pub fn new(identities: usize, videos: usize, tracks: usize, frames: usize) -> Self {
        SyntheticTree {
            identities,
            videos,
            tracks,
            frames,
            short_track_frames: None,
            size: 32,
            format: SyntheticFormat::Png,
        }
    }

    /// Gives the last track of every video `frames` frames.
    pub fn with_short_tracks(mut self, frames: usize) -> Self {
        self.short_track_frames = Some(frames);
        self
    }

    /// Sets the frame side, pixels.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// Sets the file format.
    pub fn with_format(mut self, format: SyntheticFormat) -> Self {
        self.format = format;
        self
    }

    /// The flat colour of frame number `frame` of the track with ordinal `track` (tracks
    /// counted in index order): R and G encode the track in steps of 8, B the frame.
    pub fn colour(track: usize, frame: usize) -> [u8; 3] {
        let level = |v: usize| ((v % 32) * 8) as u8;
        [level(track), level(track / 32), level(frame)]
    }

    /// Decodes a (possibly JPEG-perturbed) colour back into (track ordinal mod 1024, frame mod 32).
    pub fn decode_colour(rgb: [u8; 3]) -> (usize, usize) {
        let level = |v: u8| ((f32::from(v) / 8.0).round() as usize) % 32;
        (level(rgb[0]) + 32 * level(rgb[1]), level(rgb[2]))
    }

    /// Writes the tree under `root`, creating folders as needed.
    pub fn write(&self, root: &Path) -> Result<()> {
        let mut ordinal = 0;
        for i in 0..self.identities {
            for v in 0..self.videos {
                for t in 0..self.tracks {
                    let dir = root
                        .join(format!("id{i:05}"))
                        .join(format!("vid{v:02}"))
                        .join(format!("{t:05}"));
                    let frames = match self.short_track_frames {
                        Some(short) if t + 1 == self.tracks => short,
                        _ => self.frames,
                    };
                    for f in 1..=frames {
                        let colour = Self::colour(ordinal, f);
                        match self.format {
                            SyntheticFormat::Png => write_flat_png(
                                &dir.join(format!("frame{f:06}.png")),
                                self.size,
                                colour,
                            )?,
                            SyntheticFormat::Jpeg => write_flat_jpeg(
                                &dir.join(format!("frame{f:06}.jpg")),
                                self.size,
                                colour,
                            )?,
                        }
                    }
                    ordinal += 1;
                }
            }
        }
        Ok(())
    }
}

/// Writes a `size`×`size` PNG of one colour, creating parent folders.
pub fn write_flat_png(path: &Path, size: u32, colour: [u8; 3]) -> Result<()> {
    create_parent(path)?;
    RgbImage::from_pixel(size, size, Rgb(colour))
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| DataError::io(path, std::io::Error::other(e)))
}

/// Writes a `size`×`size` JPEG (quality 95) of one colour, creating parent folders.
pub fn write_flat_jpeg(path: &Path, size: u32, colour: [u8; 3]) -> Result<()> {
    create_parent(path)?;
    let image = RgbImage::from_pixel(size, size, Rgb(colour));
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(&image)
        .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
    fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_round_trip() {
        for track in [0, 5, 31, 32, 100, 1023] {
            for frame in [0, 1, 17, 31] {
                let c = SyntheticTree::colour(track, frame);
                assert_eq!(SyntheticTree::decode_colour(c), (track, frame));
                let perturbed = c.map(|v| v.saturating_add(2));
                assert_eq!(SyntheticTree::decode_colour(perturbed), (track, frame));
            }
        }
    }
}
