//! `fabnet retrieve`: exact nearest neighbours in an embeddings file (memory-mapped, scanned in
//! chunks), printed as `rank row score key` lines and optionally drawn as a PNG grid
//! (query | neighbours).
//!
//! The query is a row number of the index, or an image file, which is embedded first with a model
//! (`--checkpoint`/`--random-init`, `--preset`) and `--crop` as in `fabnet embed`. The grid reads the
//! images named in `index.csv` (relative paths resolve against `--root`, default the current folder);
//! rows of a `video,frame` index are decoded from their videos.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use fabnet_probe::fsutil::write_atomic;
use fabnet_probe::{
    draw_grid, knn, open_with_index, query_rows, EmbeddingIndex, GridStyle, Metric, SearchOptions,
};
use fabnet_video::VideoDecoder;
use image::RgbImage;

use super::embed::CropArg;
use super::weights::{load_image, prepare, ModelArgs};

/// Arguments of `fabnet retrieve`.
#[derive(Debug, clap::Args)]
pub struct RetrieveArgs {
    /// The embeddings to search (`.npy` or `.safetensors`).
    #[arg(long)]
    index: PathBuf,
    /// Their row index; default `index.csv` beside `--index`.
    #[arg(long)]
    rows: Option<PathBuf>,
    /// A row number of the index (0-based), or an image file to embed with the model flags.
    #[arg(long)]
    query: String,
    /// Neighbours to return.
    #[arg(short, long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    k: u64,
    /// Similarity: cosine (higher is nearer) or l2 (Euclidean distance, lower is nearer).
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    metric: MetricArg,
    /// Write a PNG grid: the query, a bar, then the neighbours, nearest first.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Side of each grid cell, pixels.
    #[arg(long, default_value_t = 128)]
    cell: u32,
    /// Folder that relative paths in the index are resolved against.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Crop of an image query (as in `fabnet embed`).
    #[arg(long, value_enum, default_value_t = CropArg::Centre)]
    crop: CropArg,
    #[command(flatten)]
    model: ModelArgs,
}

/// `--metric` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MetricArg {
    Cosine,
    L2,
}

/// What the query was.
enum Query {
    Row(usize),
    Image(PathBuf),
}

/// Runs `fabnet retrieve`.
pub fn run(args: RetrieveArgs) -> anyhow::Result<ExitCode> {
    let rows_path = args
        .rows
        .clone()
        .unwrap_or_else(|| args.index.with_file_name("index.csv"));
    let (src, idx) = open_with_index(&args.index, &rows_path)?;
    let query = match args.query.parse::<usize>() {
        Ok(r) if !Path::new(&args.query).is_file() => Query::Row(r),
        _ => Query::Image(PathBuf::from(&args.query)),
    };
    let q = match &query {
        Query::Row(r) => query_rows(src.as_ref(), &[*r])?,
        Query::Image(path) => {
            anyhow::ensure!(
                args.model.given(),
                "an image query needs a model: --checkpoint PATH or --random-init (with --preset)"
            );
            let embedder = args.model.load()?;
            anyhow::ensure!(
                embedder.dim() == src.dim(),
                "the model embeds into {} dimensions but {} has {}",
                embedder.dim(),
                args.index.display(),
                src.dim()
            );
            let image = load_image(path)?;
            let pixels = prepare(&image, args.crop.prep(), embedder.image_size())?;
            embedder.embed(pixels, 1)?
        }
    };
    let opts = SearchOptions {
        metric: match args.metric {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::L2 => Metric::L2,
        },
        k: args.k as usize,
        ..SearchOptions::default()
    };
    let found = knn(src.as_ref(), &q, &opts)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let score_name = match opts.metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "l2",
    };
    println!("rank\trow\t{score_name}\tkey");
    for (rank, n) in found.iter().enumerate() {
        println!(
            "{}\t{}\t{:.6}\t{}",
            rank + 1,
            n.row,
            n.score,
            idx.key(n.row).unwrap_or_default()
        );
    }
    if let Some(grid) = &args.grid {
        let root = args.root.as_deref();
        let mut wanted: Vec<usize> = found.iter().map(|n| n.row).collect();
        if let Query::Row(r) = query {
            wanted.push(r);
        }
        let images = load_rows(&idx, &wanted, root)?;
        let query_image = match &query {
            Query::Row(r) => images[r].clone(),
            Query::Image(p) => load_image(p)?,
        };
        let neighbours: Vec<RgbImage> = found.iter().map(|n| images[&n.row].clone()).collect();
        let style = GridStyle {
            cell: args.cell,
            ..GridStyle::default()
        };
        let picture = draw_grid(&query_image, &neighbours, &style)?;
        let mut bytes = Vec::new();
        picture
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .with_context(|| format!("cannot encode {}", grid.display()))?;
        write_atomic(grid, |w| w.write_all(&bytes))?;
        tracing::info!(grid = %grid.display(), "grid written");
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve(path: &str, root: Option<&Path>) -> PathBuf {
    match root {
        Some(r) if Path::new(path).is_relative() => r.join(path),
        _ => PathBuf::from(path),
    }
}

/// The pictures of `rows`: image files, or frames decoded from their videos.
fn load_rows(
    idx: &EmbeddingIndex,
    rows: &[usize],
    root: Option<&Path>,
) -> anyhow::Result<HashMap<usize, RgbImage>> {
    let mut out = HashMap::new();
    match idx {
        EmbeddingIndex::Paths(paths) => {
            for &r in rows {
                out.insert(r, load_image(&resolve(&paths[r], root))?);
            }
        }
        EmbeddingIndex::Frames(frames) => {
            let mut by_video: BTreeMap<&str, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
            for &r in rows {
                let (v, f) = &frames[r];
                by_video
                    .entry(v.as_str())
                    .or_default()
                    .entry(*f)
                    .or_default()
                    .push(r);
            }
            for (video, wanted) in by_video {
                let path = resolve(video, root);
                let mut remaining = wanted.len();
                let mut decoder = VideoDecoder::open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                while let Some(frame) = decoder.next_selected(&mut |i| wanted.contains_key(&i))? {
                    let image = RgbImage::from_raw(frame.width, frame.height, frame.data)
                        .with_context(|| format!("{} frame {}", path.display(), frame.index))?;
                    for &r in &wanted[&frame.index] {
                        out.insert(r, image.clone());
                    }
                    remaining -= 1;
                    if remaining == 0 {
                        break;
                    }
                }
                for (f, rs) in &wanted {
                    anyhow::ensure!(
                        rs.iter().all(|r| out.contains_key(r)),
                        "{} has no frame {f}",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(out)
}
