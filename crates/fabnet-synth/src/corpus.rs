//! Whole-corpus generation: talking-head videos with VoxCeleb2-style tracks for the
//! self-supervised identities, and probe sets in real dataset formats for disjoint
//! identities.
//!
//! Layout under the output folder:
//! ```text
//! synth.toml                          the config used
//! splits.txt                          "<split> <identity>" per line; splits: train, probe_train, probe_test
//! videos/id00000/clip000.mp4          H.264, size×size, fps frames per second
//! tracks/id00000/clip000/00001.txt    VoxCeleb2 track file (IDENTITY/VIDEO/TRACK); Reference = clip000
//! truth/id00000/clip000.csv           per-frame landmarks, visibility, pose, AUs, face box
//! probes/train/id00040_000.png        probe-train images, with id00040_000.pts beside each
//! probes/test/id00050_000.png         probe-test images, likewise
//! probes/list_landmarks_align_celeba.txt   all probe images (MAFL 5 points)
//! probes/training.txt, probes/testing.txt  MAFL-style split lists
//! probes/pose.csv, probes/au.csv, probes/au_intensity.csv, probes/visibility.csv
//! summary.json
//! ```
//! Probe image names in every list and CSV are paths relative to `probes/`
//! (`train/id00040_000.png`), so the CSV readers resolve them from the CSV's folder, MAFL
//! readers take `probes/` as the image folder, and 300-W readers scan `probes/train` and
//! `probes/test` for `.pts` files with the image beside them.
//! Identities are numbered globally: `id00000 …` are the training identities, then the
//! probe-train identities, then the probe-test identities, so the three sets are disjoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dynamics::{probe_frame, ClipPlan};
use crate::encode::Mp4Writer;
use crate::error::{Result, SynthError};
use crate::formats;
use crate::head::Head;
use crate::identity::IdentityParams;
use crate::render::{FrameTruth, Renderer};
use crate::seeds::{stream, Stream};

/// Corpus configuration; every field has a default, so a TOML file may set only some.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Master seed: the same seed and config give byte-identical output.
    pub seed: u64,
    /// Identities with videos (the self-supervised training set).
    pub identities: usize,
    /// Clips (videos) per identity.
    pub clips_per_identity: usize,
    /// Frames per clip.
    pub frames_per_clip: usize,
    /// Frame side in pixels (square frames).
    pub size: u32,
    /// Frames per second of the videos.
    pub fps: u32,
    /// Supersampling factor per axis.
    pub supersample: u32,
    /// x264 constant rate factor (0–51, lower is better quality).
    pub crf: u32,
    /// Identities whose images form the probe training split.
    pub probe_train_identities: usize,
    /// Identities whose images form the probe test split.
    pub probe_test_identities: usize,
    /// Probe images per probe identity.
    pub probe_images_per_identity: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            identities: 40,
            clips_per_identity: 4,
            frames_per_clip: 100,
            size: 128,
            fps: 25,
            supersample: 2,
            crf: 18,
            probe_train_identities: 20,
            probe_test_identities: 10,
            probe_images_per_identity: 25,
        }
    }
}

impl SynthConfig {
    /// Parses a TOML config; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| SynthError::ParseConfig {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SynthError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// The config as TOML text.
    pub fn to_toml_string(&self) -> String {
        // Serialising plain integers cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SynthError::InvalidConfig(m));
        if !(16..=1024).contains(&self.size) || !self.size.is_multiple_of(2) {
            return bad(format!("size {} must be even and in [16, 1024]", self.size));
        }
        if !(1..=4).contains(&self.supersample) {
            return bad(format!(
                "supersample {} must be in [1, 4]",
                self.supersample
            ));
        }
        if !(1..=120).contains(&self.fps) {
            return bad(format!("fps {} must be in [1, 120]", self.fps));
        }
        if self.crf > 51 {
            return bad(format!("crf {} must be in [0, 51]", self.crf));
        }
        if self.identities > 0 && (self.clips_per_identity == 0 || self.frames_per_clip == 0) {
            return bad("clips_per_identity and frames_per_clip must be positive".into());
        }
        let total = self.identities + self.probe_train_identities + self.probe_test_identities;
        if total > 99_999 {
            return bad(format!("{total} identities exceed the 5-digit id range"));
        }
        if self.clips_per_identity > 1000 {
            return bad(format!(
                "clips_per_identity {} exceeds 1000",
                self.clips_per_identity
            ));
        }
        if self.frames_per_clip > 999_999 {
            return bad(format!(
                "frames_per_clip {} exceeds 999999",
                self.frames_per_clip
            ));
        }
        Ok(())
    }

    /// Total number of rendered images (video frames plus probe images).
    pub fn total_frames(&self) -> u64 {
        let video = self.identities * self.clips_per_identity * self.frames_per_clip;
        let probe = (self.probe_train_identities + self.probe_test_identities)
            * self.probe_images_per_identity;
        (video + probe) as u64
    }
}

/// Progress of [`render_corpus`], in rendered images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Images rendered so far.
    pub done: u64,
    /// Images to render in all.
    pub total: u64,
}

/// What [`render_corpus`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Output folder (not written to summary.json, which must not depend on it).
    #[serde(skip)]
    pub out_dir: PathBuf,
    /// Videos written.
    pub videos: usize,
    /// Video frames written.
    pub video_frames: u64,
    /// Probe images written.
    pub probe_images: usize,
    /// Training identities (with videos).
    pub train_identities: Vec<String>,
    /// Probe training identities.
    pub probe_train_identities: Vec<String>,
    /// Probe test identities.
    pub probe_test_identities: Vec<String>,
    /// Wall-clock seconds (not written to summary.json, which must be reproducible).
    #[serde(skip)]
    pub seconds: f64,
    /// Rendered (and encoded) images per second (not written to summary.json).
    #[serde(skip)]
    pub images_per_second: f64,
}

/// The name of identity number `i` (VoxCeleb2 style).
pub fn identity_name(i: usize) -> String {
    format!("id{i:05}")
}

/// The name of clip number `c` of an identity.
pub fn clip_name(c: usize) -> String {
    format!("clip{c:03}")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// Writes a file atomically: a temporary sibling, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .map_err(|e| SynthError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomic(path, &buf)
}

/// Renders, encodes and writes one clip; returns its frame count.
fn write_clip(
    cfg: &SynthConfig,
    head: &Head,
    out: &Path,
    ident: usize,
    clip: usize,
    tick: &dyn Fn(),
) -> Result<u64> {
    let id = identity_name(ident);
    let name = clip_name(clip);
    let global_clip = (ident * cfg.clips_per_identity + clip) as u64;
    let duration = cfg.frames_per_clip as f32 / cfg.fps as f32;
    let plan = ClipPlan::from_seed(cfg.seed, global_clip, duration);
    let mut renderer = Renderer::new(cfg.size, cfg.supersample);
    let video = out.join("videos").join(&id).join(format!("{name}.mp4"));
    let mut writer = Mp4Writer::create(&video, cfg.size, cfg.size, cfg.fps, cfg.crf)?;
    let mut truths = Vec::with_capacity(cfg.frames_per_clip);
    for f in 0..cfg.frames_per_clip {
        let fp = plan.at(f as f32 / cfg.fps as f32);
        let (img, truth) = renderer.render(head, &fp);
        writer.push(&img)?;
        truths.push(truth);
        tick();
    }
    writer.finish()?;
    let boxes: Vec<[f32; 4]> = truths.iter().map(|t| t.face_box).collect();
    let track_dir = out.join("tracks").join(&id).join(&name);
    mkdir(&track_dir)?;
    let track = formats::track_file(&id, &name, &boxes, cfg.size, cfg.size);
    write_atomic(&track_dir.join("00001.txt"), track.as_bytes())?;
    let truth_path = out.join("truth").join(&id).join(format!("{name}.csv"));
    write_atomic(&truth_path, formats::clip_truth_csv(&truths).as_bytes())?;
    Ok(truths.len() as u64)
}

/// Writes a full corpus under `out_dir` (see the module docs for the layout). `progress` is
/// called from worker threads after every rendered image.
pub fn render_corpus(
    cfg: &SynthConfig,
    out_dir: &Path,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Summary> {
    cfg.validate()?;
    let start = Instant::now();
    let total = cfg.total_frames();
    let done = AtomicU64::new(0);
    let tick = || {
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress(Progress { done: d, total });
    };
    let n_train = cfg.identities;
    let n_ptrain = cfg.probe_train_identities;
    let n_ptest = cfg.probe_test_identities;
    let train: Vec<String> = (0..n_train).map(identity_name).collect();
    let ptrain: Vec<String> = (n_train..n_train + n_ptrain).map(identity_name).collect();
    let ptest: Vec<String> = (n_train + n_ptrain..n_train + n_ptrain + n_ptest)
        .map(identity_name)
        .collect();

    mkdir(out_dir)?;
    write_atomic(&out_dir.join("synth.toml"), cfg.to_toml_string().as_bytes())?;
    let mut splits = String::new();
    for (split, ids) in [
        ("train", &train),
        ("probe_train", &ptrain),
        ("probe_test", &ptest),
    ] {
        for id in ids.iter() {
            splits.push_str(&format!("{split} {id}\n"));
        }
    }
    write_atomic(&out_dir.join("splits.txt"), splits.as_bytes())?;
    for id in &train {
        mkdir(&out_dir.join("videos").join(id))?;
        mkdir(&out_dir.join("truth").join(id))?;
    }
    tracing::info!(
        identities = n_train,
        clips = cfg.clips_per_identity,
        frames = cfg.frames_per_clip,
        "rendering videos"
    );
    let frames: Vec<u64> = (0..n_train)
        .into_par_iter()
        .map(|i| {
            let head = Head::new(&IdentityParams::from_seed(cfg.seed, i as u64));
            (0..cfg.clips_per_identity)
                .into_par_iter()
                .map(|c| write_clip(cfg, &head, out_dir, i, c, &tick))
                .collect::<Result<Vec<u64>>>()
        })
        .collect::<Result<Vec<Vec<u64>>>>()?
        .into_iter()
        .flatten()
        .collect();

    let probe_dir = out_dir.join("probes");
    let mut probe_rows: Vec<(String, FrameTruth, bool)> = Vec::new();
    if n_ptrain + n_ptest > 0 {
        mkdir(&probe_dir.join("train"))?;
        mkdir(&probe_dir.join("test"))?;
        tracing::info!(
            identities = n_ptrain + n_ptest,
            per_identity = cfg.probe_images_per_identity,
            "rendering probe images"
        );
        let per_id: Vec<Vec<(String, FrameTruth, bool)>> = (n_train..n_train + n_ptrain + n_ptest)
            .into_par_iter()
            .map(|i| {
                let head = Head::new(&IdentityParams::from_seed(cfg.seed, i as u64));
                let mut renderer = Renderer::new(cfg.size, cfg.supersample);
                let is_train = i < n_train + n_ptrain;
                let mut rows = Vec::new();
                for k in 0..cfg.probe_images_per_identity {
                    let mut r = stream(
                        cfg.seed,
                        Stream::Probe,
                        (i * cfg.probe_images_per_identity + k) as u64,
                    );
                    let fp = probe_frame(&mut r);
                    let (img, truth) = renderer.render(&head, &fp);
                    let split = if is_train { "train" } else { "test" };
                    let name = format!("{split}/{}_{k:03}", identity_name(i));
                    write_png(&probe_dir.join(format!("{name}.png")), &img)?;
                    write_atomic(
                        &probe_dir.join(format!("{name}.pts")),
                        formats::pts_file(&truth.landmarks).as_bytes(),
                    )?;
                    rows.push((format!("{name}.png"), truth, is_train));
                    tick();
                }
                Ok(rows)
            })
            .collect::<Result<_>>()?;
        probe_rows = per_id.into_iter().flatten().collect();
        let all: Vec<(String, &FrameTruth)> =
            probe_rows.iter().map(|(n, t, _)| (n.clone(), t)).collect();
        let list = |train: bool| -> String {
            probe_rows
                .iter()
                .filter(|r| r.2 == train)
                .map(|r| format!("{}\n", r.0))
                .collect()
        };
        write_atomic(
            &probe_dir.join("list_landmarks_align_celeba.txt"),
            formats::celeba_landmarks(&all).as_bytes(),
        )?;
        write_atomic(&probe_dir.join("training.txt"), list(true).as_bytes())?;
        write_atomic(&probe_dir.join("testing.txt"), list(false).as_bytes())?;
        write_atomic(
            &probe_dir.join("pose.csv"),
            formats::pose_csv(&all).as_bytes(),
        )?;
        write_atomic(&probe_dir.join("au.csv"), formats::au_csv(&all).as_bytes())?;
        write_atomic(
            &probe_dir.join("au_intensity.csv"),
            formats::au_intensity_csv(&all).as_bytes(),
        )?;
        write_atomic(
            &probe_dir.join("visibility.csv"),
            formats::visibility_csv(&all).as_bytes(),
        )?;
    }

    let seconds = start.elapsed().as_secs_f64();
    let video_frames: u64 = frames.iter().sum();
    let summary = Summary {
        out_dir: out_dir.to_path_buf(),
        videos: frames.len(),
        video_frames,
        probe_images: probe_rows.len(),
        train_identities: train,
        probe_train_identities: ptrain,
        probe_test_identities: ptest,
        seconds,
        images_per_second: (video_frames as f64 + probe_rows.len() as f64) / seconds.max(1e-9),
    };
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    write_atomic(&out_dir.join("summary.json"), json.as_bytes())?;
    tracing::info!(
        seconds,
        images_per_second = summary.images_per_second,
        "corpus written"
    );
    Ok(summary)
}
