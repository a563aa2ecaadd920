//! Probe tasks end to end: build targets from the readers' samples (§5: landmarks in [-1, 1] crop
//! coordinates, pose in radians, AUs as 0/1 with NaN for unknown), fit a probe on the training split,
//! and score the test split.

use serde::{Deserialize, Serialize};

use crate::bn_linear::{BnLinearConfig, BnLinearProbe, ProbeLoss};
use crate::error::{ProbeError, Result};
use crate::geometry::CropBox;
use crate::linalg::Matrix;
use crate::metrics::{au_auc, nme, pose_mae, Normaliser};
use crate::readers::{AuTable, LandmarkSample, PoseSample};
use crate::report::{ProbeMetrics, ProbeReport};
use crate::ridge::{RidgeConfig, RidgeProbe};

/// A downstream task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Landmark regression, NME normalised as given (MAFL: [`Normaliser::EyeCentres`]; 300-W:
    /// [`Normaliser::OuterEyeCorners`]).
    Landmarks {
        /// The NME normaliser.
        normaliser: Normaliser,
    },
    /// Head pose (roll, pitch, yaw) regression in radians, reported in degrees.
    Pose,
    /// One logistic output per action unit, scored by ROC-AUC.
    ActionUnits {
        /// AU names, one per target column.
        names: Vec<String>,
    },
}

impl Task {
    /// A short name for reports: `landmarks`, `pose` or `au`.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Landmarks { .. } => "landmarks",
            Task::Pose => "pose",
            Task::ActionUnits { .. } => "au",
        }
    }

    /// The paper probe's loss for this task: MSE for regression, BCE on logits for AUs.
    pub fn loss(&self) -> ProbeLoss {
        match self {
            Task::ActionUnits { .. } => ProbeLoss::BceWithLogits,
            _ => ProbeLoss::Mse,
        }
    }
}

/// Features and targets of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeData {
    /// Embeddings `(N, D)`.
    pub features: Matrix,
    /// Targets `(N, K)`: landmarks `(u1, v1, u2, v2, …)` in [-1, 1] crop coordinates; pose
    /// `(roll, pitch, yaw)` in radians; AUs 0/1 with NaN for unknown.
    pub targets: Matrix,
    /// Landmarks only: each face's crop box, to map predictions back to pixels.
    pub boxes: Vec<CropBox>,
    /// Landmarks only: each face's true points in pixels `(N, P, 2)`, for the NME.
    pub points: Vec<Vec<[f64; 2]>>,
}

fn check_rows(features: &Matrix, n: usize) -> Result<()> {
    if features.rows != n {
        return Err(ProbeError::Shape(format!(
            "{} feature rows for {n} samples",
            features.rows
        )));
    }
    Ok(())
}

/// Landmark data: `boxes[i]` is the crop of `samples[i]` (e.g. from [`crate::geometry::MaflCrop`] or
/// [`crate::geometry::PointsBox`]); every face must have the same number of points.
pub fn landmark_data(
    samples: &[LandmarkSample],
    boxes: &[CropBox],
    features: Matrix,
) -> Result<ProbeData> {
    check_rows(&features, samples.len())?;
    if boxes.len() != samples.len() || samples.is_empty() {
        return Err(ProbeError::Shape(format!(
            "{} boxes for {} faces",
            boxes.len(),
            samples.len()
        )));
    }
    let p = samples[0].points.len();
    let mut t = Vec::with_capacity(samples.len() * 2 * p);
    for (s, b) in samples.iter().zip(boxes) {
        if s.points.len() != p {
            return Err(ProbeError::Shape(format!(
                "{} has {} points, expected {p}",
                s.key,
                s.points.len()
            )));
        }
        t.extend(s.points.iter().flat_map(|&q| b.to_crop(q)));
    }
    Ok(ProbeData {
        targets: Matrix::new(samples.len(), 2 * p, t)?,
        features,
        boxes: boxes.to_vec(),
        points: samples.iter().map(|s| s.points.clone()).collect(),
    })
}

/// Pose data: targets `(N, 3)` radians.
pub fn pose_data(samples: &[PoseSample], features: Matrix) -> Result<ProbeData> {
    check_rows(&features, samples.len())?;
    Ok(ProbeData {
        targets: Matrix::new(
            samples.len(),
            3,
            samples.iter().flat_map(|s| s.angles).collect(),
        )?,
        features,
        boxes: Vec::new(),
        points: Vec::new(),
    })
}

/// AU data: targets `(N, A)` with 1, 0 or NaN (unknown).
pub fn au_data(table: &AuTable, features: Matrix) -> Result<ProbeData> {
    check_rows(&features, table.samples.len())?;
    let a = table.au_names.len();
    let t = table
        .samples
        .iter()
        .flat_map(|s| {
            s.labels.iter().map(|l| match l {
                Some(true) => 1.0,
                Some(false) => 0.0,
                None => f64::NAN,
            })
        })
        .collect();
    Ok(ProbeData {
        targets: Matrix::new(table.samples.len(), a, t)?,
        features,
        boxes: Vec::new(),
        points: Vec::new(),
    })
}

/// Which probe to fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Closed-form ridge with cross-validated λ.
    Ridge(RidgeConfig),
    /// The paper's BatchNorm1d → Linear probe; its `loss` is replaced by [`Task::loss`].
    BnLinear(BnLinearConfig),
}

/// A finished probe run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRun {
    /// Metrics and settings.
    pub report: ProbeReport,
    /// Raw test outputs `(N_test, K)` (crop coordinates, radians or AU logits).
    pub test_outputs: Matrix,
}

/// Fits `kind` on `train` and scores `test` for `task`.
pub fn run_probe(
    task: &Task,
    kind: &ProbeKind,
    train: &ProbeData,
    test: &ProbeData,
) -> Result<ProbeRun> {
    if train.features.cols != test.features.cols || train.targets.cols != test.targets.cols {
        return Err(ProbeError::Shape(format!(
            "train is {}-d with {} targets, test is {}-d with {} targets",
            train.features.cols, train.targets.cols, test.features.cols, test.targets.cols
        )));
    }
    let (outputs, probe, fit) = match kind {
        ProbeKind::Ridge(cfg) => {
            let p = RidgeProbe::fit(&train.features, &train.targets, cfg)?;
            let fit = serde_json::json!({ "config": cfg, "cv": p.cv });
            (p.predict(&test.features)?, "ridge", fit)
        }
        ProbeKind::BnLinear(cfg) => {
            let cfg = BnLinearConfig {
                loss: task.loss(),
                ..cfg.clone()
            };
            let (p, log) = BnLinearProbe::fit(&train.features, &train.targets, &cfg)?;
            let fit = serde_json::json!({ "config": cfg, "training": log });
            (p.predict(&test.features)?, "bn-linear", fit)
        }
    };
    let metrics = match task {
        Task::Landmarks { normaliser } => {
            if test.boxes.len() != test.features.rows || test.points.len() != test.features.rows {
                return Err(ProbeError::Shape(
                    "landmark test data needs a box and points per face".into(),
                ));
            }
            let pred: Vec<Vec<[f64; 2]>> = (0..outputs.rows)
                .map(|i| {
                    outputs
                        .row(i)
                        .chunks_exact(2)
                        .map(|uv| test.boxes[i].from_crop([uv[0], uv[1]]))
                        .collect()
                })
                .collect();
            ProbeMetrics::Landmarks(nme(&pred, &test.points, *normaliser)?)
        }
        Task::Pose => ProbeMetrics::Pose(pose_mae(&outputs, &test.targets)?),
        Task::ActionUnits { names } => {
            ProbeMetrics::ActionUnits(au_auc(&outputs, &test.targets, names)?)
        }
    };
    Ok(ProbeRun {
        report: ProbeReport {
            task: task.name().to_string(),
            probe: probe.to_string(),
            embedding_dim: train.features.cols,
            n_train: train.features.rows,
            n_test: test.features.rows,
            metrics,
            fit,
        },
        test_outputs: outputs,
    })
}
