//! `fabnet embed`: per-image or per-frame FAb-Net embeddings.
//!
//! `fabnet embed INPUT --out FILE.npy|FILE.safetensors (--checkpoint PATH | --random-init) [--preset P]`
//! where INPUT is a video file (every frame, `--every k` or `--fps r`), a folder of images (searched
//! recursively, sorted by path) or an `IDENTITY/VIDEO/TRACK/frame*` tree (frames in index order).
//! Output: a float32 `(N, D)` matrix (`.npy`, or `.safetensors` with the tensor `embeddings`) and an
//! `index.csv` beside it naming the rows in order: header `path` (paths as reached from INPUT), or
//! `video,frame` (0-based decoded frame numbers) for a video. Both are written atomically.
//! Images are decoded and cropped on worker threads while the model embeds the previous batch.
//! An unreadable image is reported by path and skipped; the others are embedded, the failures are
//! listed at the end and the exit status is 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;

use anyhow::Context;
use clap::ValueEnum;
use fabnet_data::DatasetIndex;
use fabnet_probe::embeddings::write_safetensors;
use fabnet_probe::{EmbeddingIndex, NpyWriter};
use fabnet_video::{Sampling, VideoDecoder};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::weights::{load_image, prepare, Embedder, ModelArgs, Prep};

/// Arguments of `fabnet embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// A video file, a folder of images, or an IDENTITY/VIDEO/TRACK frame tree.
    input: PathBuf,
    /// What INPUT is; auto: a file with an image extension is one image, any other file a video, a
    /// folder whose images all sit three levels down a frame tree, any other folder an image folder.
    #[arg(long, value_enum, default_value_t = InputKind::Auto)]
    kind: InputKind,
    /// Output matrix: `.npy` (float32 N×D) or `.safetensors` (tensor `embeddings`).
    #[arg(long)]
    out: PathBuf,
    /// Row index to write; default `index.csv` beside `--out`.
    #[arg(long)]
    index: Option<PathBuf>,
    /// centre: the FAb-Net no-jitter crop used in training (for face-track frames); none: resize the
    /// whole image to the model's input size (for already-tight face crops).
    #[arg(long, value_enum, default_value_t = CropArg::Centre)]
    crop: CropArg,
    /// Video only: keep about this many frames per second.
    #[arg(long, conflicts_with = "every")]
    fps: Option<f64>,
    /// Video only: keep every k-th frame, starting with frame 0.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    every: Option<u64>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputKind {
    Auto,
    Video,
    Images,
    Tree,
}

/// `--crop` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CropArg {
    /// The FAb-Net no-jitter crop.
    Centre,
    /// A plain resize.
    None,
}

impl CropArg {
    /// The preparation this crop stands for.
    pub fn prep(self) -> Prep {
        match self {
            CropArg::Centre => Prep::Centre,
            CropArg::None => Prep::Resize,
        }
    }
}

/// Image file extensions picked up from folders (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `path` has an image extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Runs `fabnet embed`; exit status 1 if any image or frame failed.
pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    if let Some(fps) = args.fps {
        anyhow::ensure!(
            fps > 0.0 && fps.is_finite(),
            "--fps must be positive, got {fps}"
        );
    }
    let embedder = args.model.load()?;
    let kind = match args.kind {
        InputKind::Auto => detect(&args.input)?,
        k => k,
    };
    if kind != InputKind::Video {
        anyhow::ensure!(
            args.fps.is_none() && args.every.is_none(),
            "--fps and --every apply to video input only"
        );
    }
    let batch = args.batch_size as usize;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the output folder {}", parent.display()))?;
    }
    let mut sink = Sink::create(&args.out, embedder.dim())?;
    let (index, failures) = if kind == InputKind::Video {
        let sampling = match (args.fps, args.every) {
            (Some(r), _) => Sampling::Fps(r),
            (None, Some(k)) => Sampling::Every(k),
            (None, None) => Sampling::All,
        };
        let video = args.input.to_string_lossy().into_owned();
        let mut frames = Vec::new();
        let failures = embed_video(
            &embedder,
            &args.input,
            sampling,
            args.crop.prep(),
            batch,
            !args.no_progress,
            &mut |idx, rows| {
                frames.extend(idx.iter().map(|&i| (video.clone(), i)));
                sink.push(rows)
            },
        )?;
        (EmbeddingIndex::Frames(frames), failures)
    } else {
        let files = if kind == InputKind::Tree {
            tree_frames(&args.input)?
        } else if args.input.is_file() {
            vec![args.input.clone()]
        } else {
            image_files(&args.input)?
        };
        anyhow::ensure!(
            !files.is_empty(),
            "no images found in {}",
            args.input.display()
        );
        let jobs: Vec<Job> = files
            .into_iter()
            .map(|path| Job {
                key: path.to_string_lossy().into_owned(),
                path,
                prep: args.crop.prep(),
            })
            .collect();
        let mut paths = Vec::new();
        let failures = embed_files(
            &embedder,
            &jobs,
            batch,
            !args.no_progress,
            &mut |idx, rows| {
                paths.extend(idx.iter().map(|&i| jobs[i].key.clone()));
                sink.push(rows)
            },
        )?;
        (EmbeddingIndex::Paths(paths), failures)
    };
    anyhow::ensure!(!index.is_empty(), "nothing was embedded");
    let rows = sink.finish(&args.out)?;
    let index_path = args
        .index
        .unwrap_or_else(|| args.out.with_file_name("index.csv"));
    index.write(&index_path)?;
    tracing::info!(
        rows,
        dim = embedder.dim(),
        out = %args.out.display(),
        index = %index_path.display(),
        "embeddings written"
    );
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("skipped ({}):", failures.len());
    for f in &failures {
        eprintln!("  {f}");
    }
    Ok(ExitCode::FAILURE)
}

fn detect(input: &Path) -> anyhow::Result<InputKind> {
    if input.is_file() {
        return Ok(if is_image(input) {
            InputKind::Images
        } else {
            InputKind::Video
        });
    }
    anyhow::ensure!(input.is_dir(), "{} does not exist", input.display());
    let files = image_files(input)?;
    let tree = !files.is_empty()
        && files.iter().all(|f| {
            f.strip_prefix(input)
                .is_ok_and(|r| r.components().count() == 4)
        });
    Ok(if tree {
        InputKind::Tree
    } else {
        InputKind::Images
    })
}

/// Image files under `dir`, recursively, sorted by path; hidden entries are skipped.
pub fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn tree_frames(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (index, _) = DatasetIndex::open(root)?;
    Ok(index
        .track_ids()
        .flat_map(|id| (0..index.track(id).frames.len()).map(move |f| (id, f)))
        .map(|(id, f)| index.frame_path(id, f))
        .collect())
}

/// Where embedding rows go: streamed into a `.npy`, or gathered for `.safetensors`.
enum Sink {
    Npy(NpyWriter),
    Safetensors { rows: Vec<f32>, dim: usize },
}

impl Sink {
    fn create(out: &Path, dim: usize) -> anyhow::Result<Sink> {
        match out.extension().and_then(|e| e.to_str()) {
            Some("npy") => Ok(Sink::Npy(NpyWriter::create(out, dim)?)),
            Some("safetensors") => Ok(Sink::Safetensors {
                rows: Vec::new(),
                dim,
            }),
            _ => anyhow::bail!("--out {} must end in .npy or .safetensors", out.display()),
        }
    }

    fn push(&mut self, rows: &[f32]) -> anyhow::Result<()> {
        match self {
            Sink::Npy(w) => w.write_rows(rows)?,
            Sink::Safetensors { rows: all, .. } => all.extend_from_slice(rows),
        }
        Ok(())
    }

    fn finish(self, out: &Path) -> anyhow::Result<usize> {
        Ok(match self {
            Sink::Npy(w) => w.finish()?,
            Sink::Safetensors { rows, dim } => {
                let n = rows.len() / dim;
                write_safetensors(out, &rows, n, dim)?;
                n
            }
        })
    }
}

/// Receives each batch's row ids (job indices or frame numbers) and their `(n, D)` embeddings.
pub type RowSink<'a, Id> = dyn FnMut(&[Id], &[f32]) -> anyhow::Result<()> + 'a;

/// One image to embed.
#[derive(Debug, Clone)]
pub struct Job {
    /// The row's name in `index.csv`.
    pub key: String,
    /// The image file.
    pub path: PathBuf,
    /// How to cut it.
    pub prep: Prep,
}

fn progress_bar(len: u64, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A decoded, prepared batch: job (or frame) numbers, their `(n, 3, S, S)` pixels, and the failures.
struct Prepared {
    ids: Vec<u64>,
    pixels: Vec<f32>,
    failures: Vec<String>,
}

/// Embeds `jobs` in batches: decoding and cropping run on the rayon pool one batch ahead of the
/// model. `sink` gets the indices (into `jobs`) of each batch's readable images and their `(n, D)`
/// rows, in job order; the unreadable ones come back as messages naming their paths.
pub fn embed_files(
    embedder: &Embedder,
    jobs: &[Job],
    batch: usize,
    progress: bool,
    sink: &mut RowSink<usize>,
) -> anyhow::Result<Vec<String>> {
    let size = embedder.image_size();
    let bar = progress_bar(jobs.len() as u64, progress, "images");
    let (tx, rx) = sync_channel::<Prepared>(1);
    let mut failures = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        scope.spawn(move || {
            for (c, chunk) in jobs.chunks(batch.max(1)).enumerate() {
                let results: Vec<anyhow::Result<Vec<f32>>> = chunk
                    .par_iter()
                    .map(|job| {
                        let image = load_image(&job.path)?;
                        prepare(&image, job.prep, size)
                            .with_context(|| format!("{}", job.path.display()))
                    })
                    .collect();
                let mut p = Prepared {
                    ids: Vec::new(),
                    pixels: Vec::new(),
                    failures: Vec::new(),
                };
                for (i, r) in results.into_iter().enumerate() {
                    match r {
                        Ok(px) => {
                            p.ids.push((c * batch + i) as u64);
                            p.pixels.extend(px);
                        }
                        Err(e) => p.failures.push(format!("{e:#}")),
                    }
                }
                if tx.send(p).is_err() {
                    return;
                }
            }
        });
        for p in rx {
            for f in &p.failures {
                tracing::error!("{f}");
            }
            bar.inc((p.ids.len() + p.failures.len()) as u64);
            failures.extend(p.failures);
            if !p.ids.is_empty() {
                let rows = embedder.embed(p.pixels, p.ids.len())?;
                let ids: Vec<usize> = p.ids.iter().map(|&i| i as usize).collect();
                sink(&ids, &rows)?;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(failures)
}

/// Embeds the selected frames of one video; `sink` gets their 0-based frame numbers and rows. A
/// decoding error part-way ends the video: it is returned as a failure message (with any frames
/// that could not be cropped) after the frames before it are embedded.
pub fn embed_video(
    embedder: &Embedder,
    video: &Path,
    sampling: Sampling,
    prep: Prep,
    batch: usize,
    progress: bool,
    sink: &mut RowSink<u64>,
) -> anyhow::Result<Vec<String>> {
    let mut decoder =
        VideoDecoder::open(video).with_context(|| format!("cannot open {}", video.display()))?;
    let info = decoder.info().clone();
    if matches!(sampling, Sampling::Fps(_)) {
        anyhow::ensure!(
            info.fps > 0.0,
            "{} does not declare a frame rate, so --fps cannot be used",
            video.display()
        );
    }
    let size = embedder.image_size();
    let bar = progress_bar(info.declared_frames.unwrap_or(0), progress, "frames");
    let (tx, rx) = sync_channel::<Prepared>(1);
    let mut failures = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let producer = scope.spawn(move || -> Option<String> {
            loop {
                let mut frames: Vec<(u64, RgbImage)> = Vec::with_capacity(batch);
                let mut error = None;
                while frames.len() < batch {
                    match decoder.next_selected(&mut |i| sampling.keeps_frame(i, info.fps)) {
                        Ok(Some(f)) => match RgbImage::from_raw(f.width, f.height, f.data) {
                            Some(img) => frames.push((f.index, img)),
                            None => {
                                error = Some(format!(
                                    "{}: frame {} has a wrong buffer size",
                                    video.display(),
                                    f.index
                                ));
                                break;
                            }
                        },
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("{e}"));
                            break;
                        }
                    }
                }
                let done = frames.len() < batch;
                let results: Vec<anyhow::Result<Vec<f32>>> = frames
                    .par_iter()
                    .map(|(_, img)| prepare(img, prep, size))
                    .collect();
                let mut p = Prepared {
                    ids: Vec::new(),
                    pixels: Vec::new(),
                    failures: Vec::new(),
                };
                for ((i, _), r) in frames.iter().zip(results) {
                    match r {
                        Ok(px) => {
                            p.ids.push(*i);
                            p.pixels.extend(px);
                        }
                        Err(e) => p
                            .failures
                            .push(format!("{} frame {i}: {e:#}", video.display())),
                    }
                }
                if tx.send(p).is_err() || done || error.is_some() {
                    return error;
                }
            }
        });
        let mut consumed: anyhow::Result<()> = Ok(());
        for p in rx {
            if consumed.is_err() {
                continue;
            }
            for f in &p.failures {
                tracing::error!("{f}");
            }
            failures.extend(p.failures);
            if let Some(&last) = p.ids.last() {
                let n = p.ids.len();
                consumed = embedder
                    .embed(p.pixels, n)
                    .and_then(|rows| sink(&p.ids, &rows));
                bar.set_position(last + 1);
            }
        }
        consumed?;
        if let Ok(Some(e)) = producer.join() {
            tracing::error!("{e}");
            failures.push(e);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(failures)
}
