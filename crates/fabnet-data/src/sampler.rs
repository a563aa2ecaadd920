//! The sampler of the reference §1 (`get_blw_item` in the authors' code).
//!
//! An epoch visits each identity of the split once, in an order shuffled with (seed, epoch).
//! For each visit: a uniformly random video of the identity, then a uniformly random track of
//! that video, then `num_views` frames drawn uniformly from that one track without replacement
//! (with replacement when the track has fewer frames). The first frame is the target, the rest
//! are the sources. There is no limit on the time gap between frames.
//! With jitter, the crop side c is drawn once per epoch from 170..=189 and each frame's crop
//! offset independently; without jitter every frame gets the centre crop.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::index::{DatasetIndex, TrackId};
use crate::rng::{derive_rng, Domain};
use crate::transform::{CropWindow, CENTRE_CROP, JITTER_CROP_MAX, JITTER_CROP_MIN, NO_JITTER_CROP};

/// Everything random about one sample, fixed before any file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplePlan {
    /// Position of the sample in its epoch.
    pub sample: usize,
    /// Index into [`DatasetIndex::identities`].
    pub identity: usize,
    /// The one track all frames come from.
    pub track: TrackId,
    /// Positions in the track's [`crate::Track::frames`], target first; `num_views` long.
    pub frames: Vec<usize>,
    /// Crop of each frame, aligned with `frames`.
    pub windows: Vec<CropWindow>,
}

/// The samples of one epoch, in visiting order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    /// The epoch number.
    pub epoch: u64,
    /// Crop side c of this epoch, pixels (170 without jitter).
    pub crop_size: u32,
    /// One sample per identity, in visiting order.
    pub samples: Vec<SamplePlan>,
}

/// Plans epoch `epoch` over `identities` (indices into `index`), drawing everything from
/// `seed`. Pure: the same arguments always give the same plan.
///
/// # Panics
/// If an identity index is out of range for `index`, or `num_views` is 0.
pub fn plan_epoch(
    index: &DatasetIndex,
    identities: &[usize],
    num_views: usize,
    jitter: bool,
    seed: u64,
    epoch: u64,
) -> EpochPlan {
    assert!(num_views > 0, "num_views must be positive");
    let crop_size = if jitter {
        derive_rng(seed, epoch, Domain::Crop, 0).random_range(JITTER_CROP_MIN..=JITTER_CROP_MAX)
    } else {
        NO_JITTER_CROP
    };
    let mut order = identities.to_vec();
    order.shuffle(&mut derive_rng(seed, epoch, Domain::Order, 0));
    let samples = order
        .into_iter()
        .enumerate()
        .map(|(sample, identity)| {
            let mut rng = derive_rng(seed, epoch, Domain::Sample, sample as u64);
            let (track, frames) = draw_track_frames(index, identity, num_views, &mut rng);
            let windows = (0..num_views)
                .map(|_| draw_window(crop_size, jitter, &mut rng))
                .collect();
            SamplePlan {
                sample,
                identity,
                track,
                frames,
                windows,
            }
        })
        .collect();
    EpochPlan {
        epoch,
        crop_size,
        samples,
    }
}

/// A random video of `identity`, a random track of it, and `num_views` frame positions.
pub(crate) fn draw_track_frames(
    index: &DatasetIndex,
    identity: usize,
    num_views: usize,
    rng: &mut impl Rng,
) -> (TrackId, Vec<usize>) {
    let videos = &index.identities()[identity].videos;
    let video = rng.random_range(0..videos.len());
    let track = rng.random_range(0..videos[video].tracks.len());
    let n = videos[video].tracks[track].frames.len();
    let frames = if n >= num_views {
        rand::seq::index::sample(rng, n, num_views).into_vec()
    } else {
        (0..num_views).map(|_| rng.random_range(0..n)).collect()
    };
    let id = TrackId {
        identity,
        video,
        track,
    };
    (id, frames)
}

fn draw_window(crop_size: u32, jitter: bool, rng: &mut impl Rng) -> CropWindow {
    if !jitter {
        return CropWindow::centre();
    }
    let max = CENTRE_CROP - crop_size;
    let dx = rng.random_range(0..=max);
    let dy = rng.random_range(0..=max);
    CropWindow::at_offset(crop_size, dx, dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticTree;
    use std::collections::{BTreeSet, HashSet};

    fn index() -> (tempfile::TempDir, DatasetIndex) {
        let dir = tempfile::tempdir().unwrap();
        // Identity k has tracks of varied lengths so both draw modes are exercised.
        SyntheticTree::new(12, 3, 3, 5)
            .with_short_tracks(2)
            .write(dir.path())
            .unwrap();
        let index = DatasetIndex::build(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn epoch_visits_each_identity_exactly_once_in_a_shuffled_order() {
        let (_dir, index) = index();
        let ids: Vec<usize> = (0..12).filter(|i| i % 4 != 3).collect();
        let a = plan_epoch(&index, &ids, 2, true, 5, 0);
        let b = plan_epoch(&index, &ids, 2, true, 5, 1);
        for plan in [&a, &b] {
            let mut seen: Vec<usize> = plan.samples.iter().map(|s| s.identity).collect();
            seen.sort_unstable();
            assert_eq!(seen, ids);
            assert!(plan.samples.iter().enumerate().all(|(i, s)| s.sample == i));
        }
        let order = |p: &EpochPlan| p.samples.iter().map(|s| s.identity).collect::<Vec<_>>();
        assert_ne!(order(&a), order(&b));
        assert_ne!(order(&a), ids);
        assert_eq!(a, plan_epoch(&index, &ids, 2, true, 5, 0));
        assert_ne!(a, plan_epoch(&index, &ids, 2, true, 6, 0));
    }

    #[test]
    fn frames_come_from_one_track_of_the_identity_and_are_distinct_when_possible() {
        let (_dir, index) = index();
        let ids: Vec<usize> = (0..12).collect();
        let mut tracks_used = HashSet::new();
        for epoch in 0..20 {
            let plan = plan_epoch(&index, &ids, 4, true, 1, epoch);
            for s in &plan.samples {
                assert_eq!(s.track.identity, s.identity);
                let n = index.track(s.track).frames.len();
                assert_eq!(s.frames.len(), 4);
                assert!(s.frames.iter().all(|&f| f < n));
                if n >= 4 {
                    let distinct: BTreeSet<_> = s.frames.iter().collect();
                    assert_eq!(distinct.len(), 4, "{s:?}");
                }
                tracks_used.insert(s.track);
            }
        }
        // Random video and track: over 20 epochs every identity's 9 tracks should show up.
        assert!(tracks_used.len() > 90, "{}", tracks_used.len());
    }

    #[test]
    fn short_track_is_drawn_with_replacement() {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(1, 1, 1, 2).write(dir.path()).unwrap();
        let index = DatasetIndex::build(dir.path()).unwrap();
        let plan = plan_epoch(&index, &[0], 5, false, 0, 0);
        let frames = &plan.samples[0].frames;
        assert_eq!(frames.len(), 5);
        assert!(frames.iter().all(|&f| f < 2));
    }

    #[test]
    fn crop_size_is_per_epoch_and_offsets_per_frame() {
        let (_dir, index) = index();
        let ids: Vec<usize> = (0..12).collect();
        let mut sizes = BTreeSet::new();
        for epoch in 0..40 {
            let plan = plan_epoch(&index, &ids, 3, true, 9, epoch);
            assert!((JITTER_CROP_MIN..=JITTER_CROP_MAX).contains(&plan.crop_size));
            sizes.insert(plan.crop_size);
            let windows: Vec<CropWindow> = plan
                .samples
                .iter()
                .flat_map(|s| s.windows.clone())
                .collect();
            assert!(windows.iter().all(|w| w.size == plan.crop_size));
            if plan.crop_size < CENTRE_CROP - 1 {
                let distinct: HashSet<_> = windows.iter().map(|w| (w.x, w.y)).collect();
                assert!(distinct.len() > 1, "offsets must vary per frame");
            }
        }
        assert!(sizes.len() > 5, "{sizes:?}");
        let plan = plan_epoch(&index, &ids, 3, false, 9, 0);
        assert_eq!(plan.crop_size, NO_JITTER_CROP);
        assert!(plan
            .samples
            .iter()
            .flat_map(|s| &s.windows)
            .all(|w| *w == CropWindow::centre()));
    }
}
