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
    /// Column of the video frame where `data` starts (0 unless a [`Region`] was asked for).
    pub left: u32,
    /// Row of the video frame where `data` starts (0 unless a [`Region`] was asked for).
    pub top: u32,
    /// Width of `data` in pixels.
    pub width: u32,
    /// Height of `data` in pixels.
    pub height: u32,
    /// Pixels, shape `(height, width, 3)` row-major, RGB, no row padding.
    pub data: Vec<u8>,
}

impl Frame {
    /// The RGB triple at column `x`, row `y` of `data`, or `None` outside it.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }
}

/// An integer rectangle of a video frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Region {
    /// The whole of a `width`×`height` frame.
    pub fn full(width: u32, height: u32) -> Region {
        Region {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// The part of `self` inside a `width`×`height` frame, widened so its edges are multiples
    /// of `align_x` and `align_y` (or the frame's edge).
    /// The smallest region holding both.
    pub fn union(self, other: Region) -> Region {
        let left = self.left.min(other.left);
        let top = self.top.min(other.top);
        let right =
            (self.left.saturating_add(self.width)).max(other.left.saturating_add(other.width));
        let bottom =
            (self.top.saturating_add(self.height)).max(other.top.saturating_add(other.height));
        Region {
            left,
            top,
            width: right - left,
            height: bottom - top,
        }
    }

    fn clamp_aligned(self, width: u32, height: u32, align_x: u32, align_y: u32) -> Region {
        let round_up = |v: u32, a: u32| v.div_ceil(a).saturating_mul(a);
        let right = round_up(self.left.saturating_add(self.width), align_x).min(width);
        let bottom = round_up(self.top.saturating_add(self.height), align_y).min(height);
        let left = (self.left.min(right) / align_x) * align_x;
        let top = (self.top.min(bottom) / align_y) * align_y;
        Region {
            left,
            top,
            width: right - left,
            height: bottom - top,
        }
    }
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// Decoder threads; 0 lets FFmpeg choose from the number of cores.
    pub threads: usize,
}

/// A swscale context owned by one decoder.
struct OwnedScaler(Scaler);

// SAFETY: an SwsContext has no thread affinity; it must only not be used from two threads at
// once, which exclusive ownership by one `VideoDecoder` (used through `&mut self`) guarantees.
unsafe impl Send for OwnedScaler {}

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
    scaler: Option<(OwnedScaler, Pixel, u32, u32)>,
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
        let full = Region::full(self.info.width, self.info.height);
        self.next_region(&mut |i| select(i).then_some(full))
    }

    /// Like [`next_selected`](Self::next_selected), but converts only the region `select` returns
    /// (clamped to the frame; columns widened to multiples of 16, rows to the chroma grid).
    ///
    /// Converting a face-sized region instead of a full HD frame is most of the speed of
    /// tracked extraction. The returned frame's `left` and `top` say where the region lies.
    pub fn next_region(
        &mut self,
        select: &mut dyn FnMut(u64) -> Option<Region>,
    ) -> Result<Option<Frame>, VideoError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            match self.decoder.receive_frame(&mut self.raw) {
                Ok(()) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    if let Some(region) = select(index) {
                        return self.convert(index, region).map(Some);
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

    /// Converts `region` of the frame in `self.raw` to packed RGB8.
    fn convert(&mut self, index: u64, region: Region) -> Result<Frame, VideoError> {
        let (format, width, height) = (self.raw.format(), self.raw.width(), self.raw.height());
        // Planar 8-bit YUV can be cut before conversion by offsetting the plane pointers, as
        // FFmpeg's crop filter does; other formats are converted whole and cut afterwards.
        let chroma_shift = match format {
            Pixel::YUV420P | Pixel::YUVJ420P => Some((1, 1)),
            Pixel::YUV422P | Pixel::YUVJ422P => Some((1, 0)),
            Pixel::YUV444P | Pixel::YUVJ444P => Some((0, 0)),
            _ => None,
        };
        // Columns are aligned to 16 so that swscale takes the same SIMD path as for a whole
        // frame and the region's pixels equal the whole frame's; rows to the chroma grid.
        let (ax, ay) = chroma_shift.map_or((1, 1), |(_, sy)| (16, 1 << sy));
        let region = region.clamp_aligned(width, height, ax, ay);
        let (cw, ch) = match chroma_shift {
            Some(_) => (region.width, region.height),
            None => (width, height),
        };
        let mut pixels = Vec::new();
        if region.width > 0 && region.height > 0 {
            self.run_scaler(index, format, cw, ch, chroma_shift.map(|s| (s, region)))?;
            let (sx, sy) = match chroma_shift {
                Some(_) => (0, 0),
                None => (region.left as usize, region.top as usize),
            };
            let row = region.width as usize * 3;
            let stride = self.rgb.stride(0);
            let plane = self.rgb.data(0);
            pixels.reserve(row * region.height as usize);
            for y in sy..sy + region.height as usize {
                let start = y * stride + sx * 3;
                pixels.extend_from_slice(&plane[start..start + row]);
            }
        }
        let pts = self.raw.timestamp().or(self.raw.pts()).unwrap_or(0);
        Ok(Frame {
            index,
            time_s: (pts - self.start_pts) as f64 * self.time_base,
            left: region.left,
            top: region.top,
            width: region.width,
            height: region.height,
            data: pixels,
        })
    }

    /// Runs a (cached) `cw`×`ch` same-size conversion to RGB24 into `self.rgb`; with `cut`, the
    /// source is the region of a planar YUV frame with the given chroma shifts.
    fn run_scaler(
        &mut self,
        index: u64,
        format: Pixel,
        cw: u32,
        ch: u32,
        cut: Option<((u32, u32), Region)>,
    ) -> Result<(), VideoError> {
        let convert_err = |source| VideoError::Convert {
            path: self.path.clone(),
            frame: index,
            source,
        };
        let cached = self
            .scaler
            .take()
            .filter(|(_, f, w, h)| *f == format && *w == cw && *h == ch);
        let mut scaler = match cached {
            Some(scaler) => scaler,
            // Same size in and out: only the colour conversion runs.
            None => (
                OwnedScaler(
                    Scaler::get(format, cw, ch, Pixel::RGB24, cw, ch, ScalerFlags::BILINEAR)
                        .map_err(convert_err)?,
                ),
                format,
                cw,
                ch,
            ),
        };
        if self.rgb.width() != cw || self.rgb.height() != ch || self.rgb.format() != Pixel::RGB24 {
            self.rgb = ffmpeg::frame::Video::new(Pixel::RGB24, cw, ch);
        }
        let context = &mut scaler.0 .0;
        let ran = match cut {
            None => context.run(&self.raw, &mut self.rgb),
            Some(((sx, sy), region)) => {
                // SAFETY: `raw` holds a decoded planar frame of `format` whose planes 0..3 are
                // valid for its linesizes; the region lies inside the frame and its left/top are
                // multiples of the chroma subsampling, so every offset pointer stays inside its
                // plane. `rgb` was allocated by FFmpeg for a `cw`×`ch` RGB24 image, which is what
                // the context writes.
                let status = unsafe {
                    let src = &*self.raw.as_ptr();
                    let mut planes = [std::ptr::null::<u8>(); 4];
                    let mut strides = [0i32; 4];
                    for p in 0..3 {
                        let (dx, dy) = if p == 0 { (0, 0) } else { (sx, sy) };
                        let offset = (region.top >> dy) as isize * src.linesize[p] as isize
                            + (region.left >> dx) as isize;
                        planes[p] = src.data[p].offset(offset);
                        strides[p] = src.linesize[p];
                    }
                    let dst = &*self.rgb.as_mut_ptr();
                    ffmpeg::ffi::sws_scale(
                        context.as_mut_ptr(),
                        planes.as_ptr(),
                        strides.as_ptr(),
                        0,
                        ch as i32,
                        dst.data.as_ptr(),
                        dst.linesize.as_ptr(),
                    )
                };
                if status < 0 {
                    Err(ffmpeg::Error::from(status))
                } else {
                    Ok(())
                }
            }
        };
        self.scaler = Some(scaler);
        ran.map_err(convert_err)
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
