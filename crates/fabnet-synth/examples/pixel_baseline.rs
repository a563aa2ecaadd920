//! How hard are the synthetic probe sets? Raw-pixel baseline: every probe image (whole, or
//! cropped to its face box grown by 10 %) downsampled to 32×32 grey, projected on its top 256
//! principal components (fitted on the training split), then a closed-form ridge map
//! (λ by 5-fold cross-validation on the training split) to the MAFL 5 points, the 68 300-W points, the pose and the AUs; compared with
//! predicting the training mean. A good embedding must beat these numbers clearly.
//!
//! Run: `cargo run --release -p fabnet-synth --example pixel_baseline [OUT_DIR]`
//! (renders 80 probe identities × 20 images at 64×64, seed 1; writes
//! `target/fabnet-bench/synth_pixel_baseline.json`).

use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use fabnet_probe::readers::{
    read_300w_dir, read_au_csv, read_mafl, read_pose_csv, AuSample, LandmarkSample, PoseSample,
};
use fabnet_probe::{
    au_auc, crop_resize, nme, pose_mae, CropBox, Matrix, Normaliser, Pca, PixelOrigin, RidgeConfig,
    RidgeProbe,
};
use fabnet_synth::{render_corpus, SynthConfig};

const SIDE: u32 = 32;
/// Principal components kept: the embedding size, as the baselines of the paper's tables.
const COMPONENTS: usize = 256;

/// 32×32 grey pixels of each image, whole or cropped to its box.
fn features(paths: &[PathBuf], boxes: Option<&[CropBox]>) -> Result<Matrix, Box<dyn Error>> {
    let mut data = Vec::with_capacity(paths.len() * (SIDE * SIDE) as usize);
    for (i, p) in paths.iter().enumerate() {
        let img = image::open(p)?.to_rgb8();
        let small = match boxes {
            Some(b) => crop_resize(&img, &b[i], SIDE, SIDE)?,
            None => {
                image::imageops::resize(&img, SIDE, SIDE, image::imageops::FilterType::Triangle)
            }
        };
        let grey = image::DynamicImage::ImageRgb8(small).to_luma8();
        data.extend(grey.as_raw().iter().map(|&v| f64::from(v) / 255.0));
    }
    Ok(Matrix::new(paths.len(), (SIDE * SIDE) as usize, data)?)
}

/// The pixels projected on their top [`COMPONENTS`] principal components,
/// fitted on the training rows only.
fn pca(train: &Matrix, test: &Matrix) -> Result<(Matrix, Matrix), Box<dyn Error>> {
    let pca = Pca::fit(train, COMPONENTS)?;
    Ok((pca.transform(train)?, pca.transform(test)?))
}

/// Landmark NME (%) of ridge on pixels and of the training mean. With boxes, features are the
/// crops and targets are crop coordinates in [-1, 1], mapped back to pixels for the error.
fn landmarks(
    train: &[LandmarkSample],
    test: &[LandmarkSample],
    boxes: Option<(&[CropBox], &[CropBox])>,
    norm: Normaliser,
) -> Result<(f64, f64, String), Box<dyn Error>> {
    let paths = |v: &[LandmarkSample]| v.iter().map(|s| s.image.clone()).collect::<Vec<_>>();
    let xtr = features(&paths(train), boxes.map(|b| b.0))?;
    let xte = features(&paths(test), boxes.map(|b| b.1))?;
    let (xtr, xte) = pca(&xtr, &xte)?;
    let ytr: Vec<Vec<[f64; 2]>> = train
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.points
                .iter()
                .map(|&p| boxes.map_or(p, |b| b.0[i].to_crop(p)))
                .collect()
        })
        .collect();
    let ytr = points_matrix(&ytr)?;
    let truth: Vec<Vec<[f64; 2]>> = test.iter().map(|s| s.points.clone()).collect();
    let back = |m: &Matrix| -> Vec<Vec<[f64; 2]>> {
        to_points(m)
            .into_iter()
            .enumerate()
            .map(|(i, ps)| {
                ps.into_iter()
                    .map(|p| boxes.map_or(p, |b| b.1[i].from_crop(p)))
                    .collect()
            })
            .collect()
    };
    let probe = RidgeProbe::fit(&xtr, &ytr, &RidgeConfig::default())?;
    let px = nme(&back(&probe.predict(&xte)?), &truth, norm)?;
    let mean = nme(&back(&mean_prediction(&ytr, test.len())?), &truth, norm)?;
    Ok((px.mean_percent, mean.mean_percent, px.normaliser))
}

fn points_matrix(points: &[Vec<[f64; 2]>]) -> Result<Matrix, Box<dyn Error>> {
    let k = points[0].len() * 2;
    let data = points
        .iter()
        .flat_map(|p| p.iter().flat_map(|q| [q[0], q[1]]))
        .collect();
    Ok(Matrix::new(points.len(), k, data)?)
}

fn to_points(m: &Matrix) -> Vec<Vec<[f64; 2]>> {
    (0..m.rows)
        .map(|i| m.row(i).chunks(2).map(|c| [c[0], c[1]]).collect())
        .collect()
}

/// Predicts the training mean for every test row.
fn mean_prediction(train: &Matrix, test_rows: usize) -> Result<Matrix, Box<dyn Error>> {
    let mean: Vec<f64> = (0..train.cols)
        .map(|j| (0..train.rows).map(|i| train.get(i, j)).sum::<f64>() / train.rows as f64)
        .collect();
    Ok(Matrix::new(
        test_rows,
        train.cols,
        mean.iter()
            .copied()
            .cycle()
            .take(test_rows * train.cols)
            .collect(),
    )?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args().nth(1).map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = out.as_deref().unwrap_or(tmp.path());
    let cfg = SynthConfig {
        seed: 1,
        identities: 0,
        size: 64,
        probe_train_identities: 60,
        probe_test_identities: 20,
        probe_images_per_identity: 20,
        ..SynthConfig::default()
    };
    render_corpus(&cfg, dir, &|_| {})?;
    let probes = dir.join("probes");
    let ridge = RidgeConfig::default();
    let mut rows = Vec::new();
    let mut table = String::from(
        "| task | metric | pixels → PCA 256 → ridge | training mean |\n|---|---|---|---|\n",
    );

    // Face boxes (the pose CSV's, grown by 10 %), keyed by image path relative to probes/.
    let pose = read_pose_csv(&probes.join("pose.csv"))?;
    let boxes: HashMap<String, CropBox> = pose
        .iter()
        .map(|s| (s.key.clone(), s.bbox.expand(0.1)))
        .collect();
    let find = |key: &str| -> Result<CropBox, Box<dyn Error>> {
        Ok(*boxes
            .get(key)
            .ok_or_else(|| format!("no face box for {key} in pose.csv"))?)
    };
    let box_of = |v: &[LandmarkSample], prefix: &str| -> Result<Vec<CropBox>, Box<dyn Error>> {
        v.iter()
            .map(|s| find(&format!("{prefix}{}", s.key)))
            .collect()
    };

    let lm = probes.join("list_landmarks_align_celeba.txt");
    let tr = read_mafl(
        &lm,
        &probes.join("training.txt"),
        &probes,
        PixelOrigin::ZeroBased,
    )?;
    let te = read_mafl(
        &lm,
        &probes.join("testing.txt"),
        &probes,
        PixelOrigin::ZeroBased,
    )?;
    let (btr, bte) = (box_of(&tr, "")?, box_of(&te, "")?);
    let w_tr = read_300w_dir(&probes.join("train"), PixelOrigin::OneBased)?;
    let w_te = read_300w_dir(&probes.join("test"), PixelOrigin::OneBased)?;
    let (wbtr, wbte) = (box_of(&w_tr, "train/")?, box_of(&w_te, "test/")?);
    for (view, crop) in [("whole frame", false), ("face-box crop", true)] {
        let b5 = crop.then_some((btr.as_slice(), bte.as_slice()));
        let (px, mean, norm) = landmarks(&tr, &te, b5, Normaliser::EyeCentres)?;
        table += &format!("| MAFL 5 points, {view} | NME %, {norm} | {px:.2} | {mean:.2} |\n");
        rows.push((
            format!("MAFL-style 5 points, {view}, NME % (eye centres)"),
            px,
            mean,
        ));
        let b68 = crop.then_some((wbtr.as_slice(), wbte.as_slice()));
        let (px, mean, norm) = landmarks(&w_tr, &w_te, b68, Normaliser::OuterEyeCorners)?;
        table += &format!("| 300-W 68 points, {view} | NME %, {norm} | {px:.2} | {mean:.2} |\n");
        rows.push((
            format!("300-W-style 68 points, {view}, NME % (outer eye corners)"),
            px,
            mean,
        ));
    }

    // Pose, split by the MAFL lists.
    let split = |list: &Path| -> Result<Vec<String>, Box<dyn Error>> {
        Ok(std::fs::read_to_string(list)?
            .lines()
            .map(str::to_string)
            .collect())
    };
    let (train_names, test_names) = (
        split(&probes.join("training.txt"))?,
        split(&probes.join("testing.txt"))?,
    );
    let pose = read_pose_csv(&probes.join("pose.csv"))?;
    let pick = |names: &[String]| {
        pose.iter()
            .filter(|s| names.contains(&s.key))
            .collect::<Vec<_>>()
    };
    let (ptr, pte) = (pick(&train_names), pick(&test_names));
    let crops = |v: &[&PoseSample]| v.iter().map(|s| s.bbox.expand(0.1)).collect::<Vec<_>>();
    let xtr = features(
        &ptr.iter().map(|s| s.image.clone()).collect::<Vec<_>>(),
        Some(&crops(&ptr)),
    )?;
    let xte = features(
        &pte.iter().map(|s| s.image.clone()).collect::<Vec<_>>(),
        Some(&crops(&pte)),
    )?;
    let (xtr, xte) = pca(&xtr, &xte)?;
    let ang =
        |v: &[&PoseSample]| Matrix::new(v.len(), 3, v.iter().flat_map(|s| s.angles).collect());
    let (ytr, yte) = (ang(&ptr)?, ang(&pte)?);
    let probe = RidgeProbe::fit(&xtr, &ytr, &ridge)?;
    let px = pose_mae(&probe.predict(&xte)?, &yte)?;
    let mean = pose_mae(&mean_prediction(&ytr, pte.len())?, &yte)?;
    table += &format!(
        "| pose, face-box crop | MAE °, roll / pitch / yaw / mean | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} / {:.1} |\n",
        px.roll_deg, px.pitch_deg, px.yaw_deg, px.mean_deg, mean.roll_deg, mean.pitch_deg, mean.yaw_deg, mean.mean_deg
    );
    rows.push((
        "pose, face-box crop, mean MAE degrees".to_string(),
        px.mean_deg,
        mean.mean_deg,
    ));

    // Action units: ridge scores, ROC-AUC.
    let au = read_au_csv(&probes.join("au.csv"))?;
    let pick = |names: &[String]| {
        au.samples
            .iter()
            .filter(|s| names.contains(&s.key))
            .collect::<Vec<_>>()
    };
    let (atr, ate) = (pick(&train_names), pick(&test_names));
    let acrop = |v: &[&AuSample]| {
        v.iter()
            .map(|s| find(&s.key))
            .collect::<Result<Vec<_>, _>>()
    };
    let xtr = features(
        &atr.iter().map(|s| s.image.clone()).collect::<Vec<_>>(),
        Some(&acrop(&atr)?),
    )?;
    let xte = features(
        &ate.iter().map(|s| s.image.clone()).collect::<Vec<_>>(),
        Some(&acrop(&ate)?),
    )?;
    let (xtr, xte) = pca(&xtr, &xte)?;
    let lab = |v: &[&AuSample]| {
        Matrix::new(
            v.len(),
            au.au_names.len(),
            v.iter()
                .flat_map(|s| {
                    s.labels
                        .iter()
                        .map(|l| l.map_or(f64::NAN, |b| f64::from(u8::from(b))))
                })
                .collect(),
        )
    };
    let (ytr, yte) = (lab(&atr)?, lab(&ate)?);
    let probe = RidgeProbe::fit(&xtr, &ytr, &ridge)?;
    let auc = au_auc(&probe.predict(&xte)?, &yte, &au.au_names)?;
    let mean_auc = auc.mean_auc.unwrap_or(f64::NAN);
    table +=
        &format!("| action units, face-box crop | mean ROC-AUC (higher is better) | {mean_auc:.3} | 0.500 |\n");
    rows.push((
        "action units, face-box crop, mean ROC-AUC (higher is better)".to_string(),
        mean_auc,
        0.5,
    ));

    println!(
        "{} train / {} test probe images (disjoint identities), 64×64, features: 32×32 grey pixels → PCA 256\n",
        train_names.len(),
        test_names.len()
    );
    print!("{table}");
    let json = serde_json::json!({
        "bench": "synth_pixel_baseline",
        "rows": rows.iter().map(|(case, ours, reference)| serde_json::json!({
            "case": case, "ours": ours, "reference": reference,
            "reference_name": "training-mean predictor", "unit": "see case",
            "lower_is_better": !case.contains("AUC"),
        })).collect::<Vec<_>>(),
        "notes": "raw pixels (32x32 grey) -> PCA to 256 (fitted on the training split) -> ridge with CV lambda on the synthetic probe sets (seed 1, 60 train / 20 test identities x 20 images, 64x64); command: cargo run --release -p fabnet-synth --example pixel_baseline",
    });
    let bench = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/fabnet-bench"
    ));
    std::fs::create_dir_all(bench)?;
    std::fs::write(
        bench.join("synth_pixel_baseline.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}
