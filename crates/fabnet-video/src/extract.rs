//! Face-track frame extraction: decode each video once, cut every track's frames, write them to
//! `OUT/IDENTITY/VIDEO/TRACK/frameNNNNNN.{jpg,png}` with a `manifest.json`.
//!
//! **Atomic per track**: a track is written into the hidden folder
//! `OUT/IDENTITY/VIDEO/.TRACK.partial-PID` and renamed to `TRACK` once its last frame and its
//! manifest are on disk. A killed run therefore never leaves a half track under a visible name,
//! and a rerun skips every track folder that exists (stale partial folders are removed).
//!
//! `NNNNNN` is the 0-based index of the frame in the decoded video (after `frame_offset`).
//! Videos run in parallel (rayon); inside a video, crops are resampled and encoded in parallel
//! across frames while the (frame-threaded) decoder moves on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::crop::{footprint, resample, Filter, Window};
use crate::decode::{DecodeOptions, Frame, Region, VideoDecoder, VideoError};
use crate::layout::{TrackSource, VideoJob};
use crate::track::{BoxUnit, PixelBox, UnitChoice};

/// File name of the per-track manifest.
pub const MANIFEST_NAME: &str = "manifest.json";

/// An error that stops one video (the run goes on with the others).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Decoding failed.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Encoding a frame image failed.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The image file being written.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
    /// Serialising a manifest failed.
    #[error("cannot write manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The serialiser's error.
        source: serde_json::Error,
    },
    /// `--fps` subsampling needs the video's frame rate, which the container does not give.
    #[error("video {path} has no frame rate, so --fps cannot subsample it (use --every)")]
    NoFrameRate {
        /// The video file.
        path: PathBuf,
    },
    /// The run was cancelled while this video was in progress; its unfinished tracks stay
    /// unwritten.
    #[error("cancelled while extracting {path}")]
    Cancelled {
        /// The video file.
        path: PathBuf,
    },
}

/// Which frames of a track (or of a face video) are written.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// Every listed frame.
    #[default]
    All,
    /// Every k-th listed frame, starting with the first (k ≥ 1).
    Every(u64),
    /// About this many frames per second of video: the first listed frame of each
    /// `1/fps`-second slot (VoxCeleb1 used 1 fps).
    Fps(f64),
}

impl Sampling {
    /// Whether frame `i` of a video decoded frame by frame (indices 0, 1, 2, …)
    /// is kept, given the video's frame rate.
    pub fn keeps_frame(self, i: u64, video_fps: f64) -> bool {
        match self {
            Sampling::All => true,
            Sampling::Every(k) => i.is_multiple_of(k.max(1)),
            Sampling::Fps(rate) => {
                i == 0 || fps_slot(i, rate, video_fps) != fps_slot(i - 1, rate, video_fps)
            }
        }
    }
}

/// The `1/rate`-second slot that video frame `frame` falls in; the epsilon
/// keeps frames exactly on a slot boundary in the later slot.
fn fps_slot(frame: u64, rate: f64, video_fps: f64) -> i64 {
    (frame as f64 * rate / video_fps + 1e-9).floor() as i64
}

/// Output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Baseline JPEG from FFmpeg's mjpeg encoder.
    Jpeg {
        /// Quantiser scale as FFmpeg's `-q:v`: 2 (best) to 31 (worst).
        qscale: u8,
    },
    /// Lossless PNG.
    Png,
}

impl ImageFormat {
    /// The file extension, without dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg { .. } => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// Settings of an extraction run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractConfig {
    /// Output root; tracks go to `out_dir/IDENTITY/VIDEO/TRACK/`.
    pub out_dir: PathBuf,
    /// Side of the square output frames in pixels.
    pub size: u32,
    /// Side of the crop square as a multiple of the track box's longer side.
    pub scale: f64,
    /// Resampling kernel.
    pub filter: Filter,
    /// Unit of the track boxes.
    pub unit: UnitChoice,
    /// Subtracted from track-file frame numbers to get indices into the given video; use it when
    /// the numbers index a longer original of which the video is an excerpt.
    pub frame_offset: i64,
    /// Frame subsampling.
    pub sampling: Sampling,
    /// Output image format.
    pub format: ImageFormat,
    /// Decoder options (threads).
    pub decode: DecodeOptions,
}

impl ExtractConfig {
    /// The defaults: 256 px, scale 1, triangle filter, detected unit, no offset, every frame,
    /// JPEG at qscale 2 (FFmpeg's best).
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            size: 256,
            scale: 1.0,
            filter: Filter::Triangle,
            unit: UnitChoice::Auto,
            frame_offset: 0,
            sampling: Sampling::All,
            format: ImageFormat::Jpeg { qscale: 2 },
            decode: DecodeOptions::default(),
        }
    }
}

/// One written frame of a track, as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFrame {
    /// Image file name inside the track folder.
    pub file: String,
    /// 0-based frame index in the decoded video.
    pub video_frame: u64,
    /// Presentation time in seconds.
    pub time_s: f64,
    /// Frame number as written in the track file (tracked mode).
    pub track_frame: Option<u64>,
    /// The track box in video pixels (tracked mode).
    pub track_box: Option<PixelBox>,
    /// The window of the video frame that was resampled to the output, in video pixels.
    pub window: Window,
}

/// The `manifest.json` of a finished track.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrackManifest {
    /// The source video.
    pub source_video: PathBuf,
    /// The track file (tracked mode).
    pub track_file: Option<PathBuf>,
    /// Identity folder name.
    pub identity: String,
    /// Video folder name.
    pub video: String,
    /// Track folder name.
    pub track: String,
    /// Unit the track boxes were read in (tracked mode).
    pub unit: Option<BoxUnit>,
    /// Frame offset applied to track-file frame numbers.
    pub frame_offset: i64,
    /// Crop scale (tracked mode).
    pub scale: Option<f64>,
    /// Output side in pixels.
    pub size: u32,
    /// Video width in pixels.
    pub video_width: u32,
    /// Video height in pixels.
    pub video_height: u32,
    /// Video frame rate.
    pub video_fps: f64,
    /// Number of frames written.
    pub frame_count: usize,
    /// Selected track frames that were skipped: outside the video, or with an absurd box.
    pub missing_frames: usize,
    /// The frames in order.
    pub frames: Vec<ManifestFrame>,
}

/// What happened to one video.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoOutcome {
    /// Tracks written in this run.
    pub tracks_written: usize,
    /// Tracks skipped because their folder already existed.
    pub tracks_skipped: usize,
    /// Tracks with no frame inside the video (nothing written).
    pub tracks_empty: usize,
    /// Frames written.
    pub frames_written: u64,
    /// Selected track frames skipped: outside the video, or with an absurd box.
    pub frames_missing: u64,
}

/// A video that failed, with the reason.
#[derive(Debug)]
pub struct Failure {
    /// The video (or track file) concerned.
    pub path: PathBuf,
    /// Why it failed.
    pub error: ExtractError,
}

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Videos that finished (fully or with skipped tracks).
    pub videos_ok: usize,
    /// Tracks written, skipped and empty, summed over videos; `tracks_written` also counts the
    /// tracks finished in videos that failed or were cancelled afterwards.
    pub totals: VideoOutcome,
    /// Failed videos, sorted by path.
    pub failures: Vec<Failure>,
}

/// Run controls that are not about the output.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Set to true (e.g. from a signal handler) to stop; unfinished tracks are left unwritten.
    pub cancel: Arc<AtomicBool>,
    /// Stop the run, as a cancellation, once this many tracks have been written; processes a
    /// large dataset in chunks (a rerun continues where it stopped).
    pub stop_after_tracks: Option<usize>,
}

/// Shared progress and stop state of a run.
struct RunState<'a> {
    options: &'a RunOptions,
    tracks_done: AtomicUsize,
    frames: ProgressBar,
}

impl RunState<'_> {
    fn cancelled(&self) -> bool {
        self.options.cancel.load(Ordering::Relaxed)
    }

    fn track_finished(&self) {
        let done = self.tracks_done.fetch_add(1, Ordering::SeqCst) + 1;
        if self.options.stop_after_tracks.is_some_and(|n| done >= n) {
            self.options.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// Extracts all `jobs` in parallel over videos and returns the totals and failures.
///
/// Failures of one video never stop the others; a cancelled video counts as a failure.
pub fn run(jobs: &[VideoJob], config: &ExtractConfig, options: &RunOptions) -> Summary {
    let multi = MultiProgress::with_draw_target(if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let videos = multi.add(ProgressBar::new(jobs.len() as u64));
    videos.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} videos  {elapsed_precise} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let frames = multi.add(ProgressBar::no_length());
    frames.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} frames written  {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    frames.enable_steady_tick(Duration::from_millis(200));
    let state = RunState {
        options,
        tracks_done: AtomicUsize::new(0),
        frames,
    };
    let results: Vec<(PathBuf, Result<VideoOutcome, ExtractError>)> = jobs
        .par_iter()
        .map(|job| {
            let result = if state.cancelled() {
                Err(ExtractError::Cancelled {
                    path: job.video.clone(),
                })
            } else {
                extract_video_with(job, config, &state)
            };
            videos.inc(1);
            match &result {
                Ok(o) => tracing::info!(
                    video = %job.video.display(),
                    written = o.tracks_written,
                    skipped = o.tracks_skipped,
                    frames = o.frames_written,
                    "video done"
                ),
                Err(e) => tracing::error!("{e}"),
            }
            (job.video.clone(), result)
        })
        .collect();
    state.frames.finish_and_clear();
    videos.finish_and_clear();
    let mut summary = Summary::default();
    for (path, result) in results {
        match result {
            Ok(o) => {
                summary.videos_ok += 1;
                let t = &mut summary.totals;
                t.tracks_written += o.tracks_written;
                t.tracks_skipped += o.tracks_skipped;
                t.tracks_empty += o.tracks_empty;
                t.frames_written += o.frames_written;
                t.frames_missing += o.frames_missing;
            }
            Err(error) => summary.failures.push(Failure { path, error }),
        }
    }
    summary.failures.sort_by(|a, b| a.path.cmp(&b.path));
    // A video that fails or is cancelled after finishing some tracks still wrote them.
    summary.totals.tracks_written = state.tracks_done.load(Ordering::SeqCst);
    summary
}

/// Extracts the tracks of one video (without progress bars).
pub fn extract_video(
    job: &VideoJob,
    config: &ExtractConfig,
    options: &RunOptions,
) -> Result<VideoOutcome, ExtractError> {
    let state = RunState {
        options,
        tracks_done: AtomicUsize::new(0),
        frames: ProgressBar::hidden(),
    };
    extract_video_with(job, config, &state)
}

/// A frame of a track to be written.
struct Planned {
    track: usize,
    window: Window,
    track_frame: Option<u64>,
    track_box: Option<PixelBox>,
}

/// The in-progress state of one pending track.
struct Pending {
    name: String,
    final_dir: PathBuf,
    temp_dir: PathBuf,
    manifest: TrackManifest,
    /// Last video frame index this track needs; the track is finished once it is decoded.
    last: Option<u64>,
    created: bool,
    done: bool,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Indices (into `frames`) kept by `sampling`; `frames` are increasing video frame indices.
fn subsample(frames: &[u64], sampling: Sampling, fps: f64) -> Vec<usize> {
    match sampling {
        Sampling::All => (0..frames.len()).collect(),
        Sampling::Every(k) => (0..frames.len()).step_by(k.max(1) as usize).collect(),
        Sampling::Fps(rate) => {
            let mut last_slot = None;
            let mut keep = Vec::new();
            for (i, &f) in frames.iter().enumerate() {
                let slot = fps_slot(f, rate, fps);
                if last_slot != Some(slot) {
                    keep.push(i);
                    last_slot = Some(slot);
                }
            }
            keep
        }
    }
}

/// A crop window worth resampling: finite, and neither empty nor over 16 times the frame's
/// larger side (such boxes come from wrong units and would cost unbounded filter taps).
fn window_is_sane(w: &Window, width: u32, height: u32) -> bool {
    let limit = 16.0 * f64::from(width.max(height));
    [w.x, w.y, w.w, w.h].iter().all(|v| v.is_finite())
        && w.w > 0.0
        && w.h > 0.0
        && w.w <= limit
        && w.h <= limit
        && w.x.abs() <= limit
        && w.y.abs() <= limit
}

/// Removes stale `.TRACK.partial-*` folders left by killed runs.
fn remove_stale_partials(video_out: &Path, track: &str) -> Result<(), ExtractError> {
    let Ok(entries) = std::fs::read_dir(video_out) else {
        return Ok(());
    };
    let prefix = format!(".{track}.partial-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
            let path = entry.path();
            tracing::debug!("removing stale partial track {}", path.display());
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn extract_video_with(
    job: &VideoJob,
    config: &ExtractConfig,
    state: &RunState<'_>,
) -> Result<VideoOutcome, ExtractError> {
    let video_out = config.out_dir.join(&job.identity).join(&job.video_id);
    let mut outcome = VideoOutcome::default();
    let pending_jobs: Vec<_> = job
        .tracks
        .iter()
        .filter(|t| {
            let done = video_out.join(&t.name).is_dir();
            outcome.tracks_skipped += usize::from(done);
            !done
        })
        .collect();
    if pending_jobs.is_empty() {
        return Ok(outcome);
    }
    for t in &pending_jobs {
        remove_stale_partials(&video_out, &t.name)?;
    }

    let mut decoder = VideoDecoder::open_with(&job.video, config.decode)?;
    let info = decoder.info().clone();
    if matches!(config.sampling, Sampling::Fps(_)) && info.fps <= 0.0 {
        return Err(ExtractError::NoFrameRate {
            path: job.video.clone(),
        });
    }

    // Plan: which video frames each pending track needs, and with which window.
    let mut wanted: BTreeMap<u64, Vec<Planned>> = BTreeMap::new();
    let mut whole_frames: Vec<usize> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut before_start = 0u64;
    let mut absurd = 0u64;
    for (slot, t) in pending_jobs.iter().enumerate() {
        let mut manifest = TrackManifest {
            source_video: job.video.clone(),
            track_file: None,
            identity: job.identity.clone(),
            video: job.video_id.clone(),
            track: t.name.clone(),
            unit: None,
            frame_offset: config.frame_offset,
            scale: None,
            size: config.size,
            video_width: info.width,
            video_height: info.height,
            video_fps: info.fps,
            frame_count: 0,
            missing_frames: 0,
            frames: Vec::new(),
        };
        let mut last = None;
        match &t.source {
            TrackSource::Boxes(track) => {
                let unit = config.unit.resolve(track);
                manifest.track_file = Some(track.path.clone());
                manifest.unit = Some(unit);
                manifest.scale = Some(config.scale);
                let mut indexed = Vec::new();
                for b in &track.boxes {
                    match u64::try_from(b.frame as i64 - config.frame_offset) {
                        Ok(v) => indexed.push((v, b)),
                        Err(_) => {
                            before_start += 1;
                            manifest.missing_frames += 1;
                        }
                    }
                }
                let frames: Vec<u64> = indexed.iter().map(|&(v, _)| v).collect();
                for i in subsample(&frames, config.sampling, info.fps) {
                    let (v, b) = indexed[i];
                    let px = b.to_pixels(unit, info.width, info.height);
                    let window = Window::square_around(&px, config.scale);
                    if !window_is_sane(&window, info.width, info.height) {
                        absurd += 1;
                        manifest.missing_frames += 1;
                        continue;
                    }
                    wanted.entry(v).or_default().push(Planned {
                        track: slot,
                        window,
                        track_frame: Some(b.frame),
                        track_box: Some(px),
                    });
                    last = Some(v);
                }
            }
            TrackSource::WholeFrames => whole_frames.push(slot),
        }
        pending.push(Pending {
            name: t.name.clone(),
            final_dir: video_out.join(&t.name),
            temp_dir: video_out.join(format!(".{}.partial-{}", t.name, std::process::id())),
            manifest,
            last,
            created: false,
            done: false,
        });
    }
    if absurd > 0 {
        tracing::warn!(
            "{absurd} track boxes for {} are not finite or far larger than the frame (wrong --unit?) and are skipped",
            job.video.display()
        );
    }
    if before_start > 0 {
        tracing::warn!(
            "{before_start} track frames of {} lie before the video start (frame offset {}) and are skipped",
            job.video.display(),
            config.frame_offset
        );
    }

    let fps = info.fps;
    let sampling = config.sampling;
    let whole_frame_wanted = |i: u64| sampling.keeps_frame(i, fps);
    let batch_len = rayon::current_num_threads().max(2) * 4;
    let result = (|| -> Result<(), ExtractError> {
        // Decodes the next `batch_len` wanted frames into `batch`; true at the end of the video.
        let mut fill = |batch: &mut Vec<(Arc<Frame>, Vec<Planned>)>| -> Result<bool, ExtractError> {
            while batch.len() < batch_len {
                if state.cancelled() {
                    return Err(ExtractError::Cancelled {
                        path: job.video.clone(),
                    });
                }
                let frame = decoder.next_region(&mut |i| {
                    if !whole_frames.is_empty() && whole_frame_wanted(i) {
                        return Some(Region::full(info.width, info.height));
                    }
                    wanted.get(&i).and_then(|plans| {
                        plans
                            .iter()
                            .map(|p| footprint(&p.window, config.size, config.size, config.filter))
                            .reduce(Region::union)
                    })
                })?;
                let Some(frame) = frame else {
                    return Ok(true);
                };
                let mut plans = wanted.remove(&frame.index).unwrap_or_default();
                for &slot in &whole_frames {
                    plans.push(Planned {
                        track: slot,
                        window: Window::full(info.width, info.height),
                        track_frame: None,
                        track_box: None,
                    });
                }
                batch.push((Arc::new(frame), plans));
            }
            Ok(false)
        };
        let mut ready = Vec::new();
        let mut at_end = fill(&mut ready)?;
        loop {
            prepare_dirs(&ready, &mut pending)?;
            let dirs: Vec<PathBuf> = pending.iter().map(|p| p.temp_dir.clone()).collect();
            // Encode this batch while the decoder works on the next one.
            let mut next = Vec::new();
            let (written, decoded) = rayon::join(
                || encode_batch(&ready, &dirs, config),
                || if at_end { Ok(true) } else { fill(&mut next) },
            );
            written?;
            if state.cancelled() {
                return Err(ExtractError::Cancelled {
                    path: job.video.clone(),
                });
            }
            record_batch(&ready, &mut pending, config, state);
            // Tracks whose last frame has been written are complete.
            if let Some(li) = ready.last().map(|(f, _)| f.index) {
                for p in pending.iter_mut() {
                    if !p.done && p.last.is_some_and(|l| l <= li) {
                        if state.cancelled() {
                            return Err(ExtractError::Cancelled {
                                path: job.video.clone(),
                            });
                        }
                        finish_track(p, &mut outcome, state)?;
                    }
                }
            }
            if at_end {
                return Ok(());
            }
            at_end = decoded?;
            ready = next;
        }
    })();
    if let Err(err) = result {
        if !matches!(err, ExtractError::Cancelled { .. }) {
            // A failed video leaves no partial folders; a cancelled one leaves them, as a kill
            // would, and the next run removes them.
            for p in pending.iter().filter(|p| p.created && !p.done) {
                let _ = std::fs::remove_dir_all(&p.temp_dir);
            }
        }
        return Err(err);
    }

    // End of video: what is left in `wanted` lies beyond the last decoded frame.
    let decoded = decoder.frames_decoded();
    let mut beyond = 0u64;
    for plans in wanted.values() {
        for plan in plans {
            pending[plan.track].manifest.missing_frames += 1;
            beyond += 1;
        }
    }
    if beyond > 0 {
        tracing::warn!(
            "{beyond} track frames lie beyond the end of {} ({decoded} frames) and are skipped",
            job.video.display()
        );
    }
    outcome.frames_missing = beyond + before_start + absurd;
    for p in pending.iter_mut().filter(|p| !p.done) {
        if p.manifest.frames.is_empty() {
            outcome.tracks_empty += 1;
            tracing::warn!(
                "track {} of {} has no frame inside the video; nothing written",
                p.name,
                job.video.display()
            );
            p.done = true;
        } else {
            finish_track(p, &mut outcome, state)?;
        }
    }
    outcome.frames_written = pending.iter().map(|p| p.manifest.frames.len() as u64).sum();
    Ok(outcome)
}

/// Creates the partial folders of the tracks that `batch` writes to.
fn prepare_dirs(
    batch: &[(Arc<Frame>, Vec<Planned>)],
    pending: &mut [Pending],
) -> Result<(), ExtractError> {
    for plan in batch.iter().flat_map(|(_, plans)| plans) {
        let p = &mut pending[plan.track];
        if !p.created {
            std::fs::create_dir_all(&p.temp_dir).map_err(io_err(&p.temp_dir))?;
            p.created = true;
        }
    }
    Ok(())
}

/// The image file name of video frame `index`.
fn frame_file(index: u64, format: ImageFormat) -> String {
    format!("frame{index:06}.{}", format.extension())
}

/// Resamples, encodes and writes a batch of frames in parallel into the tracks' `dirs`.
fn encode_batch(
    batch: &[(Arc<Frame>, Vec<Planned>)],
    dirs: &[PathBuf],
    config: &ExtractConfig,
) -> Result<(), ExtractError> {
    let work: Vec<(&Arc<Frame>, &Planned)> = batch
        .iter()
        .flat_map(|(frame, plans)| plans.iter().map(move |plan| (frame, plan)))
        .collect();
    work.par_iter().try_for_each(|(frame, plan)| {
        let img = resample(frame, &plan.window, config.size, config.size, config.filter);
        let path = dirs[plan.track].join(frame_file(frame.index, config.format));
        save_image(&img, &path, config.format)
    })
}

/// Records a written batch in the tracks' manifests, in frame order.
fn record_batch(
    batch: &[(Arc<Frame>, Vec<Planned>)],
    pending: &mut [Pending],
    config: &ExtractConfig,
    state: &RunState<'_>,
) {
    let mut n = 0;
    for (frame, plans) in batch {
        for plan in plans {
            pending[plan.track].manifest.frames.push(ManifestFrame {
                file: frame_file(frame.index, config.format),
                video_frame: frame.index,
                time_s: frame.time_s,
                track_frame: plan.track_frame,
                track_box: plan.track_box,
                window: plan.window,
            });
            n += 1;
        }
    }
    state.frames.inc(n);
}

fn save_image(img: &image::RgbImage, path: &Path, format: ImageFormat) -> Result<(), ExtractError> {
    let bytes = match format {
        ImageFormat::Jpeg { qscale } => {
            crate::jpeg::encode_jpeg(img, qscale).map_err(|e| ExtractError::Encode {
                path: path.to_path_buf(),
                source: image::ImageError::Encoding(image::error::EncodingError::new(
                    image::ImageFormat::Jpeg.into(),
                    e,
                )),
            })?
        }
        ImageFormat::Png => {
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, image::ImageFormat::Png)
                .map_err(|source| ExtractError::Encode {
                    path: path.to_path_buf(),
                    source,
                })?;
            buf.into_inner()
        }
    };
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// Writes the manifest into the partial folder and renames it to the final track folder.
fn finish_track(
    p: &mut Pending,
    outcome: &mut VideoOutcome,
    state: &RunState<'_>,
) -> Result<(), ExtractError> {
    p.done = true;
    p.manifest.frame_count = p.manifest.frames.len();
    let manifest_path = p.temp_dir.join(MANIFEST_NAME);
    let text = serde_json::to_vec_pretty(&p.manifest).map_err(|source| ExtractError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    std::fs::write(&manifest_path, text).map_err(io_err(&manifest_path))?;
    if p.final_dir.exists() {
        // Another run finished this track meanwhile: keep its copy.
        std::fs::remove_dir_all(&p.temp_dir).map_err(io_err(&p.temp_dir))?;
        outcome.tracks_skipped += 1;
        return Ok(());
    }
    std::fs::rename(&p.temp_dir, &p.final_dir).map_err(io_err(&p.final_dir))?;
    outcome.tracks_written += 1;
    tracing::debug!(
        "track {} done: {} frames",
        p.final_dir.display(),
        p.manifest.frame_count
    );
    state.track_finished();
    Ok(())
}
