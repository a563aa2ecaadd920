//! Writing RGB8 frames as an H.264 mp4 through video-rs's encoder (libx264 when FFmpeg has it).
//!
//! Used to make synthetic test and demo videos whose content is known exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use video_rs::encode::Settings;
use video_rs::ffmpeg;
use video_rs::{Encoder, EncoderBuilder, Options};

/// An error while writing a video; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write video {path}: {reason}")]
pub struct WriteError {
    /// The video being written.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// An mp4 writer for packed RGB8 frames of a fixed size and frame rate.
pub struct VideoWriter {
    path: PathBuf,
    encoder: Encoder,
    width: u32,
    height: u32,
    fps: f64,
    count: u64,
}

impl VideoWriter {
    /// Creates `path` for `width`×`height` frames (both even, as yuv420p needs) at `fps`.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self, WriteError> {
        let fail = |reason: String| WriteError {
            path: path.to_path_buf(),
            reason,
        };
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(fail(format!(
                "frame size {width}x{height} must be even and non-zero"
            )));
        }
        if !(fps > 0.0 && fps.is_finite()) {
            return Err(fail(format!("frame rate {fps} must be positive")));
        }
        crate::decode::init_ffmpeg();
        // No B-frames: with them the mp4 muxer writes an edit list after which FFmpeg decodes
        // one frame fewer than the container declares.
        let codec_options = HashMap::from([
            ("preset".to_string(), "veryfast".to_string()),
            ("bf".to_string(), "0".to_string()),
        ]);
        let settings = Settings::preset_h264_custom(
            width as usize,
            height as usize,
            ffmpeg::format::Pixel::YUV420P,
            Options::from(codec_options),
        );
        let encoder = EncoderBuilder::new(path, settings)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            encoder,
            width,
            height,
            fps,
            count: 0,
        })
    }

    /// Appends one frame, shape `(height, width, 3)` packed RGB8.
    pub fn write(&mut self, rgb: &[u8]) -> Result<(), WriteError> {
        let row = self.width as usize * 3;
        if rgb.len() != row * self.height as usize {
            return Err(WriteError {
                path: self.path.clone(),
                reason: format!(
                    "frame {} has {} bytes, expected {}x{}x3",
                    self.count,
                    rgb.len(),
                    self.height,
                    self.width
                ),
            });
        }
        let mut frame =
            ffmpeg::frame::Video::new(ffmpeg::format::Pixel::RGB24, self.width, self.height);
        let stride = frame.stride(0);
        let plane = frame.data_mut(0);
        for (y, src) in rgb.chunks_exact(row).enumerate() {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        let tb = self.encoder.time_base();
        let secs = self.count as f64 / self.fps;
        let pts = secs * f64::from(tb.denominator()) / f64::from(tb.numerator().max(1));
        frame.set_pts(Some(pts.round() as i64));
        self.encoder.encode_raw(frame).map_err(|e| WriteError {
            path: self.path.clone(),
            reason: format!("frame {}: {e}", self.count),
        })?;
        self.count += 1;
        Ok(())
    }

    /// Flushes the encoder and writes the container trailer.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.encoder.finish().map_err(|e| WriteError {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}
