//! The demo's probe stage: every method's features of the probe images, cut with one view (the
//! face box grown as `fabnet extract` grows track boxes, then the no-jitter crop: what the encoder
//! was trained on), then ridge probes for 5-point and 68-point landmarks, pose and action units, and
//! a retrieval grid of the best FAb-Net embedding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fabnet_probe::readers::{
    read_300w_dir, read_au_csv, read_mafl, read_pose_csv, AuTable, PoseSample,
};
use fabnet_probe::task::{au_data, landmark_data, pose_data};
use fabnet_probe::{
    draw_grid, knn, run_probe, CropBox, Embeddings, LandmarkSample, Matrix, Metric, Normaliser,
    Pca, PixelOrigin, ProbeKind, ProbeMetrics, ProbeReport, RidgeConfig, SearchOptions, Task,
};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::plan::{DemoPlan, Method};
use crate::cmd::embed::{embed_files, Job};
use crate::cmd::weights::{load_image, prepare, Embedder, Prep};

/// One method's scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    /// Short name.
    pub name: String,
    /// Row label.
    pub label: String,
    /// Whether this is a FAb-Net row.
    pub fabnet: bool,
    /// Feature size.
    pub dim: usize,
    /// MAFL-style 5-point NME, % of the eye-centre distance.
    pub landmarks5_nme: f64,
    /// 300-W-style 68-point NME, % of the outer-eye-corner distance.
    pub landmarks68_nme: f64,
    /// Pose MAE, degrees: roll, pitch, yaw, mean.
    pub pose_mae: [f64; 4],
    /// Mean ROC-AUC over the action units.
    pub au_auc: f64,
    /// The full probe reports (λ, CV curves, per-AU AUCs).
    pub reports: Vec<ProbeReport>,
}

/// All methods' scores, in table order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResults {
    /// One entry per method.
    pub methods: Vec<MethodResult>,
    /// Probe images (train, test).
    pub images: (usize, usize),
    /// The retrieval grid's file name, if one was drawn.
    pub retrieval: Option<String>,
}

const RESULTS: &str = "probes/results.json";

/// Reads the results a finished probe stage saved.
pub fn load_results(out: &Path) -> anyhow::Result<ProbeResults> {
    let path = out.join(RESULTS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// The probe sets of a synthetic corpus, each sample with its view box.
struct ProbeSets {
    /// Every probe image once, training images first.
    images: Vec<PathBuf>,
    /// How many of `images` are training images.
    n_train: usize,
    /// Row of each image in `images`.
    row_of: HashMap<PathBuf, usize>,
    boxes: HashMap<PathBuf, CropBox>,
    mafl: (Vec<LandmarkSample>, Vec<LandmarkSample>),
    w300: (Vec<LandmarkSample>, Vec<LandmarkSample>),
    pose: (Vec<PoseSample>, Vec<PoseSample>),
    au: (AuTable, AuTable),
}

fn split_by<T: Clone>(items: &[T], key: impl Fn(&T) -> &str) -> (Vec<T>, Vec<T>) {
    let train = items
        .iter()
        .filter(|s| key(s).starts_with("train/"))
        .cloned()
        .collect();
    let test = items
        .iter()
        .filter(|s| key(s).starts_with("test/"))
        .cloned()
        .collect();
    (train, test)
}

impl ProbeSets {
    fn read(probes: &Path, crop_scale: f64) -> anyhow::Result<Self> {
        let pose_all = read_pose_csv(&probes.join("pose.csv"))?;
        // The view: the face box grown to the extraction crop (a square `crop_scale` times the box).
        let grow = (crop_scale - 1.0) / 2.0;
        let boxes: HashMap<PathBuf, CropBox> = pose_all
            .iter()
            .map(|s| (s.image.clone(), s.bbox.expand(grow)))
            .collect();
        let pose = split_by(&pose_all, |s: &PoseSample| &s.key);
        let landmarks = probes.join("list_landmarks_align_celeba.txt");
        let mafl = (
            read_mafl(
                &landmarks,
                &probes.join("training.txt"),
                probes,
                PixelOrigin::ZeroBased,
            )?,
            read_mafl(
                &landmarks,
                &probes.join("testing.txt"),
                probes,
                PixelOrigin::ZeroBased,
            )?,
        );
        let w300 = (
            read_300w_dir(&probes.join("train"), PixelOrigin::OneBased)?,
            read_300w_dir(&probes.join("test"), PixelOrigin::OneBased)?,
        );
        let au_all = read_au_csv(&probes.join("au.csv"))?;
        let (au_train, au_test) = split_by(&au_all.samples, |s| &s.key);
        let au = (
            AuTable {
                au_names: au_all.au_names.clone(),
                samples: au_train,
            },
            AuTable {
                au_names: au_all.au_names,
                samples: au_test,
            },
        );
        let mut images: Vec<PathBuf> = pose.0.iter().map(|s| s.image.clone()).collect();
        let n_train = images.len();
        images.extend(pose.1.iter().map(|s| s.image.clone()));
        let row_of = images
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i))
            .collect();
        let sets = Self {
            images,
            n_train,
            row_of,
            boxes,
            mafl,
            w300,
            pose,
            au,
        };
        // Every probe image must have a face box, and the splits must not be empty.
        let all_paths = sets
            .mafl
            .0
            .iter()
            .chain(&sets.mafl.1)
            .chain(&sets.w300.0)
            .chain(&sets.w300.1)
            .map(|s| &s.image)
            .chain(
                sets.au
                    .0
                    .samples
                    .iter()
                    .chain(&sets.au.1.samples)
                    .map(|s| &s.image),
            );
        for p in all_paths {
            anyhow::ensure!(
                sets.boxes.contains_key(p),
                "{} has no face box in {}",
                p.display(),
                probes.join("pose.csv").display()
            );
        }
        anyhow::ensure!(
            !sets.mafl.0.is_empty() && !sets.mafl.1.is_empty() && !sets.w300.1.is_empty(),
            "empty probe splits under {}",
            probes.display()
        );
        Ok(sets)
    }

    fn view(&self, image: &Path) -> CropBox {
        self.boxes[image]
    }

    /// Rows of `features` (one per `images` entry) for `paths`.
    fn rows(&self, features: &Matrix, paths: &[&PathBuf]) -> Matrix {
        let rows: Vec<usize> = paths.iter().map(|p| self.row_of[*p]).collect();
        features.select_rows(&rows)
    }
}

/// Features of every probe image for `method`: `(N, D)`.
fn features(
    plan: &DemoPlan,
    out: &Path,
    sets: &ProbeSets,
    method: &Method,
    progress: bool,
) -> anyhow::Result<Matrix> {
    let config = fabnet_train::model_config(&plan.preset)?;
    let embedder = match method {
        Method::Pixels => return pixel_features(plan, sets),
        Method::RandomInit => Embedder::random_init(&config, plan.seed, &candle_core::Device::Cpu)?,
        Method::Trained(run) => Embedder::from_checkpoint(
            &config,
            &plan.final_checkpoint(out, run),
            &candle_core::Device::Cpu,
        )?,
    };
    let jobs: Vec<Job> = sets
        .images
        .iter()
        .map(|p| Job {
            key: p.display().to_string(),
            path: p.clone(),
            prep: Prep::FaceFrame(sets.view(p)),
        })
        .collect();
    let mut data = vec![0.0f64; jobs.len() * embedder.dim()];
    let dim = embedder.dim();
    let failures = embed_files(&embedder, &jobs, 64, progress, &mut |ids, rows| {
        for (k, &i) in ids.iter().enumerate() {
            for (dst, &v) in data[i * dim..(i + 1) * dim]
                .iter_mut()
                .zip(&rows[k * dim..(k + 1) * dim])
            {
                *dst = f64::from(v);
            }
        }
        Ok(())
    })?;
    anyhow::ensure!(
        failures.is_empty(),
        "cannot embed {} probe images: {}",
        failures.len(),
        failures.join("; ")
    );
    Ok(Matrix::new(jobs.len(), dim, data)?)
}

/// Grey thumbnails of the same view, projected on the principal components of the training
/// images (at most 256 of them, as many as the embedding has dimensions).
fn pixel_features(plan: &DemoPlan, sets: &ProbeSets) -> anyhow::Result<Matrix> {
    let side = plan.pixel_side;
    let plane = (side * side) as usize;
    let mut data = Vec::with_capacity(sets.images.len() * plane);
    for p in &sets.images {
        let chw = prepare(&load_image(p)?, Prep::FaceFrame(sets.view(p)), side)
            .with_context(|| format!("{}", p.display()))?;
        data.extend((0..plane).map(|i| {
            f64::from(0.299 * chw[i] + 0.587 * chw[plane + i] + 0.114 * chw[2 * plane + i])
        }));
    }
    let all = Matrix::new(sets.images.len(), plane, data)?;
    let train = all.select_rows(&(0..sets.n_train).collect::<Vec<_>>());
    let k = 256.min(plane).min(sets.n_train.saturating_sub(1)).max(1);
    let pca = Pca::fit(&train, k)?;
    Ok(pca.transform(&all)?)
}

/// Runs the four probes on one method's features.
fn probe_method(sets: &ProbeSets, features: &Matrix) -> anyhow::Result<Vec<ProbeReport>> {
    let kind = ProbeKind::Ridge(RidgeConfig::default());
    let mut reports = Vec::new();
    for (samples, normaliser) in [
        (&sets.mafl, Normaliser::EyeCentres),
        (&sets.w300, Normaliser::OuterEyeCorners),
    ] {
        let data = |s: &Vec<LandmarkSample>| {
            let paths: Vec<&PathBuf> = s.iter().map(|x| &x.image).collect();
            let boxes: Vec<CropBox> = s.iter().map(|x| sets.view(&x.image)).collect();
            landmark_data(s, &boxes, sets.rows(features, &paths))
        };
        let task = Task::Landmarks { normaliser };
        let run = run_probe(&task, &kind, &data(&samples.0)?, &data(&samples.1)?)?;
        reports.push(run.report);
    }
    let pose = |s: &Vec<PoseSample>| {
        let paths: Vec<&PathBuf> = s.iter().map(|x| &x.image).collect();
        pose_data(s, sets.rows(features, &paths))
    };
    let run = run_probe(
        &Task::Pose,
        &kind,
        &pose(&sets.pose.0)?,
        &pose(&sets.pose.1)?,
    )?;
    reports.push(run.report);
    let au = |t: &AuTable| {
        let paths: Vec<&PathBuf> = t.samples.iter().map(|x| &x.image).collect();
        au_data(t, sets.rows(features, &paths))
    };
    let task = Task::ActionUnits {
        names: sets.au.0.au_names.clone(),
    };
    let run = run_probe(&task, &kind, &au(&sets.au.0)?, &au(&sets.au.1)?)?;
    reports.push(run.report);
    Ok(reports)
}

fn summarise(method: &Method, dim: usize, reports: Vec<ProbeReport>) -> MethodResult {
    let mut r = MethodResult {
        name: method.name().to_string(),
        label: method.label().to_string(),
        fabnet: method.is_fabnet(),
        dim,
        landmarks5_nme: f64::NAN,
        landmarks68_nme: f64::NAN,
        pose_mae: [f64::NAN; 4],
        au_auc: f64::NAN,
        reports: Vec::new(),
    };
    for (i, rep) in reports.iter().enumerate() {
        match (&rep.metrics, i) {
            (ProbeMetrics::Landmarks(n), 0) => r.landmarks5_nme = n.mean_percent,
            (ProbeMetrics::Landmarks(n), _) => r.landmarks68_nme = n.mean_percent,
            (ProbeMetrics::Pose(p), _) => {
                r.pose_mae = [p.roll_deg, p.pitch_deg, p.yaw_deg, p.mean_deg];
            }
            (ProbeMetrics::ActionUnits(a), _) => r.au_auc = a.mean_auc.unwrap_or(f64::NAN),
        }
    }
    r.reports = reports;
    r
}

/// Features, probes and the retrieval grid for every method of `plan`; saves `probes/results.json`.
pub fn run_all(plan: &DemoPlan, out: &Path, progress: bool) -> anyhow::Result<ProbeResults> {
    let probes = DemoPlan::synth_dir(out).join("probes");
    let sets = ProbeSets::read(&probes, plan.crop_scale)?;
    let mut results = ProbeResults {
        methods: Vec::new(),
        images: (sets.n_train, sets.images.len() - sets.n_train),
        retrieval: None,
    };
    let mut best_fabnet: Option<(f64, Matrix)> = None;
    for method in plan.methods() {
        tracing::info!("probing {}", method.label());
        let f = features(plan, out, &sets, &method, progress)?;
        let result = summarise(&method, f.cols, probe_method(&sets, &f)?);
        tracing::info!(
            "{}: MAFL {:.2} %, 300-W {:.2} %, pose {:.2}°, AU AUC {:.3}",
            result.name,
            result.landmarks5_nme,
            result.landmarks68_nme,
            result.pose_mae[3],
            result.au_auc
        );
        if method.is_fabnet()
            && best_fabnet
                .as_ref()
                .is_none_or(|(nme, _)| result.landmarks68_nme < *nme)
        {
            best_fabnet = Some((result.landmarks68_nme, f));
        }
        results.methods.push(result);
    }
    if let Some((_, f)) = &best_fabnet {
        let path = out.join("retrieval.png");
        retrieval_grid(&sets, f, &path)?;
        results.retrieval = Some("retrieval.png".into());
    }
    let path = out.join(RESULTS);
    std::fs::create_dir_all(out.join("probes"))?;
    fabnet_probe::fsutil::write_atomic(&path, |w| {
        w.write_all(serde_json::to_string_pretty(&results)?.as_bytes())
    })?;
    Ok(results)
}

/// Identity of a probe image from its file name (`id00061_004.png` → `id00061`).
fn identity(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    stem.as_deref()
        .and_then(|s| s.rsplit_once('_').map(|(id, _)| id.to_string()))
        .unwrap_or_default()
}

/// Six test queries and their five nearest test images of other identities (cosine), one row each.
fn retrieval_grid(sets: &ProbeSets, features: &Matrix, path: &Path) -> anyhow::Result<()> {
    let test: Vec<usize> = (sets.n_train..sets.images.len()).collect();
    let rows = features.select_rows(&test);
    let data: Vec<f32> = rows.data.iter().map(|&v| v as f32).collect();
    let source = Embeddings {
        rows: rows.rows,
        cols: rows.cols,
        data,
    };
    let step = (test.len() / 6).max(1);
    let queries: Vec<usize> = (0..test.len()).step_by(step).take(6).collect();
    let qdata: Vec<f32> = queries
        .iter()
        .flat_map(|&q| source.data[q * source.cols..(q + 1) * source.cols].to_vec())
        .collect();
    let opts = SearchOptions {
        metric: Metric::Cosine,
        k: 40.min(test.len()),
        ..SearchOptions::default()
    };
    let found = knn(&source, &qdata, &opts)?;
    let style = fabnet_probe::GridStyle {
        cell: 96,
        ..Default::default()
    };
    let crop = |i: usize| -> anyhow::Result<RgbImage> {
        let p = &sets.images[test[i]];
        let img = load_image(p)?;
        Ok(fabnet_probe::crop_resize(&img, &sets.view(p), 128, 128)?)
    };
    let mut grid_rows = Vec::new();
    for (q, neighbours) in queries.iter().zip(&found) {
        let qid = identity(&sets.images[test[*q]]);
        let picks: Vec<usize> = neighbours
            .iter()
            .map(|n| n.row)
            .filter(|&r| identity(&sets.images[test[r]]) != qid)
            .take(5)
            .collect();
        let imgs = picks
            .iter()
            .map(|&r| crop(r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        grid_rows.push(draw_grid(&crop(*q)?, &imgs, &style)?);
    }
    let w = grid_rows.iter().map(RgbImage::width).max().unwrap_or(1);
    let h: u32 = grid_rows.iter().map(RgbImage::height).sum();
    let mut sheet = RgbImage::from_pixel(w, h.max(1), image::Rgb([255, 255, 255]));
    let mut y = 0;
    for r in &grid_rows {
        image::imageops::replace(&mut sheet, r, 0, i64::from(y));
        y += r.height();
    }
    fabnet_train::plot::save_png(&sheet, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
