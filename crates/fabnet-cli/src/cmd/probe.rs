//! `fabnet probe`: a linear probe on frozen embeddings, scored as in the paper (reference §5).
//!
//! The splits (`--train`, `--test`) are read by task:
//! - `landmarks5` (MAFL): `--train training.txt --test testing.txt --landmarks
//!   list_landmarks_align_celeba.txt [--images DIR]`; crop: drop the top 35 rows, centre-crop
//!   (w−70)×(h−70); NME normalised by the eye centres.
//! - `landmarks68` (300-W): `--train`/`--test` are folders of `.pts` files with their images beside
//!   them, or dlib XML files; crop: the points' box grown by `--margin` (0.1) per side; NME normalised
//!   by the outer eye corners.
//! - `pose` (AFLW-style CSV `image,x,y,w,h,roll,pitch,yaw`): crop: the CSV box grown by
//!   `--pose-margin` (0) per side; MAE in degrees.
//! - `au` (EmotioNet-style CSV, 999 = unknown): the whole image resized; ROC-AUC per AU.
//!
//! `--train-prefix`/`--test-prefix` keep only samples whose key starts with the prefix, for files
//! that hold both splits (`fabnet synth` writes `train/…` and `test/…` rows into one `pose.csv`).
//!
//! Embeddings come either from `--embeddings EMB` (with its `index.csv`; a sample matches the row
//! whose path equals its key or ends with `/KEY`), computed beforehand with the crop above, or from a
//! model (`--checkpoint`/`--random-init`), in which case the images are cropped as above, resized to the
//! model's input size and embedded first. Writes `report.json` and `report.md` to `--out` and prints
//! the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use fabnet_probe::readers::{
    read_300w_dir, read_au_csv, read_dlib_xml, read_mafl, read_pose_csv, AuTable, PoseSample,
};
use fabnet_probe::task::{au_data, landmark_data, pose_data};
use fabnet_probe::{
    check_images, gather_rows, open_with_index, run_probe, BnLinearConfig, CropBox, EmbeddingIndex,
    LandmarkSample, MaflCrop, Matrix, Normaliser, PixelOrigin, PointsBox, ProbeData, ProbeKind,
    ProbeMetrics, RidgeConfig, RowSource, Task,
};

use super::embed::{embed_files, Job};
use super::weights::{ModelArgs, Prep};

/// Arguments of `fabnet probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The downstream task.
    #[arg(long, value_enum)]
    task: TaskArg,
    /// Training split: MAFL list, 300-W folder or dlib XML, pose CSV or AU CSV (see `--task`).
    #[arg(long)]
    train: PathBuf,
    /// Test split, in the same format as `--train`.
    #[arg(long)]
    test: PathBuf,
    /// landmarks5 only: CelebA's `list_landmarks_align_celeba.txt`.
    #[arg(long)]
    landmarks: Option<PathBuf>,
    /// landmarks5 only: the image folder; default the folder of `--landmarks`.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Keep only training samples whose key starts with this.
    #[arg(long)]
    train_prefix: Option<String>,
    /// Keep only test samples whose key starts with this.
    #[arg(long)]
    test_prefix: Option<String>,
    /// landmarks68: margin added to each side of the points' box, as a fraction of its size.
    #[arg(long, default_value_t = 0.1)]
    margin: f64,
    /// pose: margin added to each side of the CSV box, as a fraction of its size.
    #[arg(long, default_value_t = 0.0)]
    pose_margin: f64,
    /// Precomputed embeddings (`.npy` or `.safetensors`), made with the task's crop.
    #[arg(long, conflicts_with_all = ["checkpoint", "random_init"])]
    embeddings: Option<PathBuf>,
    /// The embeddings' row index; default `index.csv` beside `--embeddings`.
    #[arg(long, requires = "embeddings")]
    index: Option<PathBuf>,
    /// ridge: closed-form ridge, λ by 5-fold CV on the training split; paper: BatchNorm1d → Linear
    /// (no bias), Adam, full batch, early stopping on 10 % of the training split.
    #[arg(long, value_enum, default_value_t = ProbeArg::Ridge)]
    probe: ProbeArg,
    /// Seed of the CV folds or of the probe's init and validation split.
    #[arg(long, default_value_t = 0)]
    probe_seed: u64,
    /// Output folder for report.json and report.md.
    #[arg(long)]
    out: PathBuf,
    /// Images per forward pass when embedding.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// `--task` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TaskArg {
    Landmarks5,
    Landmarks68,
    Pose,
    Au,
}

/// `--probe` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProbeArg {
    Ridge,
    Paper,
}

/// One split's samples, with the crop each image gets.
enum Split {
    Landmarks {
        samples: Vec<LandmarkSample>,
        boxes: Vec<CropBox>,
    },
    Pose(Vec<PoseSample>),
    Au(AuTable),
}

impl Split {
    fn keys_images_preps(&self) -> Vec<(String, PathBuf, Prep)> {
        match self {
            Split::Landmarks { samples, boxes } => samples
                .iter()
                .zip(boxes)
                .map(|(s, b)| (s.key.clone(), s.image.clone(), Prep::Box(*b)))
                .collect(),
            Split::Pose(samples) => samples
                .iter()
                .map(|s| (s.key.clone(), s.image.clone(), Prep::Box(s.bbox)))
                .collect(),
            Split::Au(t) => t
                .samples
                .iter()
                .map(|s| (s.key.clone(), s.image.clone(), Prep::Resize))
                .collect(),
        }
    }

    fn data(self, features: Matrix) -> fabnet_probe::Result<ProbeData> {
        match self {
            Split::Landmarks { samples, boxes } => landmark_data(&samples, &boxes, features),
            Split::Pose(samples) => pose_data(&samples, features),
            Split::Au(t) => au_data(&t, features),
        }
    }
}

fn keep<T>(items: Vec<T>, prefix: Option<&str>, key: impl Fn(&T) -> &str) -> Vec<T> {
    match prefix {
        Some(p) => items
            .into_iter()
            .filter(|s| key(s).starts_with(p))
            .collect(),
        None => items,
    }
}

impl ProbeArgs {
    fn read_split(&self, path: &Path, prefix: Option<&str>) -> anyhow::Result<Split> {
        let split = match self.task {
            TaskArg::Landmarks5 => {
                let landmarks = self.landmarks.as_deref().context(
                    "--task landmarks5 needs --landmarks list_landmarks_align_celeba.txt",
                )?;
                let images = self.images.clone().unwrap_or_else(|| {
                    landmarks
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default()
                });
                let samples = keep(
                    read_mafl(landmarks, path, &images, PixelOrigin::ZeroBased)?,
                    prefix,
                    |s| &s.key,
                );
                check_images(samples.iter().map(|s| s.image.as_path()))?;
                let crop = MaflCrop::default();
                let boxes = samples
                    .iter()
                    .map(|s| {
                        let (w, h) = image::image_dimensions(&s.image)
                            .with_context(|| format!("cannot read {}", s.image.display()))?;
                        Ok(crop.crop_box(w, h)?)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Split::Landmarks { samples, boxes }
            }
            TaskArg::Landmarks68 => {
                let samples = if path.is_dir() {
                    read_300w_dir(path, PixelOrigin::OneBased)?
                } else {
                    read_dlib_xml(path)?
                };
                let samples = keep(samples, prefix, |s| &s.key);
                let points = PointsBox {
                    margin: self.margin,
                    square: false,
                };
                let boxes = samples
                    .iter()
                    .map(|s| points.crop_box(&s.points))
                    .collect::<fabnet_probe::Result<Vec<_>>>()?;
                Split::Landmarks { samples, boxes }
            }
            TaskArg::Pose => {
                let mut samples = keep(read_pose_csv(path)?, prefix, |s| &s.key);
                for s in &mut samples {
                    s.bbox = s.bbox.expand(self.pose_margin);
                }
                Split::Pose(samples)
            }
            TaskArg::Au => {
                let mut t = read_au_csv(path)?;
                t.samples = keep(t.samples, prefix, |s| &s.key);
                Split::Au(t)
            }
        };
        let n = match &split {
            Split::Landmarks { samples, .. } => samples.len(),
            Split::Pose(s) => s.len(),
            Split::Au(t) => t.samples.len(),
        };
        anyhow::ensure!(n > 0, "no samples in {}", path.display());
        Ok(split)
    }

    fn task(&self, split: &Split) -> Task {
        match (self.task, split) {
            (TaskArg::Landmarks5, _) => Task::Landmarks {
                normaliser: Normaliser::EyeCentres,
            },
            (TaskArg::Landmarks68, _) => Task::Landmarks {
                normaliser: Normaliser::OuterEyeCorners,
            },
            (TaskArg::Pose, _) => Task::Pose,
            (TaskArg::Au, Split::Au(t)) => Task::ActionUnits {
                names: t.au_names.clone(),
            },
            (TaskArg::Au, _) => Task::ActionUnits { names: Vec::new() },
        }
    }
}

/// Runs `fabnet probe`.
pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let train = args.read_split(&args.train, args.train_prefix.as_deref())?;
    let test = args.read_split(&args.test, args.test_prefix.as_deref())?;
    let task = args.task(&train);
    let train_items = train.keys_images_preps();
    let test_items = test.keys_images_preps();
    tracing::info!(
        task = task.name(),
        train = train_items.len(),
        test = test_items.len(),
        "probe data read"
    );
    let (train_x, test_x) = if let Some(emb) = &args.embeddings {
        let index = args
            .index
            .clone()
            .unwrap_or_else(|| emb.with_file_name("index.csv"));
        let (src, idx) = open_with_index(emb, &index)?;
        let matcher = KeyMatcher::new(&idx);
        let features = |items: &[(String, PathBuf, Prep)]| -> anyhow::Result<Matrix> {
            let rows = items
                .iter()
                .map(|(k, _, _)| matcher.row(k, &index))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(gather_rows(src.as_ref() as &dyn RowSource, &rows)?)
        };
        (features(&train_items)?, features(&test_items)?)
    } else {
        anyhow::ensure!(
            args.model.given(),
            "give --embeddings EMB, or a model (--checkpoint PATH or --random-init) to embed with"
        );
        let embedder = args.model.load()?;
        let embed = |items: &[(String, PathBuf, Prep)]| -> anyhow::Result<Matrix> {
            check_images(items.iter().map(|(_, p, _)| p.as_path()))?;
            let jobs: Vec<Job> = items
                .iter()
                .map(|(key, path, prep)| Job {
                    key: key.clone(),
                    path: path.clone(),
                    prep: *prep,
                })
                .collect();
            let mut data = Vec::with_capacity(jobs.len() * embedder.dim());
            let failures = embed_files(
                &embedder,
                &jobs,
                args.batch_size as usize,
                !args.no_progress,
                &mut |_, rows| {
                    data.extend(rows.iter().map(|&v| f64::from(v)));
                    Ok(())
                },
            )?;
            anyhow::ensure!(
                failures.is_empty(),
                "cannot embed {} images: {}",
                failures.len(),
                failures.join("; ")
            );
            Ok(Matrix::new(jobs.len(), embedder.dim(), data)?)
        };
        let a = embed(&train_items)?;
        (a, embed(&test_items)?)
    };
    let train = train.data(train_x)?;
    let test = test.data(test_x)?;
    let kind = match args.probe {
        ProbeArg::Ridge => ProbeKind::Ridge(RidgeConfig {
            seed: args.probe_seed,
            ..RidgeConfig::default()
        }),
        ProbeArg::Paper => ProbeKind::BnLinear(BnLinearConfig {
            seed: args.probe_seed,
            ..BnLinearConfig::new(task.loss())
        }),
    };
    let result = run_probe(&task, &kind, &train, &test)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let report = &result.report;
    report.write_json(&args.out.join("report.json"))?;
    report.write_markdown(&args.out.join("report.md"))?;
    print!("{}", report.to_markdown());
    if let ProbeMetrics::Landmarks(_) = &report.metrics {
        if let Task::Landmarks { normaliser } = &task {
            println!("NME in % of the {}", normaliser.name());
        }
    }
    tracing::info!(out = %args.out.display(), "report written");
    Ok(ExitCode::SUCCESS)
}

/// Finds embedding rows by sample key: a row matches when its path equals the key or ends with
/// `/KEY`, so an index made from a parent folder matches keys relative to a subfolder.
struct KeyMatcher {
    /// Every `/`-suffix of every row's key → the row, or `None` when two rows share it.
    by_suffix: HashMap<String, Option<usize>>,
}

impl KeyMatcher {
    fn new(index: &EmbeddingIndex) -> Self {
        let mut by_suffix: HashMap<String, Option<usize>> = HashMap::new();
        for row in 0..index.len() {
            let Some(key) = index.key(row) else { continue };
            let key = key.replace('\\', "/");
            let mut suffixes = vec![key.as_str()];
            suffixes.extend(key.match_indices('/').map(|(i, _)| &key[i + 1..]));
            for s in suffixes {
                by_suffix
                    .entry(s.to_string())
                    .and_modify(|r| {
                        if *r != Some(row) {
                            *r = None;
                        }
                    })
                    .or_insert(Some(row));
            }
        }
        KeyMatcher { by_suffix }
    }

    fn row(&self, key: &str, index: &Path) -> anyhow::Result<usize> {
        let key = key.replace('\\', "/");
        match self.by_suffix.get(key.trim_start_matches("./")) {
            Some(Some(r)) => Ok(*r),
            Some(None) => anyhow::bail!(
                "{key:?} matches several rows of {}; embed each split separately",
                index.display()
            ),
            None => anyhow::bail!("{key:?} is not in {}", index.display()),
        }
    }
}
