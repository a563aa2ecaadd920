//! The probe benchmarks' metrics: landmark NME (%, with a named normaliser), pose MAE (degrees) and
//! per-AU ROC-AUC (ties counted as ½, unknown labels skipped).

use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::linalg::Matrix;

/// The inter-ocular distance that normalises the landmark error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Normaliser {
    /// Distance between the eye centres: points 1 and 2 (1-based) of the 5-point MAFL/CelebA layout,
    /// or the means of the eye contours (1-based 37–42 and 43–48) of the 68-point layout.
    EyeCentres,
    /// Distance between the outer eye corners of the 68-point 300-W layout, 1-based points 37 and 46.
    OuterEyeCorners,
    /// Distance between two given points, 0-based indices.
    Points(usize, usize),
}

impl Normaliser {
    /// A human-readable name, printed with every NME value.
    pub fn name(&self) -> String {
        match self {
            Normaliser::EyeCentres => "inter-ocular distance (eye centres)".into(),
            Normaliser::OuterEyeCorners => {
                "inter-ocular distance (outer eye corners, points 37 and 46)".into()
            }
            Normaliser::Points(a, b) => format!("distance between points {} and {}", a + 1, b + 1),
        }
    }

    /// The normalising distance for one face, `points` in pixels.
    pub fn distance(&self, points: &[[f64; 2]]) -> Result<f64> {
        let n = points.len();
        let mean = |r: std::ops::Range<usize>| {
            let k = r.len() as f64;
            let s = points[r]
                .iter()
                .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            [s[0] / k, s[1] / k]
        };
        let (a, b) = match (self, n) {
            (Normaliser::EyeCentres, 5) => (points[0], points[1]),
            (Normaliser::EyeCentres, 68) => (mean(36..42), mean(42..48)),
            (Normaliser::OuterEyeCorners, 68) => (points[36], points[45]),
            (Normaliser::Points(i, j), _) if *i < n && *j < n => (points[*i], points[*j]),
            _ => {
                return Err(ProbeError::Invalid(format!(
                    "normaliser {:?} does not apply to {n} landmarks",
                    self
                )))
            }
        };
        Ok(dist(a, b))
    }
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Landmark error over a test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NmeResult {
    /// Mean over faces of (mean point-to-point distance / normaliser) × 100.
    pub mean_percent: f64,
    /// The per-face values, %, in input order.
    pub per_face_percent: Vec<f64>,
    /// [`Normaliser::name`] of the normaliser used.
    pub normaliser: String,
}

/// Normalised mean error, %: per face, the mean Euclidean distance between predicted and true points
/// divided by the normaliser computed on the true points, ×100; then the mean over faces.
/// `pred` and `truth` are `(N, P, 2)` pixel points in the same frame (x first).
pub fn nme(
    pred: &[Vec<[f64; 2]>],
    truth: &[Vec<[f64; 2]>],
    normaliser: Normaliser,
) -> Result<NmeResult> {
    if pred.len() != truth.len() || pred.is_empty() {
        return Err(ProbeError::Shape(format!(
            "nme needs as many predictions as faces (> 0), got {} and {}",
            pred.len(),
            truth.len()
        )));
    }
    let mut per_face = Vec::with_capacity(pred.len());
    for (i, (p, t)) in pred.iter().zip(truth).enumerate() {
        if p.len() != t.len() || t.is_empty() {
            return Err(ProbeError::Shape(format!(
                "face {i}: {} predicted points for {} true points",
                p.len(),
                t.len()
            )));
        }
        let iod = normaliser.distance(t)?;
        if iod.is_nan() || iod <= 0.0 {
            return Err(ProbeError::Numeric(format!(
                "face {i}: normalising distance is {iod}"
            )));
        }
        let mean = p.iter().zip(t).map(|(a, b)| dist(*a, *b)).sum::<f64>() / t.len() as f64;
        per_face.push(100.0 * mean / iod);
    }
    Ok(NmeResult {
        mean_percent: per_face.iter().sum::<f64>() / per_face.len() as f64,
        per_face_percent: per_face,
        normaliser: normaliser.name(),
    })
}

/// Head-pose mean absolute errors, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoseMae {
    /// MAE of roll, degrees.
    pub roll_deg: f64,
    /// MAE of pitch, degrees.
    pub pitch_deg: f64,
    /// MAE of yaw, degrees.
    pub yaw_deg: f64,
    /// Mean of the three, degrees.
    pub mean_deg: f64,
}

/// Pose MAE from `(N, 3)` predictions and truths in radians, columns roll, pitch, yaw (no wrap-around:
/// AFLW angles stay well inside ±180°).
pub fn pose_mae(pred: &Matrix, truth: &Matrix) -> Result<PoseMae> {
    if pred.cols != 3 || truth.cols != 3 || pred.rows != truth.rows || pred.rows == 0 {
        return Err(ProbeError::Shape(format!(
            "pose mae needs two (N, 3) matrices with N > 0, got {}x{} and {}x{}",
            pred.rows, pred.cols, truth.rows, truth.cols
        )));
    }
    let mut s = [0.0; 3];
    for i in 0..pred.rows {
        for (k, s) in s.iter_mut().enumerate() {
            *s += (pred.get(i, k) - truth.get(i, k)).abs();
        }
    }
    let [r, p, y] = s.map(|v| (v / pred.rows as f64).to_degrees());
    Ok(PoseMae {
        roll_deg: r,
        pitch_deg: p,
        yaw_deg: y,
        mean_deg: (r + p + y) / 3.0,
    })
}

/// ROC-AUC of `scores` for binary `labels` (higher score = more likely positive), by the Mann–Whitney
/// statistic with average ranks, so a positive–negative tie counts ½. `None` when either class is empty.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>> {
    if scores.len() != labels.len() {
        return Err(ProbeError::Shape(format!(
            "{} scores for {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(ProbeError::Numeric(format!("score {i} is {}", scores[i])));
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 (1-based) share their average.
        let avg = (i + j + 2) as f64 * 0.5;
        rank_sum_pos += avg * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Ok(Some((rank_sum_pos - p * (p + 1.0) * 0.5) / (p * n)))
}

/// One AU's ROC-AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuAucEntry {
    /// The AU's column name.
    pub name: String,
    /// ROC-AUC in [0, 1]; `None` if the test set lacks positives or negatives for this AU.
    pub auc: Option<f64>,
    /// Known positive labels used.
    pub positives: usize,
    /// Known negative labels used.
    pub negatives: usize,
}

/// Per-AU ROC-AUC and their mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuAuc {
    /// One entry per AU, in column order.
    pub per_au: Vec<AuAucEntry>,
    /// Mean over the AUs whose AUC is defined; `None` if none is.
    pub mean_auc: Option<f64>,
}

/// Per-AU ROC-AUC from `(N, A)` scores (logits or probabilities) and `(N, A)` targets that are 0, 1 or
/// NaN (unknown, skipped for that AU).
pub fn au_auc(scores: &Matrix, targets: &Matrix, names: &[String]) -> Result<AuAuc> {
    if scores.rows != targets.rows || scores.cols != targets.cols || names.len() != targets.cols {
        return Err(ProbeError::Shape(format!(
            "au auc: scores {}x{}, targets {}x{}, {} names",
            scores.rows,
            scores.cols,
            targets.rows,
            targets.cols,
            names.len()
        )));
    }
    let mut per_au = Vec::with_capacity(names.len());
    for (a, name) in names.iter().enumerate() {
        let (mut s, mut l) = (Vec::new(), Vec::new());
        for i in 0..targets.rows {
            let t = targets.get(i, a);
            if !t.is_nan() {
                s.push(scores.get(i, a));
                l.push(t >= 0.5);
            }
        }
        let positives = l.iter().filter(|&&b| b).count();
        per_au.push(AuAucEntry {
            name: name.clone(),
            auc: roc_auc(&s, &l)?,
            positives,
            negatives: l.len() - positives,
        });
    }
    let defined: Vec<f64> = per_au.iter().filter_map(|e| e.auc).collect();
    let mean_auc =
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    Ok(AuAuc { per_au, mean_auc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nme_hand_computed_mafl() {
        // Eyes at (0,0) and (10,0): IOD 10. Errors per point: 3-4-5 triangle (5), 0, 1, 0, 2 → mean 1.6,
        // so 16 % for face 1. Face 2 is exact (0 %). Mean 8 %.
        let t1 = vec![[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 9.0], [8.0, 9.0]];
        let p1 = vec![[3.0, 4.0], [10.0, 0.0], [5.0, 6.0], [2.0, 9.0], [8.0, 7.0]];
        let r = nme(&[p1, t1.clone()], &[t1.clone(), t1], Normaliser::EyeCentres).unwrap();
        assert!((r.per_face_percent[0] - 16.0).abs() < 1e-12);
        assert_eq!(r.per_face_percent[1], 0.0);
        assert!((r.mean_percent - 8.0).abs() < 1e-12);
        assert_eq!(r.normaliser, "inter-ocular distance (eye centres)");
    }

    #[test]
    fn nme_outer_eye_corners_uses_points_37_and_46() {
        let mut t = vec![[0.0, 0.0]; 68];
        t[36] = [100.0, 50.0];
        t[45] = [140.0, 80.0]; // 1-based 37 and 46: distance 50.
        let mut p = t.clone();
        p[0] = [68.0, 0.0]; // one point off by 68 px: mean error 1 px, 2 %.
        let r = nme(&[p], &[t.clone()], Normaliser::OuterEyeCorners).unwrap();
        assert!((r.mean_percent - 2.0).abs() < 1e-12);
        assert!(r.normaliser.contains("37 and 46"));
        assert!(nme(
            &[t.clone()],
            &[t[..5].to_vec()],
            Normaliser::OuterEyeCorners
        )
        .is_err());
    }

    #[test]
    fn auc_small_example_with_ties() {
        // Scores 0.1 0.4 0.35 0.8 0.4 0.8 with labels 0 0 1 1 1 0.
        // Ascending: 0.1(n) 0.35(p) 0.4(n) 0.4(p) 0.8(p) 0.8(n); average ranks 1, 2, 3.5, 3.5, 5.5, 5.5.
        // Positive rank sum 2 + 3.5 + 5.5 = 11; U = 11 − 3·4/2 = 5; AUC = 5 / 9.
        // Pair count check: p0.35 beats 0.1 (1); p0.4 beats 0.1, ties 0.4 (1.5); p0.8 beats 0.1, 0.4,
        // ties 0.8 (2.5): 5 of 9.
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.8];
        let l = [false, false, true, true, true, false];
        let auc = roc_auc(&s, &l).unwrap().unwrap();
        assert!((auc - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[1.0, 1.0], &[true, false]).unwrap(), Some(0.5));
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]).unwrap(), None);
        assert!(roc_auc(&[f64::NAN, 1.0], &[true, false]).is_err());
    }

    #[test]
    fn au_auc_skips_unknown_labels() {
        // AU "a": the unknown row has the highest score but is skipped, leaving a perfect ranking (1.0);
        // AU "b": all known labels are positive, so its AUC is undefined and left out of the mean.
        let s = Matrix::new(4, 2, vec![0.1, 0.0, 0.9, 0.0, 5.0, 0.0, 0.2, 0.0]).unwrap();
        let t = Matrix::new(4, 2, vec![0.0, 1.0, 1.0, 1.0, f64::NAN, f64::NAN, 0.0, 1.0]).unwrap();
        let r = au_auc(&s, &t, &["a".into(), "b".into()]).unwrap();
        assert_eq!(r.per_au[0].auc, Some(1.0));
        assert_eq!((r.per_au[0].positives, r.per_au[0].negatives), (1, 2));
        assert_eq!(r.per_au[1].auc, None);
        assert_eq!(r.mean_auc, Some(1.0));
    }

    #[test]
    fn pose_mae_in_degrees() {
        let d = std::f64::consts::PI / 180.0;
        let t = Matrix::new(2, 3, vec![0.0; 6]).unwrap();
        let p = Matrix::new(
            2,
            3,
            vec![1.0 * d, -2.0 * d, 3.0 * d, 3.0 * d, 2.0 * d, -9.0 * d],
        )
        .unwrap();
        let m = pose_mae(&p, &t).unwrap();
        assert!((m.roll_deg - 2.0).abs() < 1e-9 && (m.pitch_deg - 2.0).abs() < 1e-9);
        assert!((m.yaw_deg - 6.0).abs() < 1e-9 && (m.mean_deg - 10.0 / 3.0).abs() < 1e-9);
    }
}
