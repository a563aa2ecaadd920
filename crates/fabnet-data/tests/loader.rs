//! End-to-end loader tests on generated trees: determinism across worker counts, provenance of
//! every pixel, epoch coverage, bad-input handling, resuming, and the dependency invariant.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use fabnet_data::synthetic::{SyntheticFormat, SyntheticTree};
use fabnet_data::{
    BadInputPolicy, Batch, CropWindow, DataError, DatasetIndex, Loader, LoaderConfig, Split,
    SplitFractions,
};

fn config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        num_views: 3,
        image_size: 32,
        seed: 11,
        workers,
        prefetch_batches: 1,
        ..LoaderConfig::default()
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader
        .epoch(epoch)
        .collect::<Result<Vec<_>, _>>()
        .expect("epoch loads")
}

/// Mean colour of image `b` of a (B, 3, S, S) buffer, in 0..=255.
fn mean_rgb(buffer: &[f32], b: usize, s: usize) -> [u8; 3] {
    let plane = s * s;
    let image = &buffer[b * 3 * plane..(b + 1) * 3 * plane];
    let mut rgb = [0u8; 3];
    for (c, value) in rgb.iter_mut().enumerate() {
        let mean = image[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32;
        *value = (mean * 255.0).round() as u8;
    }
    rgb
}

/// Ordinal of a track in index order, as [`SyntheticTree::colour`] encodes it.
fn ordinal(index: &DatasetIndex, track: fabnet_data::TrackId) -> usize {
    index.track_ids().position(|t| t == track).unwrap()
}

#[test]
fn batches_are_identical_for_0_1_and_3_workers_even_with_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(14, 2, 2, 4)
        .with_short_tracks(2)
        .with_format(SyntheticFormat::Jpeg)
        .with_size(40)
        .write(dir.path())
        .unwrap();
    // Corrupt frames force deterministic replacement draws inside the workers.
    fs::write(
        dir.path().join("id00003/vid00/00000/frame000002.jpg"),
        b"junk",
    )
    .unwrap();
    fs::write(
        dir.path().join("id00005/vid01/00001/frame000001.jpg"),
        b"junk",
    )
    .unwrap();
    fs::write(
        dir.path().join("id00005/vid01/00001/frame000002.jpg"),
        b"junk",
    )
    .unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let ids: Vec<usize> = (0..14).collect();
    let mut cfg = config(0);
    cfg.bad_input = BadInputPolicy {
        max_bad_count: None,
        max_bad_fraction: None,
    };
    let run = |workers: usize| {
        let loader = Loader::new(
            Arc::clone(&index),
            &ids,
            LoaderConfig {
                workers,
                ..cfg.clone()
            },
        )
        .unwrap();
        let batches = [
            collect(&loader, 0),
            collect(&loader, 1),
            collect(&loader, 2),
        ]
        .concat();
        (batches, loader.stats())
    };
    assert_eq!(
        Loader::new(Arc::clone(&index), &ids, cfg.clone())
            .unwrap()
            .samples_per_epoch(),
        12,
        "drop_last leaves 3 full batches of 4"
    );
    let (inline, inline_stats) = run(0);
    let (one, one_stats) = run(1);
    let (three, three_stats) = run(3);
    assert_eq!(
        inline.len(),
        9,
        "14 identities, B = 4, drop_last: 3 batches per epoch"
    );
    assert!(inline == one, "1 worker differs from inline loading");
    assert!(inline == three, "3 workers differ from inline loading");
    assert_eq!(inline_stats, one_stats);
    assert_eq!(inline_stats, three_stats);
    // Different epochs really are different.
    assert!(inline[0].target != inline[3].target);
    // The corrupt frames were met and replaced over three epochs of 12 samples × 3 views.
    let bad: usize = inline
        .iter()
        .flat_map(|b| &b.samples)
        .map(|s| s.bad_frames.len())
        .sum();
    assert_eq!(bad as u64, inline_stats.bad);
}

#[test]
fn every_image_of_a_sample_comes_from_its_track() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(10, 3, 2, 5)
        .with_short_tracks(1)
        .with_format(SyntheticFormat::Jpeg)
        .write(dir.path())
        .unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let ids: Vec<usize> = (0..10).collect();
    let loader = Loader::new(
        Arc::clone(&index),
        &ids,
        LoaderConfig {
            num_views: 4,
            batch_size: 5,
            ..config(2)
        },
    )
    .unwrap();
    for epoch in 0..3 {
        for batch in collect(&loader, epoch) {
            assert_eq!(batch.sources_shape(), [3, 5, 3, 32, 32]);
            for (b, info) in batch.samples.iter().enumerate() {
                let expected_track = ordinal(&index, info.track);
                assert_eq!(
                    info.track.identity,
                    index.identity_index(&info.identity).unwrap()
                );
                let mut images = vec![mean_rgb(&batch.target, b, 32)];
                for k in 0..3 {
                    images.push(mean_rgb(batch.source(k).unwrap(), b, 32));
                }
                for (rgb, path) in images.iter().zip(&info.frame_paths) {
                    let (track, frame) = SyntheticTree::decode_colour(*rgb);
                    assert_eq!(track, expected_track, "{}", path.display());
                    let number =
                        fabnet_data::frame_number(path.file_name().unwrap().to_str().unwrap())
                            .unwrap();
                    assert_eq!(frame as u64, number, "{}", path.display());
                    assert_eq!(
                        path.parent().unwrap(),
                        index.track_dir(info.track),
                        "all frames in the sample's track folder"
                    );
                }
            }
        }
    }
}

#[test]
fn an_epoch_visits_each_training_identity_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(23, 1, 2, 3).write(dir.path()).unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let split = Split::seeded(&index, 4, SplitFractions::default()).unwrap();
    assert_eq!(split.train.len(), 16);
    let loader = Loader::new(
        Arc::clone(&index),
        &split.train,
        LoaderConfig {
            drop_last: false,
            ..config(2)
        },
    )
    .unwrap();
    assert_eq!(loader.batches_per_epoch(), 4);
    assert_eq!(loader.samples_per_epoch(), 16);
    for epoch in 0..2 {
        let mut visits: BTreeMap<String, usize> = BTreeMap::new();
        for batch in collect(&loader, epoch) {
            for info in &batch.samples {
                *visits.entry(info.identity.clone()).or_default() += 1;
            }
        }
        let train: Vec<String> = split
            .train
            .iter()
            .map(|&i| index.identities()[i].name.clone())
            .collect();
        assert_eq!(visits.keys().cloned().collect::<Vec<_>>(), train);
        assert!(visits.values().all(|&n| n == 1), "{visits:?}");
    }
}

#[test]
fn resuming_mid_epoch_gives_the_remaining_batches() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(12, 2, 1, 3).write(dir.path()).unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let ids: Vec<usize> = (0..12).collect();
    let loader = Loader::new(Arc::clone(&index), &ids, config(2)).unwrap();
    let full = collect(&loader, 5);
    let resumed: Vec<Batch> = loader
        .epoch_from(5, 1)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(resumed.len(), 2);
    assert!(resumed[..] == full[1..]);
}

#[test]
fn validation_mode_uses_the_centre_crop_and_repeats_for_the_same_epoch() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(5, 2, 2, 4).write(dir.path()).unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(Arc::clone(&index), &[0, 2, 4], config(1).without_jitter()).unwrap();
    let a = collect(&loader, 0);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].batch_size, 3, "the incomplete batch is kept");
    assert_eq!(loader.samples_per_epoch(), 3);
    assert_eq!(a[0].crop_size, 170);
    assert!(a[0]
        .samples
        .iter()
        .flat_map(|s| &s.windows)
        .all(|w| *w == CropWindow::centre()));
    assert!(a == collect(&loader, 0));
}

/// One identity whose single track has exactly two frames, so every epoch reads both.
fn tree_with_a_corrupt_frame(root: &Path) -> std::path::PathBuf {
    SyntheticTree::new(1, 1, 1, 2).write(root).unwrap();
    let bad = root.join("id00000/vid00/00000/frame000002.png");
    fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    bad
}

#[test]
fn corrupt_frame_is_skipped_counted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tree_with_a_corrupt_frame(dir.path());
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(
        Arc::clone(&index),
        &[0],
        LoaderConfig {
            batch_size: 1,
            num_views: 2,
            ..config(1)
        },
    )
    .unwrap();
    for epoch in 0..3 {
        let batches = collect(&loader, epoch);
        let info = &batches[0].samples[0];
        assert_eq!(info.bad_frames, std::slice::from_ref(&bad));
        let good = dir.path().join("id00000/vid00/00000/frame000001.png");
        assert_eq!(info.frame_paths, [good.clone(), good]);
        assert_eq!(batches[0].stats.bad, 1);
        // Both views hold the good frame's colour, never zeros from the failed read.
        let expected = SyntheticTree::colour(0, 1);
        assert_eq!(mean_rgb(&batches[0].target, 0, 32), expected);
        assert_eq!(mean_rgb(batches[0].source(0).unwrap(), 0, 32), expected);
    }
    // Per epoch: the good frame, the bad one, and the good one again as its replacement.
    let stats = loader.stats();
    assert_eq!((stats.bad, stats.reads), (3, 9));
}

#[test]
fn too_many_bad_frames_stop_the_run_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tree_with_a_corrupt_frame(dir.path());
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(
        Arc::clone(&index),
        &[0],
        LoaderConfig {
            batch_size: 1,
            num_views: 2,
            bad_input: BadInputPolicy {
                max_bad_count: Some(1),
                max_bad_fraction: None,
            },
            ..config(2)
        },
    )
    .unwrap();
    assert_eq!(
        collect(&loader, 0).len(),
        1,
        "one failure is within the limit"
    );
    let mut epoch = loader.epoch(1);
    let err = epoch.next().unwrap().unwrap_err();
    assert!(epoch.next().is_none(), "the epoch ends after the error");
    assert!(
        matches!(err, DataError::TooManyBadFrames { bad: 2, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&bad.display().to_string()), "{message}");
}

#[test]
fn unreadable_identity_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(2, 1, 1, 2).write(dir.path()).unwrap();
    for f in ["frame000001.png", "frame000002.png"] {
        fs::write(dir.path().join("id00001/vid00/00000").join(f), b"junk").unwrap();
    }
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(
        Arc::clone(&index),
        &[0, 1],
        LoaderConfig {
            batch_size: 2,
            bad_input: BadInputPolicy {
                max_bad_count: None,
                max_bad_fraction: None,
            },
            ..config(0)
        },
    )
    .unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("id00001"), "{err}");
}

#[test]
fn grayscale_and_odd_sized_frames_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(1, 1, 1, 1).write(dir.path()).unwrap();
    let track = dir.path().join("id00000/vid00/00000");
    image::GrayImage::from_pixel(48, 36, image::Luma([90]))
        .save(track.join("frame000001.png"))
        .unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(
        index,
        &[0],
        LoaderConfig {
            batch_size: 1,
            num_views: 2,
            ..config(0)
        },
    )
    .unwrap();
    let batch = collect(&loader, 0).remove(0);
    assert_eq!(batch.stats.grayscale, 2);
    assert_eq!(batch.stats.non_square, 2);
    assert_eq!(batch.stats.bad, 0);
    assert_eq!(batch.target.len(), 3 * 32 * 32);
    assert!(batch
        .target
        .iter()
        .chain(&batch.sources)
        .all(|&v| (v - 90.0 / 255.0).abs() < 1e-6));
}

#[test]
fn bad_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(3, 1, 1, 1).write(dir.path()).unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let new = |ids: &[usize], cfg: LoaderConfig| Loader::new(Arc::clone(&index), ids, cfg);
    assert!(
        new(&[0, 1, 2], config(0)).is_err(),
        "3 identities cannot fill B = 4"
    );
    assert!(new(&[0, 1, 1], config(0).without_jitter()).is_err());
    assert!(new(&[0, 7], config(0).without_jitter()).is_err());
    let zero = LoaderConfig {
        num_views: 0,
        ..config(0).without_jitter()
    };
    assert!(new(&[0], zero).is_err());
    assert!(new(&[0, 1, 2], config(0).without_jitter()).is_ok());
}

#[cfg(feature = "candle")]
#[test]
fn batches_convert_to_candle_tensors() {
    use candle_core::Device;
    let dir = tempfile::tempdir().unwrap();
    SyntheticTree::new(4, 1, 1, 3).write(dir.path()).unwrap();
    let index = Arc::new(DatasetIndex::build(dir.path()).unwrap());
    let loader = Loader::new(index, &[0, 1, 2, 3], config(1)).unwrap();
    let batch = collect(&loader, 0).remove(0);
    let target = batch.target_tensor(&Device::Cpu).unwrap();
    assert_eq!(target.dims(), &[4, 3, 32, 32]);
    assert_eq!(
        target.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        batch.target
    );
    let sources = batch.source_tensors(&Device::Cpu).unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(
        sources[1].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        batch.source(1).unwrap()
    );
    assert_eq!(
        batch.sources_tensor(&Device::Cpu).unwrap().dims(),
        &[2, 4, 3, 32, 32]
    );
    assert!(batch.source_tensor(2, &Device::Cpu).is_err());
}
