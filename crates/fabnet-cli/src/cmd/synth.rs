//! `fabnet synth`: render a synthetic talking-head corpus with exact ground truth.
//!
//! `fabnet synth --identities N --clips-per-identity M --frames F --size S --seed X --out DIR`,
//! or `--config synth.toml` (any [`fabnet_synth::SynthConfig`] field; flags override it).
//! Output layout (videos, VoxCeleb2 track files, per-frame truth, probe sets): see
//! [`fabnet_synth::corpus`]. The same seed and settings give byte-identical output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fabnet_synth::{render_corpus, SynthConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Arguments of `fabnet synth`.
#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// TOML config with any SynthConfig fields; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Identities with videos (the self-supervised training set).
    #[arg(long)]
    identities: Option<usize>,
    /// Videos per identity.
    #[arg(long)]
    clips_per_identity: Option<usize>,
    /// Frames per video.
    #[arg(long)]
    frames: Option<usize>,
    /// Frame side in pixels.
    #[arg(long)]
    size: Option<u32>,
    /// Master seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Frames per second of the videos.
    #[arg(long)]
    fps: Option<u32>,
    /// Identities for the probe training split.
    #[arg(long)]
    probe_train_identities: Option<usize>,
    /// Identities for the probe test split.
    #[arg(long)]
    probe_test_identities: Option<usize>,
    /// Probe images per probe identity.
    #[arg(long)]
    probe_images: Option<usize>,
    /// Worker threads; 0 = all cores.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Renders the corpus.
pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.config {
        Some(path) => SynthConfig::load(path)?,
        None => SynthConfig::default(),
    };
    let set = |dst: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut cfg.identities, args.identities);
    set(&mut cfg.clips_per_identity, args.clips_per_identity);
    set(&mut cfg.frames_per_clip, args.frames);
    set(&mut cfg.probe_train_identities, args.probe_train_identities);
    set(&mut cfg.probe_test_identities, args.probe_test_identities);
    set(&mut cfg.probe_images_per_identity, args.probe_images);
    if let Some(v) = args.size {
        cfg.size = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.fps {
        cfg.fps = v;
    }
    cfg.validate()?;
    let bar = ProgressBar::new(cfg.total_frames());
    if args.no_progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    tracing::info!(
        identities = cfg.identities,
        clips = cfg.clips_per_identity,
        frames = cfg.frames_per_clip,
        size = cfg.size,
        seed = cfg.seed,
        out = %args.out.display(),
        "rendering synthetic corpus"
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs)
        .build()
        .context("cannot start the worker threads")?;
    let summary = pool.install(|| render_corpus(&cfg, &args.out, &|p| bar.set_position(p.done)))?;
    bar.finish_and_clear();
    tracing::info!(
        "{} videos ({} frames), {} probe images in {:.1} s ({:.1} images/s) under {}",
        summary.videos,
        summary.video_frames,
        summary.probe_images,
        summary.seconds,
        summary.images_per_second,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
