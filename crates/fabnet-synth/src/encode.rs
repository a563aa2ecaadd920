//! H.264 / mp4 output through video-rs (libx264), single-threaded per video so that the same
//! frames always give the same bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use image::RgbImage;
use video_rs::encode::{Encoder, Settings};
use video_rs::ffmpeg::format::Pixel;
use video_rs::frame::RawFrame;
use video_rs::Options;

use crate::error::{Result, SynthError};

static INIT: Once = Once::new();

/// Writes RGB frames to an mp4 file; the file appears under its final name only after
/// [`Mp4Writer::finish`] succeeds.
pub struct Mp4Writer {
    encoder: Encoder,
    width: u32,
    height: u32,
    tmp: PathBuf,
    dst: PathBuf,
    fps: u32,
    count: i64,
    last: Option<RgbImage>,
}

impl Mp4Writer {
    /// Opens an encoder for `width × height` frames at `fps` frames per second with x264's
    /// constant rate factor `crf` (0–51, lower is better).
    pub fn create(dst: &Path, width: u32, height: u32, fps: u32, crf: u32) -> Result<Self> {
        INIT.call_once(|| {
            // Initialisation only registers codecs; a failure shows up when the encoder opens.
            let _ = video_rs::init();
        });
        let err = |message: String| SynthError::Encode {
            path: dst.to_path_buf(),
            message,
        };
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dst.with_file_name(format!(".{name}.partial"));
        let opts: HashMap<String, String> = [
            ("preset", "veryfast".to_string()),
            ("crf", crf.to_string()),
            ("threads", "1".to_string()),
            ("bf", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let settings = Settings::preset_h264_custom(
            width as usize,
            height as usize,
            Pixel::YUV420P,
            Options::from(opts),
        );
        let encoder = video_rs::encode::EncoderBuilder::new(tmp.as_path(), settings)
            .with_format("mp4")
            .build()
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            encoder,
            width,
            height,
            tmp,
            dst: dst.to_path_buf(),
            fps: fps.max(1),
            count: 0,
            last: None,
        })
    }

    /// Appends one frame; it must have the size given at creation.
    pub fn push(&mut self, img: &RgbImage) -> Result<()> {
        if img.width() != self.width || img.height() != self.height {
            return Err(SynthError::Encode {
                path: self.dst.clone(),
                message: format!(
                    "frame {} is {}x{}, expected {}x{}",
                    self.count,
                    img.width(),
                    img.height(),
                    self.width,
                    self.height
                ),
            });
        }
        // A fresh, fully written frame: the colour conversion reads the row padding, and
        // uninitialised padding made the output bytes differ between runs.
        let mut frame = RawFrame::new(Pixel::RGB24, img.width(), img.height());
        let stride = frame.stride(0);
        let row = img.width() as usize * 3;
        let data = frame.data_mut(0);
        data.fill(0);
        for (y, src) in img.as_raw().chunks_exact(row).enumerate() {
            data[y * stride..y * stride + row].copy_from_slice(src);
        }
        let tb = self.encoder.time_base();
        let pts = self.count * i64::from(tb.denominator())
            / (i64::from(tb.numerator()) * i64::from(self.fps));
        frame.set_pts(Some(pts));
        self.encoder
            .encode_raw(frame)
            .map_err(|e| SynthError::Encode {
                path: self.dst.clone(),
                message: format!("frame {}: {e}", self.count),
            })?;
        self.count += 1;
        self.last = Some(img.clone());
        Ok(())
    }

    /// Flushes the encoder, writes the trailer and moves the file to its final name.
    ///
    /// video-rs leaves the last packet without a duration, so the mp4 edit list ends at the
    /// start of the last sample and FFmpeg-based readers drop that sample. We therefore
    /// append one more copy of the last frame: such readers return exactly the frames
    /// pushed, and readers that ignore edit lists see one extra frame at the end.
    pub fn finish(mut self) -> Result<()> {
        if let Some(last) = self.last.take() {
            self.push(&last)?;
        }
        self.encoder.finish().map_err(|e| SynthError::Encode {
            path: self.dst.clone(),
            message: e.to_string(),
        })?;
        drop(self.encoder);
        std::fs::rename(&self.tmp, &self.dst).map_err(|source| SynthError::Io {
            path: self.dst.clone(),
            source,
        })
    }
}
