//! The probe sets read back through fabnet-probe's dataset readers (the ones that serve the
//! real 300-W, MAFL, AFLW and EmotioNet files), and the formats agree with each other.

use std::path::Path;

use fabnet_probe::readers::{read_300w_dir, read_au_csv, read_mafl, read_pose_csv};
use fabnet_probe::{check_images, PixelOrigin};
use fabnet_synth::{render_corpus, SynthConfig};

#[test]
fn probe_sets_parse_with_the_real_dataset_readers() {
    let cfg = SynthConfig {
        seed: 21,
        identities: 0,
        size: 64,
        probe_train_identities: 2,
        probe_test_identities: 2,
        probe_images_per_identity: 4,
        ..SynthConfig::default()
    };
    let d = tempfile::tempdir().unwrap();
    render_corpus(&cfg, d.path(), &|_| {}).unwrap();
    let probes = d.path().join("probes");

    let w300_train = read_300w_dir(&probes.join("train"), PixelOrigin::OneBased).unwrap();
    let w300_test = read_300w_dir(&probes.join("test"), PixelOrigin::OneBased).unwrap();
    assert_eq!((w300_train.len(), w300_test.len()), (8, 8));
    check_images(
        w300_train
            .iter()
            .chain(&w300_test)
            .map(|s| s.image.as_path()),
    )
    .unwrap();

    let lm = probes.join("list_landmarks_align_celeba.txt");
    let mafl_train = read_mafl(
        &lm,
        &probes.join("training.txt"),
        &probes,
        PixelOrigin::ZeroBased,
    )
    .unwrap();
    let mafl_test = read_mafl(
        &lm,
        &probes.join("testing.txt"),
        &probes,
        PixelOrigin::ZeroBased,
    )
    .unwrap();
    assert_eq!((mafl_train.len(), mafl_test.len()), (8, 8));
    check_images(mafl_train.iter().map(|s| s.image.as_path())).unwrap();

    // The MAFL nose tip and mouth corners are 300-W points 31, 49 and 55.
    for m in &mafl_train {
        let w = w300_train
            .iter()
            .find(|s| Path::new("train").join(&s.key) == Path::new(&m.key))
            .unwrap();
        for (k, i) in [(2, 30), (3, 48), (4, 54)] {
            let (a, b) = (m.points[k], w.points[i]);
            assert!(
                (a[0] - b[0]).abs() < 0.02 && (a[1] - b[1]).abs() < 0.02,
                "{}: {a:?} vs {b:?}",
                m.key
            );
        }
        // Eye centres lie between the eye corners.
        let (l, r) = (m.points[0], m.points[1]);
        assert!(
            w.points[36][0] < l[0] && l[0] < w.points[39][0],
            "{}: left eye centre",
            m.key
        );
        assert!(
            w.points[42][0] < r[0] && r[0] < w.points[45][0],
            "{}: right eye centre",
            m.key
        );
    }

    let pose = read_pose_csv(&probes.join("pose.csv")).unwrap();
    assert_eq!(pose.len(), 16);
    check_images(pose.iter().map(|s| s.image.as_path())).unwrap();
    assert!(pose.iter().all(|s| s
        .angles
        .iter()
        .all(|a| a.abs() <= 60f64.to_radians() + 1e-6)));
    assert!(
        pose.iter().any(|s| s.angles[2].abs() > 5f64.to_radians()),
        "no yaw variation"
    );

    let au = read_au_csv(&probes.join("au.csv")).unwrap();
    assert_eq!(au.au_names.len(), 9);
    assert_eq!(au.samples.len(), 16);
    check_images(au.samples.iter().map(|s| s.image.as_path())).unwrap();
    let positives = au
        .samples
        .iter()
        .flat_map(|s| &s.labels)
        .filter(|l| **l == Some(true))
        .count();
    assert!(
        positives > 10 && positives < 16 * 9 - 10,
        "{positives} positive AU labels of {}",
        16 * 9
    );
}
