//! `fabnet extract`: video → face-track frames.
//!
//! Tracked mode: `fabnet extract --tracks TRACKS --videos VIDEOS --out OUT`, with track files at
//! `TRACKS/IDENTITY/VIDEO/NNNNN.txt` (VoxCeleb's layout) and source videos at
//! `VIDEOS/IDENTITY/VIDEO.mp4` or `VIDEOS/VIDEO.mp4` (any FFmpeg-readable extension).
//! Face-video mode: `fabnet extract --face-videos DIR --out OUT` over `DIR/IDENTITY/VIDEO/NNNNN.mp4`.
//! Output: `OUT/IDENTITY/VIDEO/TRACK/frameNNNNNN.jpg` plus `manifest.json`; finished tracks are
//! skipped on rerun. The exit status is 1 if any video or track file failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use fabnet_video::{
    extract, plan_face_videos, plan_tracked, BoxUnit, DecodeOptions, ExtractConfig, Filter,
    ImageFormat, RunOptions, Sampling, UnitChoice,
};

/// Arguments of `fabnet extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Root of the track files, laid out as IDENTITY/VIDEO/NNNNN.txt.
    #[arg(long, requires = "videos", conflicts_with = "face_videos")]
    tracks: Option<PathBuf>,
    /// Root of the source videos: IDENTITY/VIDEO.EXT or VIDEO.EXT.
    #[arg(long, requires = "tracks")]
    videos: Option<PathBuf>,
    /// Root of already-cropped face videos, laid out as IDENTITY/VIDEO/NNNNN.mp4.
    #[arg(long, required_unless_present = "tracks")]
    face_videos: Option<PathBuf>,
    /// Output root.
    #[arg(long)]
    out: PathBuf,
    /// Side of the square output frames in pixels.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=8192))]
    size: u32,
    /// Crop side as a multiple of the track box's longer side.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Resampling filter.
    #[arg(long, value_enum, default_value_t = FilterArg::Triangle)]
    filter: FilterArg,
    /// Unit of the track boxes; auto detects it per file.
    #[arg(long, value_enum, default_value_t = UnitArg::Auto)]
    unit: UnitArg,
    /// Subtracted from track-file frame numbers (when they index a longer original video).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    frame_offset: i64,
    /// Keep about this many frames per second of video (VoxCeleb1 used 1).
    #[arg(long, conflicts_with = "every")]
    fps: Option<f64>,
    /// Keep every k-th frame.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    every: Option<u64>,
    /// Output image format.
    #[arg(long, value_enum, default_value_t = FormatArg::Jpg)]
    format: FormatArg,
    /// JPEG quantiser scale as ffmpeg's -q:v: 2 (best) to 31 (worst).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=31))]
    qscale: u8,
    /// Worker threads (videos in parallel, frames encoded in parallel); 0 = all cores.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Decoder threads per video; 0 lets FFmpeg choose.
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Stop (as an interruption would) after writing this many tracks; rerun to continue.
    #[arg(long)]
    stop_after_tracks: Option<usize>,
    /// Hide the progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// `--filter` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FilterArg {
    Triangle,
    CatmullRom,
    Lanczos3,
}

/// `--unit` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum UnitArg {
    Auto,
    Pixels,
    Fractions,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Jpg,
    Png,
}

/// Runs the extraction; exit status 1 if anything failed.
pub fn run(args: ExtractArgs) -> anyhow::Result<ExitCode> {
    if let Some(fps) = args.fps {
        anyhow::ensure!(
            fps > 0.0 && fps.is_finite(),
            "--fps must be positive, got {fps}"
        );
    }
    anyhow::ensure!(
        args.scale > 0.0 && args.scale.is_finite(),
        "--scale must be positive, got {}",
        args.scale
    );
    let plan = match (&args.tracks, &args.videos, &args.face_videos) {
        (Some(tracks), Some(videos), None) => plan_tracked(videos, tracks)?,
        (None, None, Some(dir)) => plan_face_videos(dir)?,
        _ => anyhow::bail!("give either --tracks and --videos, or --face-videos"),
    };
    let mut config = ExtractConfig::new(&args.out);
    config.size = args.size;
    config.scale = args.scale;
    config.filter = match args.filter {
        FilterArg::Triangle => Filter::Triangle,
        FilterArg::CatmullRom => Filter::CatmullRom,
        FilterArg::Lanczos3 => Filter::Lanczos3,
    };
    config.unit = match args.unit {
        UnitArg::Auto => UnitChoice::Auto,
        UnitArg::Pixels => UnitChoice::Force(BoxUnit::Pixels),
        UnitArg::Fractions => UnitChoice::Force(BoxUnit::Fractions),
    };
    config.frame_offset = args.frame_offset;
    config.sampling = match (args.fps, args.every) {
        (Some(fps), _) => Sampling::Fps(fps),
        (None, Some(k)) => Sampling::Every(k),
        (None, None) => Sampling::All,
    };
    config.format = match args.format {
        FormatArg::Jpg => ImageFormat::Jpeg {
            qscale: args.qscale,
        },
        FormatArg::Png => ImageFormat::Png,
    };
    config.decode = DecodeOptions {
        threads: args.decode_threads,
    };
    for problem in &plan.problems {
        tracing::error!("{problem}");
    }
    let tracks: usize = plan.jobs.iter().map(|j| j.tracks.len()).sum();
    tracing::info!(
        videos = plan.jobs.len(),
        tracks,
        out = %args.out.display(),
        "extracting"
    );
    let options = RunOptions {
        progress: !args.no_progress,
        stop_after_tracks: args.stop_after_tracks,
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs)
        .build()
        .context("cannot start the worker threads")?;
    let summary = pool.install(|| extract::run(&plan.jobs, &config, &options));
    let t = &summary.totals;
    tracing::info!(
        "{} videos ok, {} failed; tracks: {} written, {} already done, {} empty; {} frames written, {} track frames outside their video",
        summary.videos_ok,
        summary.failures.len(),
        t.tracks_written,
        t.tracks_skipped,
        t.tracks_empty,
        t.frames_written,
        t.frames_missing
    );
    if summary.failures.is_empty() && plan.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "extraction failures ({}):",
        summary.failures.len() + plan.problems.len()
    );
    for problem in &plan.problems {
        eprintln!("  {problem}");
    }
    for failure in &summary.failures {
        eprintln!("  {}", failure.error);
    }
    Ok(ExitCode::FAILURE)
}
