//! Video decoding to packed RGB8 frames.
//!
//! Containers and codecs are whatever FFmpeg reads (mp4/h264, mov/hevc, webm/vp9, ...).
//! The demuxer is opened through the `ffmpeg-next` that video-rs re-exports, and the decoder runs
//! with FFmpeg's frame threading: video-rs's own decoder is single-threaded, which made it several
//! times slower than the `ffmpeg` CLI on full-resolution clips.
//! Frames that the caller does not select are decoded (later frames reference them) but never
//! converted to RGB, which is where most of the per-frame cost beyond decoding goes.

use std::path::{Path, PathBuf};
use std::sync::Once;

use video_rs::ffmpeg;
use video_rs::ffmpeg::format::Pixel;
use video_rs::ffmpeg::software::scaling::{Context as Scaler, Flags as ScalerFlags};

/// An error while opening or decoding a video; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The file could not be opened or is not a media file FFmpeg understands.
    #[error("cannot open video {path}: {source}")]
    Open {
        /// The video file.
        path: PathBuf,
        /// FFmpeg's reason.
        source: ffmpeg::Error,
    },
    /// The container has no video stream.
    #[error("no video stream in {path}")]
    NoVideoStream {
        /// The video file.
        path: PathBuf,
    },
    /// The video stream's codec could not be set up (unknown codec or missing parameters).
    #[error("cannot set up the decoder for {path}: {reason}")]
    Codec {
        /// The video file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The demuxer failed with an error other than end of file.
    #[error("cannot read video {path} after frame {frame}: {source}")]
    Read {
        /// The video file.
        path: PathBuf,
        /// Number of frames decoded before the failure.
        frame: u64,
        /// FFmpeg's reason.
        source: ffmpeg::Error,
    },
    /// The decoder rejected the data (corrupt bitstream).
    #[error("corrupt video {path} at frame {frame}: {source}")]
    Corrupt {
        /// The video file.
        path: PathBuf,
        /// Index of the frame being decoded.
        frame: u64,
        /// FFmpeg's reason.
        source: ffmpeg::Error,
    },
    /// The stream ended more than one frame short of the count that the container declares.
    #[error("truncated video {path}: decoded {decoded} of {declared} frames")]
    Truncated {
        /// The video file.
        path: PathBuf,
        /// Frames decoded before the data ran out.
        decoded: u64,
        /// Frames the container's index declares.
        declared: u64,
    },
    /// The video stream holds no frame at all.
    #[error("empty video {path}: no frame decoded")]
    Empty {
        /// The video file.
        path: PathBuf,
    },
    /// Conversion of a decoded frame to RGB failed.
    #[error("cannot convert frame {frame} of {path} to rgb: {source}")]
    Convert {
        /// The video file.
        path: PathBuf,
        /// Index of the frame.
        frame: u64,
        /// FFmpeg's reason.
        source: ffmpeg::Error,
    },
}

/// Static facts about a video stream, known after opening.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Average frame rate in frames per second; 0 when the container does not say.
    pub fps: f64,
    /// Number of frames the container declares; `None` when it does not say (webm, raw streams).
    pub declared_frames: Option<u64>,
    /// FFmpeg's codec name, e.g. `h264`.
    pub codec: String,
}

/// One decoded frame as packed RGB8.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// 0-based index of the frame in decoding output (presentation) order.
    pub index: u64,
    /// Presentation time in seconds from the start of the stream.
    pub time_s: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels, shape `(height, width, 3)` row-major, RGB, no row padding.
    pub data: Vec<u8>,
}

impl Frame {
    /// The RGB triple at column `x`, row `y`, or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// Decoder threads; 0 lets FFmpeg choose from the number of cores.
    pub threads: usize,
}

static FFMPEG_INIT: Once = Once::new();

/// Initialises FFmpeg once per process and routes its log to `tracing`.
pub(crate) fn init_ffmpeg() {
    FFMPEG_INIT.call_once(|| {
        if let Err(err) = video_rs::init() {
            tracing::warn!("ffmpeg initialisation reported: {err}");
        }
    });
}

/// A streaming decoder over one video file that yields [`Frame`]s in order.
pub struct VideoDecoder {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    decoder: ffmpeg::decoder::Video,
    time_base: f64,
    start_pts: i64,
    info: VideoInfo,
    scaler: Option<(Scaler, Pixel, u32, u32)>,
    raw: ffmpeg::frame::Video,
    rgb: ffmpeg::frame::Video,
    next_index: u64,
    eof_sent: bool,
    finished: bool,
}

impl VideoDecoder {
    /// Opens `path` with default options.
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        Self::open_with(path, DecodeOptions::default())
    }

    /// Opens `path`, picks its best video stream and sets up a frame-threaded decoder.
    pub fn open_with(path: &Path, options: DecodeOptions) -> Result<Self, VideoError> {
        init_ffmpeg();
        let input = ffmpeg::format::input(path).map_err(|source| VideoError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| VideoError::NoVideoStream {
                path: path.to_path_buf(),
            })?;
        let stream_index = stream.index();
        let codec_err = |reason: String| VideoError::Codec {
            path: path.to_path_buf(),
            reason,
        };
        let mut context = ffmpeg::codec::Context::from_parameters(stream.parameters())
            .map_err(|e| codec_err(e.to_string()))?;
        context.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: options.threads,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| codec_err(e.to_string()))?;
        if decoder.width() == 0 || decoder.height() == 0 || decoder.format() == Pixel::None {
            return Err(codec_err(
                "missing frame size or pixel format in the stream parameters".into(),
            ));
        }
        let tb = stream.time_base();
        let time_base = if tb.denominator() != 0 {
            f64::from(tb.numerator()) / f64::from(tb.denominator())
        } else {
            0.0
        };
        let rate = stream.avg_frame_rate();
        let fps = if rate.denominator() != 0 && rate.numerator() > 0 {
            f64::from(rate.numerator()) / f64::from(rate.denominator())
        } else {
            0.0
        };
        let start = stream.start_time();
        let info = VideoInfo {
            width: decoder.width(),
            height: decoder.height(),
            fps,
            declared_frames: u64::try_from(stream.frames()).ok().filter(|&n| n > 0),
            codec: decoder
                .codec()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
        };
        Ok(Self {
            path: path.to_path_buf(),
            input,
            stream_index,
            decoder,
            time_base,
            // AV_NOPTS_VALUE is i64::MIN: a stream without start time starts at 0.
            start_pts: if start == i64::MIN { 0 } else { start },
            info,
            scaler: None,
            raw: ffmpeg::frame::Video::empty(),
            rgb: ffmpeg::frame::Video::empty(),
            next_index: 0,
            eof_sent: false,
            finished: false,
        })
    }

    /// The stream's size, rate and codec.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// The file being decoded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of frames decoded so far (selected or not).
    pub fn frames_decoded(&self) -> u64 {
        self.next_index
    }

    /// Decodes and returns the next frame, or `None` at the end of the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        self.next_selected(&mut |_| true)
    }

    /// Decodes up to the next frame whose index `select` accepts and returns it as RGB.
    ///
    /// Rejected frames are decoded but not converted. Returns `None` at the end of the stream,
    /// and an error if the stream turned out empty or shorter than its container declares.
    pub fn next_selected(
        &mut self,
        select: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<Frame>, VideoError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            match self.decoder.receive_frame(&mut self.raw) {
                Ok(()) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    if select(index) {
                        return self.convert(index).map(Some);
                    }
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    self.feed()?;
                }
                Err(ffmpeg::Error::Eof) => {
                    self.finished = true;
                    return self.check_complete().map(|()| None);
                }
                Err(source) => {
                    return Err(VideoError::Corrupt {
                        path: self.path.clone(),
                        frame: self.next_index,
                        source,
                    })
                }
            }
        }
    }

    /// Sends the next packet of our stream (or end of stream) to the decoder.
    fn feed(&mut self) -> Result<(), VideoError> {
        if self.eof_sent {
            // The decoder asked for more input after EOF: nothing more will come.
            self.finished = true;
            return Ok(());
        }
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    return self.decoder.send_packet(&packet).map_err(|source| {
                        VideoError::Corrupt {
                            path: self.path.clone(),
                            frame: self.next_index,
                            source,
                        }
                    });
                }
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    self.eof_sent = true;
                    return self
                        .decoder
                        .send_eof()
                        .map_err(|source| VideoError::Corrupt {
                            path: self.path.clone(),
                            frame: self.next_index,
                            source,
                        });
                }
                Err(source) => {
                    return Err(VideoError::Read {
                        path: self.path.clone(),
                        frame: self.next_index,
                        source,
                    })
                }
            }
        }
    }

    /// Named errors for streams that ended with no frame or fewer frames than declared.
    fn check_complete(&self) -> Result<(), VideoError> {
        if self.next_index == 0 {
            return Err(VideoError::Empty {
                path: self.path.clone(),
            });
        }
        match self.info.declared_frames {
            // One frame of slack: mp4s whose last packet has no duration (video-rs's encoder
            // writes such files) get an edit list that makes FFmpeg drop the final frame.
            Some(declared) if self.next_index + 1 < declared => Err(VideoError::Truncated {
                path: self.path.clone(),
                decoded: self.next_index,
                declared,
            }),
            _ => Ok(()),
        }
    }

    /// Converts the frame in `self.raw` to packed RGB8.
    fn convert(&mut self, index: u64) -> Result<Frame, VideoError> {
        let (format, width, height) = (self.raw.format(), self.raw.width(), self.raw.height());
        let convert_err = |source| VideoError::Convert {
            path: self.path.clone(),
            frame: index,
            source,
        };
        let cached = self
            .scaler
            .take()
            .filter(|(_, f, w, h)| *f == format && *w == width && *h == height);
        let mut scaler = match cached {
            Some(scaler) => scaler,
            // Same size in and out: only the colour conversion runs; BITEXACT and ACCURATE_RND
            // make the result independent of the CPU's SIMD path, so checksums are portable.
            None => (
                Scaler::get(
                    format,
                    width,
                    height,
                    Pixel::RGB24,
                    width,
                    height,
                    ScalerFlags::BILINEAR | ScalerFlags::ACCURATE_RND | ScalerFlags::BITEXACT,
                )
                .map_err(convert_err)?,
                format,
                width,
                height,
            ),
        };
        let ran = scaler.0.run(&self.raw, &mut self.rgb);
        self.scaler = Some(scaler);
        ran.map_err(convert_err)?;
        let row = width as usize * 3;
        let stride = self.rgb.stride(0);
        let plane = self.rgb.data(0);
        let mut data = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        let pts = self.raw.timestamp().or(self.raw.pts()).unwrap_or(0);
        Ok(Frame {
            index,
            time_s: (pts - self.start_pts) as f64 * self.time_base,
            width,
            height,
            data,
        })
    }
}

impl Iterator for VideoDecoder {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_frame() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => None,
            Err(err) => {
                // One error ends the iteration: the decoder state after it is unspecified.
                self.finished = true;
                Some(Err(err))
            }
        }
    }
}
