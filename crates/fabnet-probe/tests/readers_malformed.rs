//! Malformed annotation and index files fail with `file:line`, and missing images are named.

use std::path::{Path, PathBuf};

use fabnet_probe::readers::{
    read_au_csv, read_celeba_landmarks, read_dlib_xml, read_mafl, read_pose_csv, read_pts,
};
use fabnet_probe::{check_images, EmbeddingIndex, PixelOrigin, ProbeError};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn assert_at<T: std::fmt::Debug>(r: Result<T, ProbeError>, path: &Path, line: usize) {
    let e = r.unwrap_err();
    let prefix = format!("{}:{line}:", path.display());
    assert!(
        e.to_string().starts_with(&prefix),
        "expected {prefix}…, got {e}"
    );
}

#[test]
fn pts_errors() {
    let d = tempfile::tempdir().unwrap();
    let ok = "version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n";
    let p = write(d.path(), "ok.pts", ok);
    assert_eq!(
        read_pts(&p, PixelOrigin::OneBased).unwrap(),
        vec![[0.0, 1.0], [2.0, 3.0]]
    );
    let p = write(
        d.path(),
        "num.pts",
        "version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n",
    );
    assert_at(read_pts(&p, PixelOrigin::OneBased), &p, 5);
    let p = write(
        d.path(),
        "count.pts",
        "version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n",
    );
    assert_at(read_pts(&p, PixelOrigin::OneBased), &p, 6);
    let p = write(
        d.path(),
        "open.pts",
        "version: 1\nn_points: 2\n{\n1 2\n3 4\n",
    );
    assert_at(read_pts(&p, PixelOrigin::OneBased), &p, 5);
    let p = write(
        d.path(),
        "three.pts",
        "version: 1\nn_points: 1\n{\n1 2 3\n}\n",
    );
    assert_at(read_pts(&p, PixelOrigin::OneBased), &p, 4);
    let p = write(d.path(), "nohdr.pts", "version: 1\n{\n1 2\n}\n");
    assert_at(read_pts(&p, PixelOrigin::OneBased), &p, 2);
}

#[test]
fn celeba_and_mafl_errors() {
    let d = tempfile::tempdir().unwrap();
    let header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y";
    let good = format!("2\n{header}\n000001.jpg 69  109  106  113   77  142   73  152  108  154\n000002.jpg 1 2 3 4 5 6 7 8 9 10\n");
    let lm = write(d.path(), "lm.txt", &good);
    let rows = read_celeba_landmarks(&lm, PixelOrigin::ZeroBased).unwrap();
    assert_eq!(rows[0].0, "000001.jpg");
    assert_eq!(rows[0].1[4], [108.0, 154.0]);
    let list = write(d.path(), "testing.txt", "000002.jpg\n\n000001.jpg\n");
    let s = read_mafl(&lm, &list, Path::new("img"), PixelOrigin::ZeroBased).unwrap();
    assert_eq!(s[0].key, "000002.jpg");
    assert_eq!(s[1].image, Path::new("img/000001.jpg"));
    let list = write(d.path(), "bad_list.txt", "000002.jpg\n000009.jpg\n");
    assert_at(
        read_mafl(&lm, &list, Path::new("img"), PixelOrigin::ZeroBased),
        &list,
        2,
    );

    let p = write(
        d.path(),
        "hdr.txt",
        "1\nlefteye_x lefteye_y\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n",
    );
    assert_at(read_celeba_landmarks(&p, PixelOrigin::ZeroBased), &p, 2);
    let p = write(
        d.path(),
        "fields.txt",
        &format!("2\n{header}\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n000002.jpg 1 2 3\n"),
    );
    assert_at(read_celeba_landmarks(&p, PixelOrigin::ZeroBased), &p, 4);
    let p = write(
        d.path(),
        "nan.txt",
        &format!("1\n{header}\n000001.jpg 1 2 3 4 5 six 7 8 9 10\n"),
    );
    assert_at(read_celeba_landmarks(&p, PixelOrigin::ZeroBased), &p, 3);
    let p = write(d.path(), "count.txt", &format!("x\n{header}\n"));
    assert_at(read_celeba_landmarks(&p, PixelOrigin::ZeroBased), &p, 1);
    let p = write(
        d.path(),
        "short.txt",
        &format!("3\n{header}\n000001.jpg 1 2 3 4 5 6 7 8 9 10\n"),
    );
    assert_at(read_celeba_landmarks(&p, PixelOrigin::ZeroBased), &p, 3);
}

#[test]
fn dlib_xml_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "ok.xml",
        "<?xml version='1.0'?>\n<dataset><images>\n<image file='a&amp;b.jpg'>\n<!-- a <comment> -->\n  <box top='1' left='2' width='3' height='4'>\n    <part name='01' x='5' y='6'/>\n    <part name=\"00\" x=\"7\" y=\"8\"/>\n  </box>\n  <box top='1' left='2' width='3' height='4' ignore='1'>\n    <part name='00' x='5' y='6'/>\n  </box>\n  <box top='1' left='2' width='3' height='4'/>\n</image>\n</images></dataset>\n",
    );
    let s = read_dlib_xml(&p).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].key, "a&b.jpg#0");
    assert_eq!(s[0].points, vec![[7.0, 8.0], [5.0, 6.0]]);

    let cases = [
        ("part_outside.xml", "<images>\n<image file='a.jpg'>\n<part name='00' x='1' y='2'/>\n</image>\n</images>\n", 3),
        ("no_left.xml", "<images>\n<image file='a.jpg'>\n<box top='1' width='3' height='4'>\n</box>\n</image></images>\n", 3),
        ("bad_x.xml", "<images>\n<image file='a.jpg'>\n<box top='1' left='1' width='3' height='4'>\n<part name='00' x='q' y='2'/>\n</box>\n</image></images>\n", 4),
        ("unquoted.xml", "<images>\n<image file=a.jpg>\n</image></images>\n", 2),
        ("gap.xml", "<images>\n<image file='a.jpg'>\n<box top='1' left='1' width='3' height='4'>\n<part name='00' x='1' y='2'/>\n<part name='02' x='1' y='2'/>\n</box>\n</image></images>\n", 3),
        ("unclosed.xml", "<images>\n<image file='a.jpg'>\n<box top='1' left='1' width='3' height='4'>\n<part name='00' x='1' y='2'/>\n</image></images>\n", 5),
    ];
    for (name, text, line) in cases {
        let p = write(d.path(), name, text);
        assert_at(read_dlib_xml(&p), &p, line);
    }
}

#[test]
fn csv_errors_and_values() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "pose.csv",
        "yaw,image,x,y,w,h,roll,pitch,extra\n90,\"a,b.jpg\",1,2,30,40,-45,0,z\n\n",
    );
    let s = read_pose_csv(&p).unwrap();
    assert_eq!(s[0].key, "a,b.jpg");
    assert_eq!(s[0].image, d.path().join("a,b.jpg"));
    let r = std::f64::consts::FRAC_PI_2;
    assert!(
        (s[0].angles[0] + r / 2.0).abs() < 1e-12
            && s[0].angles[1] == 0.0
            && (s[0].angles[2] - r).abs() < 1e-12
    );
    assert_eq!(s[0].bbox.left, 0.5);
    let p = write(d.path(), "nohdr.csv", "image,x,y,w,h,roll,pitch\n");
    assert_at(read_pose_csv(&p), &p, 1);
    let p = write(
        d.path(),
        "num.csv",
        "image,x,y,w,h,roll,pitch,yaw\na.jpg,1,2,3,4,5,6,7\nb.jpg,1,2,3,4,5,six,7\n",
    );
    assert_at(read_pose_csv(&p), &p, 3);
    let p = write(
        d.path(),
        "fields.csv",
        "image,x,y,w,h,roll,pitch,yaw\na.jpg,1,2,3,4,5,6\n",
    );
    assert_at(read_pose_csv(&p), &p, 2);
    let p = write(
        d.path(),
        "box.csv",
        "image,x,y,w,h,roll,pitch,yaw\na.jpg,1,2,0,4,5,6,7\n",
    );
    assert_at(read_pose_csv(&p), &p, 2);

    let p = write(
        d.path(),
        "au.csv",
        "image,AU1,AU12\na.jpg,1,999\nb.jpg,0,1\n",
    );
    let t = read_au_csv(&p).unwrap();
    assert_eq!(t.au_names, ["AU1", "AU12"]);
    assert_eq!(t.samples[0].labels, [Some(true), None]);
    assert_eq!(t.samples[1].labels, [Some(false), Some(true)]);
    let p = write(d.path(), "au_bad.csv", "image,AU1\na.jpg,1\nb.jpg,2\n");
    assert_at(read_au_csv(&p), &p, 3);
    let p = write(d.path(), "au_hdr.csv", "file,AU1\n");
    assert_at(read_au_csv(&p), &p, 1);
    let p = write(d.path(), "au_quote.csv", "image,AU1\n\"a.jpg,1\n");
    assert_at(read_au_csv(&p), &p, 2);
}

#[test]
fn index_errors_and_missing_images() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "index.csv", "video,frame\nv.mp4,0\nv.mp4,one\n");
    assert_at(EmbeddingIndex::read(&p), &p, 3);
    let p = write(d.path(), "index2.csv", "file\na.jpg\n");
    assert_at(EmbeddingIndex::read(&p), &p, 1);

    let present = write(d.path(), "there.jpg", "x");
    let missing = d.path().join("gone.jpg");
    check_images([present.as_path()]).unwrap();
    match check_images([present.as_path(), missing.as_path()]) {
        Err(ProbeError::MissingImage(p)) => assert_eq!(p, missing),
        other => panic!("expected a missing image, got {other:?}"),
    }
    let e = check_images([missing.as_path()]).unwrap_err().to_string();
    assert!(e.contains("gone.jpg"), "{e}");
}
