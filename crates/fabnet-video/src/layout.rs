//! Dataset folder layouts: finding the videos and track files of a run.
//!
//! **Tracked layout** (VoxCeleb1/2 track files plus full source videos):
//! track files live at `TRACKS/IDENTITY/VIDEO/NNNNN.txt`, as VoxCeleb distributes them.
//! `VIDEO` is the YouTube id of the source video (VoxCeleb2 files name their video only by this
//! folder; the `Reference` header, when present, says the same).
//! The video is looked up as `VIDEOS/IDENTITY/VIDEO.EXT`, then `VIDEOS/VIDEO.EXT`, for the
//! extensions in [`VIDEO_EXTENSIONS`].
//! All track files of one video become one [`VideoJob`], so the video is decoded once.
//!
//! **Face-video layout** (already-cropped face videos, VoxCeleb2's `dev/mp4`):
//! `DIR/IDENTITY/VIDEO/NNNNN.mp4`; each file is its own job with a single track `NNNNN`.
//!
//! Everything is listed in sorted order so runs are reproducible.

use std::path::{Path, PathBuf};

use crate::track::{TrackError, TrackFile};

/// File extensions recognised as videos, in lookup order.
pub const VIDEO_EXTENSIONS: [&str; 7] = ["mp4", "mkv", "webm", "mov", "avi", "m4v", "mpg"];

/// What a track is cut from.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackSource {
    /// Crop each listed frame around the track file's box.
    Boxes(TrackFile),
    /// The video already is a face crop: take whole frames.
    WholeFrames,
}

/// One output track of a video.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackJob {
    /// Output folder name of the track, e.g. `00001`.
    pub name: String,
    /// What the frames are cut from.
    pub source: TrackSource,
}

/// One video and the tracks to extract from it; the output goes to `OUT/identity/video_id/`.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoJob {
    /// The video file.
    pub video: PathBuf,
    /// Identity folder name, e.g. `id10001`.
    pub identity: String,
    /// Video folder name, e.g. the YouTube id `1zcIwhmdeo4`.
    pub video_id: String,
    /// Tracks in name order.
    pub tracks: Vec<TrackJob>,
}

/// A problem found while planning; the rest of the plan is still usable.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A folder could not be listed.
    #[error("cannot list {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A track file could not be read or parsed.
    #[error(transparent)]
    Track(#[from] TrackError),
    /// No video matches a track folder.
    #[error("no video for track folder {tracks}: looked for {}", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingVideo {
        /// The `IDENTITY/VIDEO` track folder.
        tracks: PathBuf,
        /// The candidate video paths tried.
        looked: Vec<PathBuf>,
    },
    /// A file or folder name is not valid UTF-8.
    #[error("name is not valid utf-8: {path}")]
    BadName {
        /// The offending path.
        path: PathBuf,
    },
}

/// The jobs of a run plus the problems met while planning it.
#[derive(Debug, Default)]
pub struct Plan {
    /// Videos to process, sorted by identity and video id.
    pub jobs: Vec<VideoJob>,
    /// Track folders or files that were left out, with the reason.
    pub problems: Vec<LayoutError>,
}

/// Sorted sub-folders (`dirs = true`) or files of `dir`.
fn list(dir: &Path, dirs: bool) -> Result<Vec<PathBuf>, LayoutError> {
    let io = |source| LayoutError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name_hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !name_hidden && path.is_dir() == dirs {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> Result<String, LayoutError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| LayoutError::BadName {
            path: path.to_path_buf(),
        })
}

fn stem_of(path: &Path) -> Result<String, LayoutError> {
    path.file_stem()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| LayoutError::BadName {
            path: path.to_path_buf(),
        })
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Plans a tracked run: track files under `tracks`, source videos under `videos`.
///
/// Fails only if `tracks` itself cannot be listed; unreadable track files, malformed lines and
/// missing videos are collected in [`Plan::problems`].
pub fn plan_tracked(videos: &Path, tracks: &Path) -> Result<Plan, LayoutError> {
    let mut plan = Plan::default();
    for id_dir in list(tracks, true)? {
        let identity = match name_of(&id_dir) {
            Ok(n) => n,
            Err(e) => {
                plan.problems.push(e);
                continue;
            }
        };
        let video_dirs = match list(&id_dir, true) {
            Ok(v) => v,
            Err(e) => {
                plan.problems.push(e);
                continue;
            }
        };
        for video_dir in video_dirs {
            let step = plan_track_folder(videos, &identity, &video_dir);
            match step {
                Ok((job, problems)) => {
                    plan.problems.extend(problems);
                    if let Some(job) = job {
                        plan.jobs.push(job);
                    }
                }
                Err(e) => plan.problems.push(e),
            }
        }
    }
    Ok(plan)
}

/// One `IDENTITY/VIDEO` track folder: its job (if any track parsed) and the per-file problems.
fn plan_track_folder(
    videos: &Path,
    identity: &str,
    video_dir: &Path,
) -> Result<(Option<VideoJob>, Vec<LayoutError>), LayoutError> {
    let video_id = name_of(video_dir)?;
    let mut looked = Vec::new();
    for base in [videos.join(identity), videos.to_path_buf()] {
        for ext in VIDEO_EXTENSIONS {
            looked.push(base.join(format!("{video_id}.{ext}")));
        }
    }
    let Some(video) = looked.iter().find(|p| p.is_file()).cloned() else {
        return Err(LayoutError::MissingVideo {
            tracks: video_dir.to_path_buf(),
            looked,
        });
    };
    let mut problems = Vec::new();
    let mut tracks = Vec::new();
    for file in list(video_dir, false)? {
        if !has_extension(&file, &["txt"]) {
            continue;
        }
        match (stem_of(&file), TrackFile::read(&file)) {
            (Ok(name), Ok(track)) => tracks.push(TrackJob {
                name,
                source: TrackSource::Boxes(track),
            }),
            (Err(e), _) => problems.push(e),
            (_, Err(e)) => problems.push(e.into()),
        }
    }
    let job = (!tracks.is_empty()).then(|| VideoJob {
        video,
        identity: identity.to_string(),
        video_id,
        tracks,
    });
    Ok((job, problems))
}

/// Plans a face-video run over `dir/IDENTITY/VIDEO/NNNNN.{mp4,...}`.
pub fn plan_face_videos(dir: &Path) -> Result<Plan, LayoutError> {
    let mut plan = Plan::default();
    for id_dir in list(dir, true)? {
        let identity = match name_of(&id_dir) {
            Ok(n) => n,
            Err(e) => {
                plan.problems.push(e);
                continue;
            }
        };
        let video_dirs = match list(&id_dir, true) {
            Ok(v) => v,
            Err(e) => {
                plan.problems.push(e);
                continue;
            }
        };
        for video_dir in video_dirs {
            let files = match (name_of(&video_dir), list(&video_dir, false)) {
                (Ok(video_id), Ok(files)) => (video_id, files),
                (Err(e), _) | (_, Err(e)) => {
                    plan.problems.push(e);
                    continue;
                }
            };
            let (video_id, files) = files;
            for file in files {
                if !has_extension(&file, &VIDEO_EXTENSIONS) {
                    continue;
                }
                match stem_of(&file) {
                    Ok(name) => plan.jobs.push(VideoJob {
                        video: file,
                        identity: identity.clone(),
                        video_id: video_id.clone(),
                        tracks: vec![TrackJob {
                            name,
                            source: TrackSource::WholeFrames,
                        }],
                    }),
                    Err(e) => plan.problems.push(e),
                }
            }
        }
    }
    Ok(plan)
}
