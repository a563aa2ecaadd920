//! `run_probe` end to end on planted data: targets built from reader-style samples, both probes,
//! every task, and the report's JSON and Markdown.

use fabnet_probe::readers::{AuSample, AuTable, PoseSample};
use fabnet_probe::task::{au_data, landmark_data, pose_data};
use fabnet_probe::{
    run_probe, BnLinearConfig, CropBox, LandmarkSample, Matrix, Normaliser, ProbeKind, ProbeLoss,
    ProbeMetrics, ProbeReport, RidgeConfig, Task,
};

/// A small deterministic generator of values in [-1, 1].
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// `n` faces whose 5 landmarks (crop coordinates) depend linearly on a 3-d latent; features are a fixed
/// random 16-d linear image of the latent plus small noise, so a linear probe can recover the landmarks.
fn faces(n: usize, g: &mut Gen, mix: &[f64]) -> (Vec<LandmarkSample>, Vec<CropBox>, Matrix) {
    let base = [
        [-0.4, -0.3],
        [0.4, -0.3],
        [0.0, 0.1],
        [-0.3, 0.5],
        [0.3, 0.5],
    ];
    let (mut samples, mut boxes, mut feats) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let z = [g.next(), g.next(), g.next()];
        let b = CropBox {
            left: 50.0 + 20.0 * g.next(),
            top: 40.0 + 20.0 * g.next(),
            width: 100.0 + 10.0 * g.next(),
            height: 110.0,
        };
        let points = base
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let du = 0.1 * z[0] + 0.05 * z[1] * (k as f64 - 2.0);
                let dv = 0.1 * z[2] + 0.02 * z[0] * k as f64;
                b.from_crop([p[0] + du, p[1] + dv])
            })
            .collect();
        samples.push(LandmarkSample {
            key: format!("{i}.jpg"),
            image: format!("{i}.jpg").into(),
            points,
            given_box: None,
        });
        boxes.push(b);
        for j in 0..16 {
            feats.push((0..3).map(|c| mix[j * 3 + c] * z[c]).sum::<f64>() + 0.001 * g.next());
        }
    }
    (samples, boxes, Matrix::new(n, 16, feats).unwrap())
}

#[test]
fn landmark_probes_recover_planted_points() {
    let mut g = Gen(5);
    let mix: Vec<f64> = (0..48).map(|_| g.next()).collect();
    let (s_tr, b_tr, f_tr) = faces(300, &mut g, &mix);
    let (s_te, b_te, f_te) = faces(100, &mut g, &mix);
    let train = landmark_data(&s_tr, &b_tr, f_tr).unwrap();
    let test = landmark_data(&s_te, &b_te, f_te).unwrap();
    assert_eq!(train.targets.cols, 10);
    let task = Task::Landmarks {
        normaliser: Normaliser::EyeCentres,
    };

    // Baseline: predicting the training mean shape.
    let mean: Vec<f64> = (0..10)
        .map(|c| (0..300).map(|i| train.targets.get(i, c)).sum::<f64>() / 300.0)
        .collect();
    let base_pred: Vec<Vec<[f64; 2]>> = (0..100)
        .map(|i| {
            mean.chunks(2)
                .map(|uv| b_te[i].from_crop([uv[0], uv[1]]))
                .collect()
        })
        .collect();
    let baseline = fabnet_probe::nme(&base_pred, &test.points, Normaliser::EyeCentres)
        .unwrap()
        .mean_percent;

    for kind in [
        ProbeKind::Ridge(RidgeConfig::default()),
        ProbeKind::BnLinear(BnLinearConfig::new(ProbeLoss::Mse)),
    ] {
        let run = run_probe(&task, &kind, &train, &test).unwrap();
        let ProbeMetrics::Landmarks(r) = &run.report.metrics else {
            panic!("landmark metrics expected")
        };
        assert!(
            r.mean_percent < 0.1 * baseline,
            "{}: nme {} vs mean-shape {baseline}",
            run.report.probe,
            r.mean_percent
        );
        assert_eq!(r.per_face_percent.len(), 100);
        let md = run.report.to_markdown();
        assert!(md.contains("inter-ocular distance (eye centres)"), "{md}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("report.json");
        run.report.write_json(&p).unwrap();
        let back: ProbeReport =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        // serde_json's default float parsing may differ from the written value in the last bit.
        let ProbeMetrics::Landmarks(rb) = &back.metrics else {
            panic!("landmark metrics expected")
        };
        assert!((rb.mean_percent - r.mean_percent).abs() <= 1e-12 * r.mean_percent.abs().max(1.0));
        assert_eq!(rb.normaliser, r.normaliser);
        assert_eq!(
            (back.n_train, back.n_test, back.embedding_dim),
            (300, 100, 16)
        );
    }
    assert!(baseline > 5.0, "baseline {baseline}");
}

#[test]
fn pose_and_au_tasks() {
    let mut g = Gen(9);
    let n = 400;
    let feats = Matrix::new(n, 8, (0..n * 8).map(|_| g.next()).collect()).unwrap();
    // Pose: angles a fixed linear map of the features, up to ±60°.
    let samples: Vec<PoseSample> = (0..n)
        .map(|i| {
            let f = feats.row(i);
            let a = [0.3 * f[0], 0.5 * f[1] - 0.2 * f[2], 0.6 * f[3] + 0.4 * f[4]];
            PoseSample {
                key: i.to_string(),
                image: i.to_string().into(),
                bbox: CropBox::from_pixel_rect(0.0, 0.0, 9.0, 9.0),
                angles: a,
            }
        })
        .collect();
    let tr: Vec<usize> = (0..300).collect();
    let te: Vec<usize> = (300..400).collect();
    let train = pose_data(&samples[..300], feats.select_rows(&tr)).unwrap();
    let test = pose_data(&samples[300..], feats.select_rows(&te)).unwrap();
    let run = run_probe(
        &Task::Pose,
        &ProbeKind::Ridge(RidgeConfig::default()),
        &train,
        &test,
    )
    .unwrap();
    let ProbeMetrics::Pose(m) = run.report.metrics else {
        panic!("pose metrics expected")
    };
    assert!(m.mean_deg < 0.01, "{m:?}");
    assert!(run.report.to_markdown().contains("yaw °"));

    // AUs: AU "x" follows the sign of feature 5, "y" of feature 6 with a quarter of labels unknown.
    let table = AuTable {
        au_names: vec!["x".into(), "y".into()],
        samples: (0..n)
            .map(|i| {
                let f = feats.row(i);
                AuSample {
                    key: i.to_string(),
                    image: i.to_string().into(),
                    labels: vec![
                        Some(f[5] > 0.0),
                        if i % 4 == 0 { None } else { Some(f[6] > 0.1) },
                    ],
                }
            })
            .collect(),
    };
    let train = au_data(
        &AuTable {
            au_names: table.au_names.clone(),
            samples: table.samples[..300].to_vec(),
        },
        feats.select_rows(&tr),
    )
    .unwrap();
    let test = au_data(
        &AuTable {
            au_names: table.au_names.clone(),
            samples: table.samples[300..].to_vec(),
        },
        feats.select_rows(&te),
    )
    .unwrap();
    assert!(train.targets.get(0, 1).is_nan());
    for kind in [
        ProbeKind::Ridge(RidgeConfig::default()),
        ProbeKind::BnLinear(BnLinearConfig::new(ProbeLoss::Mse)),
    ] {
        let run = run_probe(
            &Task::ActionUnits {
                names: table.au_names.clone(),
            },
            &kind,
            &train,
            &test,
        )
        .unwrap();
        let ProbeMetrics::ActionUnits(a) = &run.report.metrics else {
            panic!("au metrics expected")
        };
        assert!(a.mean_auc.unwrap() > 0.97, "{}: {a:?}", run.report.probe);
        assert_eq!(
            a.per_au[1].positives + a.per_au[1].negatives,
            75,
            "25 unknown test labels skipped"
        );
        if run.report.probe == "bn-linear" {
            assert_eq!(
                run.report.fit["config"]["loss"], "BceWithLogits",
                "the task sets the loss"
            );
        }
        assert!(run.report.to_markdown().contains("| y |"));
    }
}
