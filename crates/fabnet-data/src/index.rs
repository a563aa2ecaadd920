//! Index of an `IDENTITY/VIDEO/TRACK/frame*` tree, with a cache file at the root.
//!
//! Frame files are `frameNNNN.jpg`, `frameNNNN.jpeg` or `frameNNNN.png` (any number of digits, the
//! `frame` prefix optional, extension case-insensitive), ordered by their number.
//! Hidden entries (names starting with `.`) and other files are ignored.
//! Tracks without frames, videos without such tracks and identities without such videos are
//! skipped with a warning.
//!
//! **Cache rule.** [`DatasetIndex::open`] keeps the index in [`INDEX_FILE_NAME`] at the root and
//! reuses it only while the tree is unchanged, judged like this:
//! 1. the root's list of identity folders equals the cached one (the root itself is listed, not
//!    stamped, because writing the cache changes the root's mtime);
//! 2. every identity, video and track folder seen at build time (empty ones included) still
//!    exists and has the same modification time, to the nanosecond; adding, removing or renaming
//!    an entry changes its folder's mtime;
//! 3. folders whose mtime lies within two seconds of the build time (or later) are "racy": on a
//!    filesystem with coarse timestamps a change could keep the same mtime, so their entry count
//!    and a hash of their entry names are compared too.
//!
//! Anything else (a missing, unreadable or older-format cache) triggers a full, parallel rebuild,
//! written back atomically.
//! Rewriting a frame's bytes in place is not detected, and does not need to be: the index holds
//! names only.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::error::{DataError, Result};

/// Name of the index cache file written at the dataset root.
pub const INDEX_FILE_NAME: &str = ".fabnet-index.json";

const CACHE_VERSION: u32 = 1;

/// Folders modified this close to (or after) the build time are re-listed on validation.
const RACY_WINDOW_NS: u64 = 2_000_000_000;

/// One face track: a folder of frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// Folder name.
    pub name: String,
    /// Frame file names, sorted by frame number; never empty.
    pub frames: Vec<String>,
}

/// One video of an identity: a folder of tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    /// Folder name.
    pub name: String,
    /// Non-empty tracks, sorted by name; never empty.
    pub tracks: Vec<Track>,
}

/// One identity (person): a folder of videos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Folder name.
    pub name: String,
    /// Videos with at least one non-empty track, sorted by name; never empty.
    pub videos: Vec<Video>,
}

/// Position of a track in a [`DatasetIndex`]: indices into identities, their videos, their tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrackId {
    /// Index into [`DatasetIndex::identities`].
    pub identity: usize,
    /// Index into that identity's `videos`.
    pub video: usize,
    /// Index into that video's `tracks`.
    pub track: usize,
}

/// Whether [`DatasetIndex::open`] reused the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// The cache matched the tree and was used as is.
    Fresh,
    /// The tree was scanned again.
    Rebuilt {
        /// Why the cache could not be used, in words.
        reason: String,
    },
}

/// The non-empty tracks of a dataset tree, sorted by identity, video and track name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetIndex {
    root: PathBuf,
    identities: Vec<Identity>,
}

/// Fingerprint of one folder, for the cache rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DirStamp {
    /// Relative to the root, `/`-separated.
    path: String,
    mtime_ns: u64,
    entries: u64,
    names_hash: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    built_at_ns: u64,
    root_dirs: Vec<String>,
    stamps: Vec<DirStamp>,
    identities: Vec<Identity>,
}

struct Listing {
    stamp: DirStamp,
    dirs: Vec<String>,
    files: Vec<String>,
}

impl DatasetIndex {
    /// Scans `root` (in parallel) without reading or writing the cache.
    pub fn build(root: impl AsRef<Path>) -> Result<Self> {
        Ok(scan(root.as_ref())?.1)
    }

    /// Loads the cached index of `root` if the tree is unchanged (see the module docs for the
    /// rule), else scans the tree and rewrites the cache atomically.
    /// A cache that cannot be written (read-only root) only logs a warning.
    pub fn open(root: impl AsRef<Path>) -> Result<(Self, CacheStatus)> {
        let root = root.as_ref();
        let cache_path = root.join(INDEX_FILE_NAME);
        let reason = match read_cache(&cache_path) {
            Ok(cache) => match staleness(root, &cache) {
                None => {
                    debug!("using index cache {}", cache_path.display());
                    let index = DatasetIndex {
                        root: root.to_path_buf(),
                        identities: cache.identities,
                    };
                    return Ok((index, CacheStatus::Fresh));
                }
                Some(reason) => reason,
            },
            Err(reason) => reason,
        };
        info!("indexing {}: {reason}", root.display());
        let (cache, index) = scan(root)?;
        if let Err(e) = write_cache(&cache_path, &cache) {
            warn!("{e}; continuing without a cache");
        }
        info!(
            "indexed {}: {} identities, {} tracks, {} frames",
            root.display(),
            index.identities.len(),
            index.num_tracks(),
            index.num_frames()
        );
        Ok((index, CacheStatus::Rebuilt { reason }))
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All identities with at least one non-empty track, sorted by name.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// Position of the identity folder `name`, if indexed.
    pub fn identity_index(&self, name: &str) -> Option<usize> {
        self.identities
            .binary_search_by(|i| i.name.as_str().cmp(name))
            .ok()
    }

    /// The track at `id`.
    ///
    /// # Panics
    /// If `id` does not come from this index.
    pub fn track(&self, id: TrackId) -> &Track {
        &self.identities[id.identity].videos[id.video].tracks[id.track]
    }

    /// `IDENTITY/VIDEO/TRACK`, relative to the root, for messages.
    ///
    /// # Panics
    /// If `id` does not come from this index.
    pub fn track_name(&self, id: TrackId) -> String {
        let identity = &self.identities[id.identity];
        let video = &identity.videos[id.video];
        format!(
            "{}/{}/{}",
            identity.name, video.name, video.tracks[id.track].name
        )
    }

    /// The track's folder.
    ///
    /// # Panics
    /// If `id` does not come from this index.
    pub fn track_dir(&self, id: TrackId) -> PathBuf {
        let identity = &self.identities[id.identity];
        let video = &identity.videos[id.video];
        self.root
            .join(&identity.name)
            .join(&video.name)
            .join(&video.tracks[id.track].name)
    }

    /// Path of frame number `frame` (position in [`Track::frames`]) of track `id`.
    ///
    /// # Panics
    /// If `id` or `frame` does not come from this index.
    pub fn frame_path(&self, id: TrackId, frame: usize) -> PathBuf {
        self.track_dir(id).join(&self.track(id).frames[frame])
    }

    /// Every track, in index order.
    pub fn track_ids(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.identities
            .iter()
            .enumerate()
            .flat_map(|(i, identity)| {
                identity
                    .videos
                    .iter()
                    .enumerate()
                    .flat_map(move |(v, video)| {
                        (0..video.tracks.len()).map(move |t| TrackId {
                            identity: i,
                            video: v,
                            track: t,
                        })
                    })
            })
    }

    /// Number of non-empty tracks.
    pub fn num_tracks(&self) -> usize {
        self.identities
            .iter()
            .flat_map(|i| &i.videos)
            .map(|v| v.tracks.len())
            .sum()
    }

    /// Number of frames in all tracks.
    pub fn num_frames(&self) -> usize {
        self.identities
            .iter()
            .flat_map(|i| &i.videos)
            .flat_map(|v| &v.tracks)
            .map(|t| t.frames.len())
            .sum()
    }
}

/// The frame number of a frame file name (`frame000123.jpg` → 123), or `None` if the name is not
/// a frame: `[frame]DIGITS.(jpg|jpeg|png)`, extension case-insensitive.
pub fn frame_number(name: &str) -> Option<u64> {
    let (stem, ext) = name.rsplit_once('.')?;
    if !["jpg", "jpeg", "png"]
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e))
    {
        return None;
    }
    let digits = stem.strip_prefix("frame").unwrap_or(stem);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn now_ns() -> u64 {
    system_time_ns(SystemTime::now())
}

fn system_time_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// FNV-1a over the sorted entry names: stable across Rust versions, unlike `DefaultHasher`.
fn names_hash(sorted_names: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in sorted_names {
        for &b in name.as_bytes().iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn join_rel(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Lists a folder; the mtime is read before the entries so that a concurrent change always
/// leaves the stamp older than the folder.
fn list_dir(root: &Path, rel: &str) -> Result<Listing> {
    let path = join_rel(root, rel);
    let meta = fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
    let mtime_ns = meta.modified().map(system_time_ns).unwrap_or(0);
    let mut names = Vec::new();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| DataError::io(&path, e))? {
        let entry = entry.map_err(|e| DataError::io(&path, e))?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                warn!(
                    "ignoring non-UTF-8 name {} in {}",
                    raw.to_string_lossy(),
                    path.display()
                );
                names.push(raw.to_string_lossy().into_owned());
                continue;
            }
        };
        names.push(name.clone());
        if name.starts_with('.') {
            continue;
        }
        let mut file_type = entry
            .file_type()
            .map_err(|e| DataError::io(entry.path(), e))?;
        if file_type.is_symlink() {
            // Follow links so that trees assembled from symlinked folders index normally.
            file_type = fs::metadata(entry.path())
                .map_err(|e| DataError::io(entry.path(), e))?
                .file_type();
        }
        if file_type.is_dir() {
            dirs.push(name);
        } else if file_type.is_file() {
            files.push(name);
        }
    }
    names.sort_unstable();
    dirs.sort_unstable();
    files.sort_unstable();
    Ok(Listing {
        stamp: DirStamp {
            path: rel.to_string(),
            mtime_ns,
            entries: names.len() as u64,
            names_hash: names_hash(&names),
        },
        dirs,
        files,
    })
}

fn scan(root: &Path) -> Result<(CacheFile, DatasetIndex)> {
    let built_at_ns = now_ns();
    let top = list_dir(root, "")?;
    let scanned = top
        .dirs
        .par_iter()
        .map(|name| scan_identity(root, name))
        .collect::<Result<Vec<_>>>()?;
    let mut stamps = Vec::new();
    let mut identities = Vec::new();
    for (identity, identity_stamps) in scanned {
        stamps.extend(identity_stamps);
        identities.extend(identity);
    }
    if identities.is_empty() {
        return Err(DataError::EmptyDataset(root.to_path_buf()));
    }
    let cache = CacheFile {
        version: CACHE_VERSION,
        built_at_ns,
        root_dirs: top.dirs,
        stamps,
        identities: identities.clone(),
    };
    let index = DatasetIndex {
        root: root.to_path_buf(),
        identities,
    };
    Ok((cache, index))
}

fn scan_identity(root: &Path, name: &str) -> Result<(Option<Identity>, Vec<DirStamp>)> {
    let listing = list_dir(root, name)?;
    let scanned = listing
        .dirs
        .par_iter()
        .map(|video| scan_video(root, &format!("{name}/{video}"), video))
        .collect::<Result<Vec<_>>>()?;
    let mut stamps = vec![listing.stamp];
    let mut videos = Vec::new();
    for (video, video_stamps) in scanned {
        stamps.extend(video_stamps);
        videos.extend(video);
    }
    if videos.is_empty() {
        warn!(
            "skipping identity {}: no video with a non-empty track",
            root.join(name).display()
        );
        return Ok((None, stamps));
    }
    let identity = Identity {
        name: name.to_string(),
        videos,
    };
    Ok((Some(identity), stamps))
}

fn scan_video(root: &Path, rel: &str, name: &str) -> Result<(Option<Video>, Vec<DirStamp>)> {
    let listing = list_dir(root, rel)?;
    let scanned = listing
        .dirs
        .par_iter()
        .map(|track| scan_track(root, &format!("{rel}/{track}"), track))
        .collect::<Result<Vec<_>>>()?;
    let mut stamps = vec![listing.stamp];
    let mut tracks = Vec::new();
    for (track, stamp) in scanned {
        stamps.push(stamp);
        tracks.extend(track);
    }
    if tracks.is_empty() {
        warn!(
            "skipping video {}: no non-empty track",
            root.join(rel).display()
        );
        return Ok((None, stamps));
    }
    let video = Video {
        name: name.to_string(),
        tracks,
    };
    Ok((Some(video), stamps))
}

fn scan_track(root: &Path, rel: &str, name: &str) -> Result<(Option<Track>, DirStamp)> {
    let listing = list_dir(root, rel)?;
    let mut frames: Vec<(u64, String)> = listing
        .files
        .into_iter()
        .filter_map(|f| frame_number(&f).map(|n| (n, f)))
        .collect();
    if frames.is_empty() {
        warn!("skipping empty track {}", root.join(rel).display());
        return Ok((None, listing.stamp));
    }
    frames.sort_unstable();
    let track = Track {
        name: name.to_string(),
        frames: frames.into_iter().map(|(_, f)| f).collect(),
    };
    Ok((Some(track), listing.stamp))
}

fn read_cache(path: &Path) -> std::result::Result<CacheFile, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no index cache yet".to_string())
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cache: CacheFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if cache.version != CACHE_VERSION {
        return Err(format!(
            "{} has format version {}, expected {CACHE_VERSION}",
            path.display(),
            cache.version
        ));
    }
    // The sampler relies on every level being non-empty; a hand-edited cache must not break it.
    let consistent = !cache.identities.is_empty()
        && cache.identities.iter().all(|i| {
            !i.videos.is_empty()
                && i.videos
                    .iter()
                    .all(|v| !v.tracks.is_empty() && v.tracks.iter().all(|t| !t.frames.is_empty()))
        })
        && cache.identities.windows(2).all(|w| w[0].name < w[1].name);
    if !consistent {
        return Err(format!("{} is inconsistent", path.display()));
    }
    Ok(cache)
}

/// Why the cache no longer describes the tree, or `None` if it still does.
fn staleness(root: &Path, cache: &CacheFile) -> Option<String> {
    match list_dir(root, "") {
        Ok(top) if top.dirs == cache.root_dirs => {}
        Ok(_) => return Some("the set of identity folders changed".to_string()),
        Err(e) => return Some(e.to_string()),
    }
    cache
        .stamps
        .par_iter()
        .find_map_any(|stamp| stamp_staleness(root, stamp, cache.built_at_ns))
}

fn stamp_staleness(root: &Path, stamp: &DirStamp, built_at_ns: u64) -> Option<String> {
    let path = join_rel(root, &stamp.path);
    let mtime_ns = match fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(t) => system_time_ns(t),
        Err(_) => return Some(format!("{} is gone or unreadable", path.display())),
    };
    if mtime_ns != stamp.mtime_ns {
        return Some(format!("{} was modified", path.display()));
    }
    if mtime_ns.saturating_add(RACY_WINDOW_NS) >= built_at_ns {
        match list_dir(root, &stamp.path) {
            Ok(now)
                if now.stamp.entries == stamp.entries
                    && now.stamp.names_hash == stamp.names_hash => {}
            Ok(_) => {
                return Some(format!(
                    "{} changed within its timestamp resolution",
                    path.display()
                ))
            }
            Err(e) => return Some(e.to_string()),
        }
    }
    None
}

fn write_cache(path: &Path, cache: &CacheFile) -> Result<()> {
    let cache_err = |reason: String| DataError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = serde_json::to_vec(cache).map_err(|e| cache_err(e.to_string()))?;
    let tmp = path.with_file_name(format!("{INDEX_FILE_NAME}.tmp{}", std::process::id()));
    fs::write(&tmp, bytes)
        .map_err(|e| cache_err(format!("cannot write {}: {e}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(|e| {
        // Best effort: a stale temp file is hidden and harmless, but tidier gone.
        let _ = fs::remove_file(&tmp);
        cache_err(format!("cannot rename {}: {e}", tmp.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{write_flat_png, SyntheticTree};

    fn write_png(path: &Path, size: u32, colour: [u8; 3]) {
        write_flat_png(path, size, colour).unwrap();
    }

    #[test]
    fn frame_names_parse_and_sort_by_number() {
        assert_eq!(frame_number("frame000123.jpg"), Some(123));
        assert_eq!(frame_number("frame7.PNG"), Some(7));
        assert_eq!(frame_number("0042.jpeg"), Some(42));
        assert_eq!(frame_number("frame.jpg"), None);
        assert_eq!(frame_number("frame12a.jpg"), None);
        assert_eq!(frame_number("frame12.gif"), None);
        assert_eq!(frame_number("notes.txt"), None);

        let dir = tempfile::tempdir().unwrap();
        let track = dir.path().join("a/v/t");
        for name in ["frame10.png", "frame9.png", "frame100.png", "readme.txt"] {
            write_png(&track.join(name), 8, [1, 2, 3]);
        }
        let index = DatasetIndex::build(dir.path()).unwrap();
        assert_eq!(
            index.identities()[0].videos[0].tracks[0].frames,
            ["frame9.png", "frame10.png", "frame100.png"]
        );
    }

    #[test]
    fn empty_tracks_videos_and_identities_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_png(&root.join("id1/v1/t1/frame1.png"), 8, [0, 0, 0]);
        fs::create_dir_all(root.join("id1/v1/t2")).unwrap();
        fs::create_dir_all(root.join("id1/v2/t1")).unwrap();
        fs::create_dir_all(root.join("id2/v1/t1")).unwrap();
        // A track holding only a non-frame file counts as empty.
        fs::create_dir_all(root.join("id1/v1/t3")).unwrap();
        fs::write(root.join("id1/v1/t3/x.txt"), b"").unwrap();
        let index = DatasetIndex::build(root).unwrap();
        assert_eq!(index.identities().len(), 1);
        assert_eq!(index.identities()[0].videos.len(), 1);
        assert_eq!(index.identities()[0].videos[0].tracks.len(), 1);
        assert_eq!(index.num_frames(), 1);
        assert!(matches!(
            DatasetIndex::build(root.join("id2")),
            Err(DataError::EmptyDataset(_))
        ));
    }

    #[test]
    fn cache_is_reused_then_rebuilt_after_adding_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(2, 2, 2, 3).write(dir.path()).unwrap();
        let (first, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }));
        assert!(dir.path().join(INDEX_FILE_NAME).is_file());
        let (second, status) = DatasetIndex::open(dir.path()).unwrap();
        assert_eq!(status, CacheStatus::Fresh);
        assert_eq!(first, second);

        let id = TrackId {
            identity: 1,
            video: 0,
            track: 1,
        };
        write_png(&first.track_dir(id).join("frame000099.png"), 8, [9, 9, 9]);
        let (third, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }), "{status:?}");
        assert_eq!(third.track(id).frames.len(), 4);
        assert_eq!(third.track(id).frames[3], "frame000099.png");
        assert_eq!(third.num_frames(), first.num_frames() + 1);
    }

    #[test]
    fn racy_change_with_unchanged_mtime_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(1, 1, 1, 2).write(dir.path()).unwrap();
        let (index, _) = DatasetIndex::open(dir.path()).unwrap();
        let id = TrackId {
            identity: 0,
            video: 0,
            track: 0,
        };
        let track_dir = index.track_dir(id);
        let before = fs::metadata(&track_dir).unwrap().modified().unwrap();
        write_png(&track_dir.join("frame000050.png"), 8, [1, 1, 1]);
        // Simulate a filesystem whose timestamps did not tick.
        fs::File::open(&track_dir)
            .unwrap()
            .set_modified(before)
            .unwrap();
        assert_eq!(
            fs::metadata(&track_dir).unwrap().modified().unwrap(),
            before
        );
        let (index, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }), "{status:?}");
        assert_eq!(index.track(id).frames.len(), 3);
    }

    #[test]
    fn new_identity_and_removed_track_trigger_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(2, 1, 2, 2).write(dir.path()).unwrap();
        DatasetIndex::open(dir.path()).unwrap();
        write_png(&dir.path().join("zz/v/t/frame1.png"), 8, [1, 1, 1]);
        let (index, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }));
        assert_eq!(index.identities().len(), 3);
        let gone = index.track_dir(TrackId {
            identity: 0,
            video: 0,
            track: 1,
        });
        fs::remove_dir_all(gone).unwrap();
        let (index, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }));
        assert_eq!(index.identities()[0].videos[0].tracks.len(), 1);
    }

    #[test]
    fn corrupt_cache_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(1, 1, 1, 2).write(dir.path()).unwrap();
        fs::write(dir.path().join(INDEX_FILE_NAME), b"{not json").unwrap();
        let (index, status) = DatasetIndex::open(dir.path()).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt { .. }));
        assert_eq!(index.num_frames(), 2);
        assert_eq!(
            DatasetIndex::open(dir.path()).unwrap().1,
            CacheStatus::Fresh
        );
    }
}
