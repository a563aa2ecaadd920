//! Bad input is reported with its path: the warnings of indexing and loading, captured from a
//! global subscriber (the scan and the workers log from their own threads).

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};

use fabnet_data::synthetic::SyntheticTree;
use fabnet_data::{BadInputPolicy, DatasetIndex, Loader, LoaderConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn warnings_name_the_empty_track_and_the_bad_frames() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    SyntheticTree::new(2, 1, 1, 2).write(root).unwrap();
    let empty = root.join("id00000/vid00/99999");
    fs::create_dir_all(&empty).unwrap();
    let corrupt = root.join("id00000/vid00/00000/frame000002.png");
    fs::write(&corrupt, b"junk").unwrap();
    let gray = root.join("id00001/vid00/00000/frame000001.png");
    image::GrayImage::from_pixel(32, 24, image::Luma([7]))
        .save(&gray)
        .unwrap();

    let index = Arc::new(DatasetIndex::build(root).unwrap());
    let config = LoaderConfig {
        batch_size: 2,
        num_views: 2,
        image_size: 16,
        workers: 2,
        bad_input: BadInputPolicy {
            max_bad_count: None,
            max_bad_fraction: None,
        },
        ..LoaderConfig::default()
    };
    let loader = Loader::new(index, &[0, 1], config).unwrap();
    for batch in loader.epoch(0) {
        batch.unwrap();
    }

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let mentions = |needle: &str, path: &std::path::Path| {
        log.lines().any(|l| {
            l.contains("WARN") && l.contains(needle) && l.contains(&*path.to_string_lossy())
        })
    };
    assert!(mentions("empty track", &empty), "{log}");
    assert!(mentions("unreadable frame", &corrupt), "{log}");
    assert!(mentions("grayscale", &gray), "{log}");
    assert!(mentions("not square", &gray), "{log}");
}
