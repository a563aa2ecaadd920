//! `.npy` and `.safetensors` embedding files and `index.csv`: round trips, memory-mapped reads, a
//! NumPy-written fixture, and size checks.

use std::path::Path;

use fabnet_probe::embeddings::{read_safetensors, write_safetensors};
use fabnet_probe::npy::parse_header;
use fabnet_probe::{
    open_embeddings, open_with_index, read_embeddings, read_npy, write_embeddings, write_npy,
    EmbeddingIndex, Embeddings, NpyMmap, NpyWriter, ProbeError, RowSource,
};

fn sample(rows: usize, cols: usize) -> Embeddings {
    Embeddings {
        rows,
        cols,
        data: (0..rows * cols)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 - 0.25)
            .collect(),
    }
}

#[test]
fn numpy_written_fixture_reads() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small_f4.npy");
    let e = read_npy(&p).unwrap();
    assert_eq!((e.rows, e.cols), (3, 4));
    let want: Vec<f32> = (0..12).map(|i| 0.5 * i as f32 - 1.0).collect();
    assert_eq!(e.data, want);
    let m = NpyMmap::open(&p).unwrap();
    let mut buf = Vec::new();
    m.read_rows(1, 3, &mut buf).unwrap();
    assert_eq!(buf, want[4..]);
}

#[test]
fn npy_round_trip_whole_mmap_and_streamed() {
    let d = tempfile::tempdir().unwrap();
    let e = sample(301, 7);
    let p = d.path().join("emb.npy");
    write_npy(&p, &e.data, e.rows, e.cols).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let h = parse_header(&p, &bytes).unwrap();
    assert_eq!((h.rows, h.cols), (301, 7));
    assert_eq!(h.data_offset % 64, 0, "numpy aligns the data to 64 bytes");
    assert_eq!(bytes.len(), h.data_offset + 301 * 7 * 4);
    assert_eq!(read_npy(&p).unwrap(), e);
    let m = NpyMmap::open(&p).unwrap();
    let mut buf = Vec::new();
    m.read_rows(100, 103, &mut buf).unwrap();
    assert_eq!(buf, e.data[700..721]);
    m.read_rows(301, 301, &mut buf).unwrap();
    assert!(buf.is_empty());
    assert!(m.read_rows(300, 302, &mut buf).is_err());

    // Streamed in uneven batches, the same file content results (up to the header's padding).
    let s = d.path().join("streamed.npy");
    let mut w = NpyWriter::create(&s, 7).unwrap();
    for chunk in e.data.chunks(7 * 50) {
        w.write_rows(chunk).unwrap();
    }
    assert!(w.write_rows(&[1.0; 3]).is_err());
    assert!(!s.exists(), "the output appears only when finished");
    assert_eq!(w.finish().unwrap(), 301);
    assert_eq!(read_npy(&s).unwrap(), e);
    // An abandoned writer leaves nothing behind.
    let a = d.path().join("abandoned.npy");
    drop(NpyWriter::create(&a, 7).unwrap());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
}

#[test]
fn npy_rejects_wrong_dtype_order_and_size() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.npy");
    write_npy(&p, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
    let good = std::fs::read(&p).unwrap();
    for (from, to) in [("<f4", "<f8"), ("False", "True "), ("(2, 2)", "(4,)  ")] {
        let mut b = good.clone();
        let i = good
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        b[i..i + to.len()].copy_from_slice(to.as_bytes());
        let q = d.path().join("bad.npy");
        std::fs::write(&q, &b).unwrap();
        assert!(
            matches!(read_npy(&q), Err(ProbeError::Format { .. })),
            "{to}"
        );
        assert!(NpyMmap::open(&q).is_err());
    }
    let q = d.path().join("short.npy");
    std::fs::write(&q, &good[..good.len() - 4]).unwrap();
    assert!(read_npy(&q)
        .unwrap_err()
        .to_string()
        .contains("needs 16 data bytes"));
    assert!(NpyMmap::open(&q).is_err());
    assert!(write_npy(&p, &[1.0; 3], 2, 2).is_err());
}

#[test]
fn safetensors_round_trip_and_index() {
    let d = tempfile::tempdir().unwrap();
    let e = sample(40, 5);
    let p = d.path().join("emb.safetensors");
    write_safetensors(&p, &e.data, e.rows, e.cols).unwrap();
    assert_eq!(read_safetensors(&p).unwrap(), e);
    let src = open_embeddings(&p).unwrap();
    let mut buf = Vec::new();
    src.read_rows(39, 40, &mut buf).unwrap();
    assert_eq!(buf, e.data[195..]);
    // Same through the extension-dispatching helpers.
    let n = d.path().join("emb.npy");
    write_embeddings(&n, &e).unwrap();
    assert_eq!(read_embeddings(&n).unwrap(), e);

    let idx = EmbeddingIndex::Paths(
        (0..40)
            .map(|i| format!("dir,{i}/img \"{i}\".jpg"))
            .collect(),
    );
    let ip = d.path().join("index.csv");
    idx.write(&ip).unwrap();
    assert_eq!(EmbeddingIndex::read(&ip).unwrap(), idx);
    let (src, back) = open_with_index(&p, &ip).unwrap();
    assert_eq!((src.n_rows(), back.len()), (40, 40));
    assert_eq!(
        back.rows_for(&["dir,7/img \"7\".jpg", "dir,0/img \"0\".jpg"])
            .unwrap(),
        vec![7, 0]
    );
    assert!(back.rows_for(&["nope"]).is_err());

    let frames = EmbeddingIndex::Frames(vec![("a.mp4".into(), 0), ("a.mp4".into(), 1)]);
    frames.write(&ip).unwrap();
    assert_eq!(
        std::fs::read_to_string(&ip).unwrap(),
        "video,frame\na.mp4,0\na.mp4,1\n"
    );
    assert_eq!(EmbeddingIndex::read(&ip).unwrap(), frames);
    assert_eq!(frames.key(1).as_deref(), Some("a.mp4#1"));
    // 2 index rows against 40 embedding rows.
    assert!(matches!(
        open_with_index(&p, &ip),
        Err(ProbeError::Shape(_))
    ));
}
