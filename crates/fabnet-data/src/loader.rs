//! The batch loader: worker threads decode and transform samples of a precomputed
//! [`EpochPlan`] ahead of the consumer, within a bounded prefetch window, and the consumer
//! reassembles them in plan order.
//!
//! **Determinism.** Everything random is fixed by (seed, epoch, sample index) before any file is
//! read, and a sample's recovery from unreadable frames depends only on that sample, so batches
//! are bit-identical whatever the number of workers or the order in which samples finish.
//!
//! **Bad input.** A frame that cannot be read (corrupt, truncated, missing) is skipped and
//! counted, and replaced by another frame of the same track drawn from (seed, epoch, sample,
//! retry); if the whole track is unreadable, the sample is redrawn from the identity. The run
//! stops with [`DataError::TooManyBadFrames`], naming the last bad files, once the failures
//! exceed the [`BadInputPolicy`]. Grayscale, non-RGB and non-square frames are converted and
//! reported with their path (the first few of each kind as warnings, the rest at debug level).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rand::Rng;
use tracing::{debug, info, warn};

use crate::batch::{Batch, LoadStats, SampleInfo};
use crate::error::{DataError, Result};
use crate::index::{DatasetIndex, TrackId};
use crate::rng::{derive_rng, Domain};
use crate::sampler::{draw_track_frames, plan_epoch, EpochPlan, SamplePlan};
use crate::transform::{load_frame, transform_frame_into, FrameIssues, RESIZE};

/// The bad-frame fraction limit applies only once this many frames have been read, so that one
/// early failure does not stop a run.
pub const FRACTION_MIN_READS: u64 = 200;

/// Replacement draws allowed for one sample before it fails with
/// [`DataError::UnreadableSample`].
const MAX_RETRIES: u32 = 32;

/// Warnings logged per kind of frame problem before the rest go to debug level.
const WARN_LIMIT: usize = 8;

/// How many bad frame paths a [`DataError::TooManyBadFrames`] names.
const LAST_BAD_KEPT: usize = 5;

/// When unreadable frames stop the run; failures are counted over the loader's lifetime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadInputPolicy {
    /// Stop once more than this many reads have failed; `None` for no count limit.
    pub max_bad_count: Option<u64>,
    /// Stop once more than this fraction of reads has failed, checked after
    /// [`FRACTION_MIN_READS`] reads; `None` for no fraction limit.
    pub max_bad_fraction: Option<f64>,
}

impl Default for BadInputPolicy {
    /// No count limit; at most 5 % of reads may fail.
    fn default() -> Self {
        BadInputPolicy {
            max_bad_count: None,
            max_bad_fraction: Some(0.05),
        }
    }
}

impl BadInputPolicy {
    /// The exceeded limit, in words, if `stats` breaks this policy.
    fn exceeded(&self, stats: &LoadStats) -> Option<String> {
        if let Some(max) = self.max_bad_count {
            if stats.bad > max {
                return Some(format!("limit {max} failed reads"));
            }
        }
        if let Some(max) = self.max_bad_fraction {
            if stats.reads >= FRACTION_MIN_READS && stats.bad as f64 > max * stats.reads as f64 {
                return Some(format!("limit {:.2} % of reads", max * 100.0));
            }
        }
        None
    }
}

/// Settings of a [`Loader`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// B, samples per batch.
    pub batch_size: usize,
    /// V, frames per sample: the target plus V−1 sources (2 for one source, 4 for three).
    pub num_views: usize,
    /// S, side of the output images, pixels.
    pub image_size: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Jittered crops for training; `false` gives the centre crop for validation and embedding.
    pub jitter: bool,
    /// Drop the last, incomplete batch of an epoch.
    pub drop_last: bool,
    /// Decoding threads; 0 decodes on the calling thread.
    pub workers: usize,
    /// Batches that workers may prepare ahead of the one being consumed (at least 1).
    pub prefetch_batches: usize,
    /// When unreadable frames stop the run.
    pub bad_input: BadInputPolicy,
}

impl Default for LoaderConfig {
    /// The paper's training setting at S = 256: B = 32, one source, jitter, one worker per core.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            num_views: 2,
            image_size: RESIZE,
            seed: 0,
            jitter: true,
            drop_last: true,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch_batches: 2,
            bad_input: BadInputPolicy::default(),
        }
    }
}

impl LoaderConfig {
    /// The same settings for validation or embedding: no jitter, keep the last batch.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self.drop_last = false;
        self
    }

    /// Rejects out-of-range settings.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch size", self.batch_size),
            ("num_views", self.num_views),
            ("image size", self.image_size as usize),
            ("prefetch_batches", self.prefetch_batches),
        ];
        for (what, value) in positive {
            if value == 0 {
                return Err(DataError::config(what, "0 must be at least 1"));
            }
        }
        if let Some(f) = self.bad_input.max_bad_fraction {
            if !(0.0..=1.0).contains(&f) {
                return Err(DataError::config(
                    "max bad fraction",
                    format!("{f} is outside [0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

/// Produces the batches of each epoch for a set of identities of a [`DatasetIndex`].
#[derive(Debug)]
pub struct Loader {
    index: Arc<DatasetIndex>,
    identities: Vec<usize>,
    config: LoaderConfig,
    totals: Arc<Mutex<Totals>>,
    reporter: Arc<Reporter>,
}

#[derive(Debug, Default)]
struct Totals {
    stats: LoadStats,
    last_bad: VecDeque<PathBuf>,
}

impl Loader {
    /// A loader over `identities` (indices into `index`, e.g. [`crate::Split::train`]).
    pub fn new(
        index: Arc<DatasetIndex>,
        identities: &[usize],
        config: LoaderConfig,
    ) -> Result<Loader> {
        config.validate()?;
        let n = index.identities().len();
        let mut seen = HashSet::new();
        for &i in identities {
            if i >= n {
                return Err(DataError::config(
                    "identities",
                    format!("index {i} is out of range for {n} identities"),
                ));
            }
            if !seen.insert(i) {
                let name = &index.identities()[i].name;
                return Err(DataError::config(
                    "identities",
                    format!("{name} is listed twice"),
                ));
            }
        }
        if identities.is_empty() || (config.drop_last && identities.len() < config.batch_size) {
            return Err(DataError::config(
                "identities",
                format!(
                    "{} identities cannot fill one batch of {} (drop_last {})",
                    identities.len(),
                    config.batch_size,
                    config.drop_last
                ),
            ));
        }
        Ok(Loader {
            index,
            identities: identities.to_vec(),
            config,
            totals: Arc::default(),
            reporter: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset index.
    pub fn index(&self) -> &Arc<DatasetIndex> {
        &self.index
    }

    /// The identities visited each epoch.
    pub fn identities(&self) -> &[usize] {
        &self.identities
    }

    /// Samples per epoch: one per identity (some dropped with `drop_last`).
    pub fn samples_per_epoch(&self) -> usize {
        if self.config.drop_last {
            self.batches_per_epoch() * self.config.batch_size
        } else {
            self.identities.len()
        }
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.identities.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The samples of `epoch`, without reading any file.
    pub fn plan(&self, epoch: u64) -> EpochPlan {
        plan_epoch(
            &self.index,
            &self.identities,
            self.config.num_views,
            self.config.jitter,
            self.config.seed,
            epoch,
        )
    }

    /// Read and failure counts over this loader's lifetime, up to the last batch handed out.
    pub fn stats(&self) -> LoadStats {
        lock(&self.totals).stats
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first_batch` on, for resuming mid-epoch: the batches
    /// equal those of an uninterrupted [`Loader::epoch`], and skipped ones are never read.
    pub fn epoch_from(&self, epoch: u64, first_batch: usize) -> EpochIter {
        let plan = Arc::new(self.plan(epoch));
        let ctx = Arc::new(Ctx {
            index: Arc::clone(&self.index),
            plan,
            num_views: self.config.num_views,
            image_size: self.config.image_size,
            seed: self.config.seed,
            reporter: Arc::clone(&self.reporter),
        });
        let batch_size = self.config.batch_size;
        let num_batches = self.batches_per_epoch();
        let start = (first_batch * batch_size).min(self.identities.len());
        let end = (num_batches * batch_size).min(self.identities.len());
        let workers = if self.config.workers == 0 || start >= end {
            Workers::Inline
        } else {
            let shared = Arc::new(Shared {
                state: Mutex::new(JobState {
                    next: start,
                    end,
                    limit: (start + self.config.prefetch_batches * batch_size).min(end),
                    stop: false,
                }),
                wake: Condvar::new(),
            });
            let (tx, rx) = channel();
            let handles = (0..self.config.workers)
                .map(|_| {
                    let (ctx, shared, tx) = (Arc::clone(&ctx), Arc::clone(&shared), tx.clone());
                    std::thread::spawn(move || worker(&ctx, &shared, &tx))
                })
                .collect();
            Workers::Threads {
                shared,
                rx,
                pending: HashMap::new(),
                handles,
            }
        };
        EpochIter {
            ctx,
            totals: Arc::clone(&self.totals),
            policy: self.config.bad_input,
            prefetch_batches: self.config.prefetch_batches,
            batch_size,
            num_batches,
            first_batch,
            next_batch: first_batch,
            epoch_stats: LoadStats::default(),
            finished: false,
            workers,
        }
    }
}

/// What every worker of an epoch shares, read-only.
#[derive(Debug)]
struct Ctx {
    index: Arc<DatasetIndex>,
    plan: Arc<EpochPlan>,
    num_views: usize,
    image_size: u32,
    seed: u64,
    reporter: Arc<Reporter>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<JobState>,
    wake: Condvar,
}

#[derive(Debug)]
struct JobState {
    /// Next sample index to hand out.
    next: usize,
    /// One past the last sample of the epoch's batches.
    end: usize,
    /// Workers may not start samples at or beyond this index (the prefetch bound).
    limit: usize,
    stop: bool,
}

type SampleResult = Result<LoadedSample>;

#[derive(Debug)]
enum Workers {
    Inline,
    Threads {
        shared: Arc<Shared>,
        rx: Receiver<(usize, SampleResult)>,
        pending: HashMap<usize, SampleResult>,
        handles: Vec<JoinHandle<()>>,
    },
}

/// The batches of one epoch, produced in order; ends after the last batch or the first error.
/// Dropping it stops and joins the workers.
#[derive(Debug)]
pub struct EpochIter {
    ctx: Arc<Ctx>,
    totals: Arc<Mutex<Totals>>,
    policy: BadInputPolicy,
    prefetch_batches: usize,
    batch_size: usize,
    num_batches: usize,
    first_batch: usize,
    next_batch: usize,
    epoch_stats: LoadStats,
    finished: bool,
    workers: Workers,
}

impl EpochIter {
    /// The plan being loaded.
    pub fn plan(&self) -> &EpochPlan {
        &self.ctx.plan
    }

    /// Total batches of the epoch (including any skipped by [`Loader::epoch_from`]).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    fn next_batch(&mut self) -> Result<Batch> {
        let b = self.next_batch;
        let n = self.ctx.plan.samples.len();
        let range = b * self.batch_size..((b + 1) * self.batch_size).min(n);
        let mut loaded = Vec::with_capacity(range.len());
        for j in range.clone() {
            let sample = match &mut self.workers {
                Workers::Inline => load_sample(&self.ctx, &self.ctx.plan.samples[j]),
                Workers::Threads { rx, pending, .. } => loop {
                    if let Some(result) = pending.remove(&j) {
                        break result;
                    }
                    match rx.recv() {
                        Ok((k, result)) => {
                            pending.insert(k, result);
                        }
                        Err(_) => {
                            break Err(DataError::WorkerPanic {
                                sample: j,
                                message: "all workers exited early".to_string(),
                            })
                        }
                    }
                },
            };
            loaded.push(sample?);
        }
        if let Workers::Threads { shared, .. } = &self.workers {
            let consumed = b + 1 - self.first_batch;
            let mut state = lock(&shared.state);
            let start = self.first_batch * self.batch_size;
            state.limit =
                (start + (consumed + self.prefetch_batches) * self.batch_size).min(state.end);
            shared.wake.notify_all();
        }
        let batch = assemble(&self.ctx, b, loaded);
        self.epoch_stats += batch.stats;
        let mut totals = lock(&self.totals);
        totals.stats += batch.stats;
        for path in batch.samples.iter().flat_map(|s| &s.bad_frames) {
            if totals.last_bad.len() == LAST_BAD_KEPT {
                totals.last_bad.pop_front();
            }
            totals.last_bad.push_back(path.clone());
        }
        if let Some(limit) = self.policy.exceeded(&totals.stats) {
            return Err(DataError::TooManyBadFrames {
                bad: totals.stats.bad,
                reads: totals.stats.reads,
                limit,
                last: totals.last_bad.iter().cloned().collect(),
            });
        }
        Ok(batch)
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished || self.next_batch >= self.num_batches {
            if !self.finished {
                self.finished = true;
                let s = self.epoch_stats;
                if s.bad + s.converted + s.non_square > 0 {
                    info!(
                        "epoch {}: {} frame reads, {} unreadable and replaced, {} converted to rgb, {} not square",
                        self.ctx.plan.epoch, s.reads, s.bad, s.converted, s.non_square
                    );
                }
            }
            return None;
        }
        let result = self.next_batch();
        self.next_batch += 1;
        if result.is_err() {
            self.finished = true;
        }
        Some(result)
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Workers::Threads {
            shared, handles, ..
        } = &mut self.workers
        {
            lock(&shared.state).stop = true;
            shared.wake.notify_all();
            for handle in handles.drain(..) {
                // Panics inside workers are caught per sample, so a join error cannot carry
                // anything new.
                let _ = handle.join();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data are counters that stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn worker(ctx: &Ctx, shared: &Shared, tx: &Sender<(usize, SampleResult)>) {
    loop {
        let j = {
            let mut state = lock(&shared.state);
            loop {
                if state.stop || state.next >= state.end {
                    return;
                }
                if state.next < state.limit {
                    break;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.next += 1;
            state.next - 1
        };
        let plan = &ctx.plan.samples[j];
        let result =
            catch_unwind(AssertUnwindSafe(|| load_sample(ctx, plan))).unwrap_or_else(|payload| {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(DataError::WorkerPanic { sample: j, message })
            });
        if tx.send((j, result)).is_err() {
            return;
        }
    }
}

/// One sample's V images, concatenated (V, 3, S, S), and its provenance.
#[derive(Debug)]
struct LoadedSample {
    pixels: Vec<f32>,
    info: SampleInfo,
    stats: LoadStats,
}

/// Reads and transforms the frames of `plan`, replacing unreadable ones deterministically.
fn load_sample(ctx: &Ctx, plan: &SamplePlan) -> Result<LoadedSample> {
    let index = &*ctx.index;
    let views = ctx.num_views;
    let image_len = 3 * ctx.image_size as usize * ctx.image_size as usize;
    let mut pixels = vec![0.0; views * image_len];
    let mut stats = LoadStats::default();
    let mut bad_frames = Vec::new();
    let mut known_bad: HashSet<(TrackId, usize)> = HashSet::new();
    let mut track = plan.track;
    let mut frames = plan.frames.clone();
    let mut retries = 0;
    let mut slot = 0;
    while slot < views {
        let frame = frames[slot];
        if !known_bad.contains(&(track, frame)) {
            let path = index.frame_path(track, frame);
            stats.reads += 1;
            let out = &mut pixels[slot * image_len..(slot + 1) * image_len];
            let read = load_frame(&path).and_then(|(image, issues)| {
                ctx.reporter.issues(&path, &image, issues, &mut stats);
                transform_frame_into(&image, plan.windows[slot], ctx.image_size, out)
            });
            match read {
                Ok(()) => {
                    slot += 1;
                    continue;
                }
                Err(e) => {
                    stats.bad += 1;
                    ctx.reporter
                        .note(Kind::Bad, || format!("skipping unreadable frame: {e}"));
                    known_bad.insert((track, frame));
                    bad_frames.push(path);
                }
            }
        }
        retries += 1;
        if retries > MAX_RETRIES {
            return Err(DataError::UnreadableSample {
                identity: index.identities()[plan.identity].name.clone(),
                attempts: bad_frames.len(),
                last: bad_frames.last().cloned().unwrap_or_default(),
            });
        }
        let mut rng = derive_rng(
            ctx.seed,
            ctx.plan.epoch,
            Domain::Retry(retries),
            plan.sample as u64,
        );
        let readable: Vec<usize> = (0..index.track(track).frames.len())
            .filter(|&f| !known_bad.contains(&(track, f)))
            .collect();
        if readable.is_empty() {
            // The whole track is unreadable: draw a new track of the identity and start over.
            (track, frames) = draw_track_frames(index, plan.identity, views, &mut rng);
            slot = 0;
        } else {
            frames[slot] = readable[rng.random_range(0..readable.len())];
        }
    }
    let info = SampleInfo {
        sample: plan.sample,
        identity: index.identities()[plan.identity].name.clone(),
        track,
        track_name: index.track_name(track),
        frame_paths: frames.iter().map(|&f| index.frame_path(track, f)).collect(),
        windows: plan.windows.clone(),
        bad_frames,
    };
    Ok(LoadedSample {
        pixels,
        info,
        stats,
    })
}

/// Lays out loaded samples as a [`Batch`]: targets (B, 3, S, S), sources (V−1, B, 3, S, S).
fn assemble(ctx: &Ctx, index: usize, loaded: Vec<LoadedSample>) -> Batch {
    let b = loaded.len();
    let s = ctx.image_size as usize;
    let image_len = 3 * s * s;
    let num_sources = ctx.num_views - 1;
    let mut target = Vec::with_capacity(b * image_len);
    let mut sources = vec![0.0; num_sources * b * image_len];
    let mut samples = Vec::with_capacity(b);
    let mut stats = LoadStats::default();
    for (i, sample) in loaded.into_iter().enumerate() {
        target.extend_from_slice(&sample.pixels[..image_len]);
        for k in 0..num_sources {
            let dst = (k * b + i) * image_len;
            sources[dst..dst + image_len]
                .copy_from_slice(&sample.pixels[(k + 1) * image_len..(k + 2) * image_len]);
        }
        stats += sample.stats;
        samples.push(sample.info);
    }
    Batch {
        epoch: ctx.plan.epoch,
        index,
        crop_size: ctx.plan.crop_size,
        batch_size: b,
        num_sources,
        image_size: s,
        target,
        sources,
        samples,
        stats,
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bad,
    Grayscale,
    Converted,
    NonSquare,
}

/// Logs frame problems with their paths: the first [`WARN_LIMIT`] of each kind as warnings.
#[derive(Debug, Default)]
struct Reporter {
    counts: [AtomicUsize; 4],
}

impl Reporter {
    fn note(&self, kind: Kind, message: impl FnOnce() -> String) {
        let n = self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        if n < WARN_LIMIT {
            warn!("{}", message());
        } else {
            if n == WARN_LIMIT {
                warn!("further {kind:?} frame messages are logged at debug level");
            }
            debug!("{}", message());
        }
    }

    fn issues(
        &self,
        path: &Path,
        image: &image::RgbImage,
        issues: FrameIssues,
        stats: &mut LoadStats,
    ) {
        if issues.grayscale {
            stats.grayscale += 1;
            self.note(Kind::Grayscale, || {
                format!("grayscale frame {} converted to rgb", path.display())
            });
        } else if issues.converted {
            self.note(Kind::Converted, || {
                format!("frame {} is not 8-bit rgb, converted", path.display())
            });
        }
        if issues.converted {
            stats.converted += 1;
        }
        if issues.non_square {
            stats.non_square += 1;
            self.note(Kind::NonSquare, || {
                format!(
                    "frame {} is {}x{}, not square: stretched to {RESIZE}x{RESIZE}",
                    path.display(),
                    image.width(),
                    image.height()
                )
            });
        }
    }
}
