//! What each demo size runs: the corpus, the extraction, the training runs and the methods
//! compared, written as the flags of the equivalent `fabnet` commands.

use std::path::{Path, PathBuf};

use fabnet_data::SplitFractions;

/// The curriculum patience of the paper's schedule (reference §4), in epochs.
const PAPER_PATIENCE_EPOCHS: u32 = 16;

/// How long the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoSize {
    /// About 4 minutes: a smoke test (FAb-Net + curriculum against random init and pixels).
    Quick,
    /// About 15 minutes on 2 cores.
    Default,
    /// Hours: the `small` model, 3000 steps per run (4500 for the curriculum run).
    Full,
}

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// Folder and method name, e.g. `fabnet-curriculum`.
    pub name: &'static str,
    /// Row label in the report.
    pub label: &'static str,
    /// Source frames per sample.
    pub sources: usize,
    /// Curriculum on.
    pub curriculum: bool,
    /// The autoencoder baseline instead of FAb-Net.
    pub autoencoder: bool,
    /// Starts from the final checkpoint of this run, flow decoder frozen (the multi-source stage).
    pub init_from: Option<&'static str>,
    /// Optimiser steps.
    pub steps: u64,
}

/// A row of the probe table: where its features come from.
#[derive(Debug, Clone)]
pub enum Method {
    /// Grey pixels of the same crop, downsampled, projected on their principal components.
    Pixels,
    /// The encoder of a freshly initialised FAb-Net.
    RandomInit,
    /// The encoder of a training run.
    Trained(TrainRun),
}

impl Method {
    /// Short name (file names, JSON keys).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Pixels => "pixels",
            Method::RandomInit => "random-init",
            Method::Trained(r) => r.name,
        }
    }

    /// Row label.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Pixels => "raw pixels (32×32 grey → PCA)",
            Method::RandomInit => "random-init encoder",
            Method::Trained(r) => r.label,
        }
    }

    /// Whether this is a FAb-Net row (the claim is about these).
    pub fn is_fabnet(&self) -> bool {
        matches!(self, Method::Trained(r) if !r.autoencoder)
    }
}

/// Everything the demo runs.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// The size.
    pub size: DemoSize,
    /// Master seed.
    pub seed: u64,
    /// Model preset.
    pub preset: String,
    /// Training identities, clips each, frames per clip, frame side.
    pub corpus: (usize, usize, usize, u32),
    /// Frames per second of the clips: low, so that a clip's frames span seconds of head motion
    /// and speech (VoxCeleb1's frames are 1 fps samples of long tracks).
    pub fps: u32,
    /// Probe identities (train, test) and images per identity.
    pub probe_sets: (usize, usize, usize),
    /// Crop side of `fabnet extract` as a multiple of the track box; the probes cut the same view.
    pub crop_scale: f64,
    /// Samples per batch.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Steps between validations (which move the curriculum).
    pub validate_every: u64,
    /// Validations without improvement before the curriculum window moves (and between two
    /// moves): the paper's 16 epochs, converted by [`DemoPlan::validations_for_epochs`].
    pub curriculum_patience: u32,
    /// The training runs, in order (a run's `init_from` comes before it).
    pub runs: Vec<TrainRun>,
    /// Side of the pixel baseline's grey thumbnails.
    pub pixel_side: u32,
}

impl DemoPlan {
    /// The plan of `size`.
    pub fn new(size: DemoSize, seed: u64) -> Self {
        let fabnet = |steps| TrainRun {
            name: "fabnet",
            label: "FAb-Net, 1 source",
            sources: 1,
            curriculum: false,
            autoencoder: false,
            init_from: None,
            steps,
        };
        // The curriculum back-propagates half of each batch (its window is 0.5 wide), so it gets
        // 1.5× the steps of the other runs: still fewer back-propagated samples than theirs (3/4),
        // and the most the default's 15 minutes hold. With 3000 steps it had not caught up
        // with the autoencoder; with 4500 it passes it on this corpus (see the README).
        let curriculum_steps = |steps: u64| steps * 3 / 2;
        let curriculum = |steps| TrainRun {
            name: "fabnet-curriculum",
            label: "FAb-Net + curriculum, 1 source",
            curriculum: true,
            ..fabnet(steps)
        };
        let three = |steps| TrainRun {
            name: "fabnet-3src",
            label: "FAb-Net + curriculum, 3 sources",
            sources: 3,
            curriculum: true,
            init_from: Some("fabnet-curriculum"),
            ..fabnet(steps)
        };
        let autoencoder = |steps| TrainRun {
            name: "autoencoder",
            label: "autoencoder (same encoder and budget)",
            autoencoder: true,
            ..fabnet(steps)
        };
        let base = DemoPlan {
            size,
            seed,
            preset: "tiny".into(),
            corpus: (120, 2, 50, 128),
            fps: 2,
            probe_sets: (20, 10, 25),
            crop_scale: 1.8,
            batch_size: 16,
            lr: 1e-3,
            validate_every: 50,
            curriculum_patience: 0,
            runs: Vec::new(),
            pixel_side: 32,
        };
        let mut plan = match size {
            // The minimum: FAb-Net + curriculum against random init and pixels. The
            // curriculum needs its 1.5× of 2000 steps here: after 1000 steps it was behind random
            // init (23.0 % 5-point NME against 17.7), after 2000 still (18.1), after 3000 ahead
            // (16.7); the plain run passes at 1000, but the claim is about the paper's variant.
            DemoSize::Quick => DemoPlan {
                corpus: (60, 2, 50, 128),
                runs: vec![curriculum(curriculum_steps(2000))],
                ..base
            },
            DemoSize::Default => DemoPlan {
                runs: vec![
                    fabnet(3000),
                    curriculum(curriculum_steps(3000)),
                    three(400),
                    autoencoder(3000),
                ],
                ..base
            },
            DemoSize::Full => DemoPlan {
                preset: "small".into(),
                corpus: (600, 2, 60, 128),
                probe_sets: (40, 20, 25),
                batch_size: 32,
                validate_every: 100,
                runs: vec![
                    fabnet(3000),
                    curriculum(curriculum_steps(3000)),
                    three(750),
                    autoencoder(3000),
                ],
                ..base
            },
        };
        plan.curriculum_patience = plan.validations_for_epochs(PAPER_PATIENCE_EPOCHS);
        plan
    }

    /// The fewest validations that span `epochs` epochs of this plan's corpus. The paper
    /// validates once per epoch and counts its curriculum patience in epochs; the demo validates
    /// every `validate_every` steps, and an epoch (every training identity once) is
    /// `train identities / batch` steps.
    pub fn validations_for_epochs(&self, epochs: u32) -> u32 {
        let train_identities = self.corpus.0 as f64 * SplitFractions::default().train;
        let steps = f64::from(epochs) * train_identities / self.batch_size.max(1) as f64;
        ((steps / self.validate_every.max(1) as f64).ceil() as u32).max(1)
    }

    /// Sets the steps of every 1-source run, the curriculum run's included (and a quarter of them
    /// for the multi-source stage).
    pub fn set_steps(&mut self, steps: u64) {
        for run in &mut self.runs {
            run.steps = if run.init_from.is_some() {
                (steps / 4).max(1)
            } else {
                steps
            };
        }
    }

    /// Keeps the runs named in `names` and the runs they start from (which are reused when
    /// finished, else trained first); an unknown name is an error that lists the known ones.
    pub fn keep_only(&mut self, names: &[String]) -> Result<(), String> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.runs.iter().any(|r| r.name == n.as_str()))
        {
            let known: Vec<&str> = self.runs.iter().map(|r| r.name).collect();
            return Err(format!(
                "--only {unknown}: this demo size has no run of that name (it has {})",
                known.join(", ")
            ));
        }
        let mut keep: Vec<&str> = names.iter().map(String::as_str).collect();
        // Runs start from earlier runs, so one pass from the end collects every ancestor.
        for run in self.runs.iter().rev() {
            if let (true, Some(from)) = (keep.contains(&run.name), run.init_from) {
                keep.push(from);
            }
        }
        self.runs.retain(|r| keep.contains(&r.name));
        Ok(())
    }

    /// The rows of the probe table, baselines first.
    pub fn methods(&self) -> Vec<Method> {
        let mut m = vec![Method::Pixels, Method::RandomInit];
        let mut runs = self.runs.clone();
        // The autoencoder is a baseline: list it before the FAb-Net rows.
        runs.sort_by_key(|r| !r.autoencoder);
        m.extend(runs.into_iter().map(Method::Trained));
        m
    }

    /// The corpus folder.
    pub fn synth_dir(out: &Path) -> PathBuf {
        out.join("synth")
    }

    /// The frame tree.
    pub fn frames_dir(out: &Path) -> PathBuf {
        out.join("frames")
    }

    /// A run's output folder.
    pub fn run_dir(out: &Path, name: &str) -> PathBuf {
        out.join("train").join(name)
    }

    /// The final checkpoint marker of a run.
    pub fn final_checkpoint(&self, out: &Path, run: &TrainRun) -> PathBuf {
        Self::run_dir(out, run.name)
            .join("checkpoints")
            .join(format!("step-{:08}.json", run.steps))
    }

    /// `fabnet synth` flags.
    pub fn synth_args(&self, out: &Path, progress: bool) -> Vec<String> {
        let (ids, clips, frames, side) = self.corpus;
        let (ptrain, ptest, pimages) = self.probe_sets;
        let mut a = vec![
            "--out".into(),
            Self::synth_dir(out).display().to_string(),
            "--identities".into(),
            ids.to_string(),
            "--clips-per-identity".into(),
            clips.to_string(),
            "--frames".into(),
            frames.to_string(),
            "--size".into(),
            side.to_string(),
            "--probe-train-identities".into(),
            ptrain.to_string(),
            "--probe-test-identities".into(),
            ptest.to_string(),
            "--probe-images".into(),
            pimages.to_string(),
            "--fps".into(),
            self.fps.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ];
        if !progress {
            a.push("--no-progress".into());
        }
        a
    }

    /// `fabnet extract` flags.
    pub fn extract_args(&self, out: &Path, progress: bool) -> Vec<String> {
        let synth = Self::synth_dir(out);
        let mut a = vec![
            "--tracks".into(),
            synth.join("tracks").display().to_string(),
            "--videos".into(),
            synth.join("videos").display().to_string(),
            "--out".into(),
            Self::frames_dir(out).display().to_string(),
            "--scale".into(),
            self.crop_scale.to_string(),
        ];
        if !progress {
            a.push("--no-progress".into());
        }
        a
    }

    /// `fabnet train` flags of one run.
    pub fn train_args(&self, run: &TrainRun, out: &Path, progress: bool) -> Vec<String> {
        let mut a = vec![
            "--preset".into(),
            self.preset.clone(),
            "--data".into(),
            Self::frames_dir(out).display().to_string(),
            "--out".into(),
            Self::run_dir(out, run.name).display().to_string(),
            "--steps".into(),
            run.steps.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--sources".into(),
            run.sources.to_string(),
            "--optimizer".into(),
            "adam".into(),
            "--lr".into(),
            self.lr.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--validate-every".into(),
            self.validate_every.to_string(),
            "--checkpoint-every".into(),
            (run.steps / 4).max(1).to_string(),
            "--picture-every".into(),
            run.steps.to_string(),
        ];
        if run.autoencoder {
            a.extend(["--objective".into(), "autoencoder".into()]);
        } else if run.sources == 1 {
            a.push("--skip-single-source-mask".into());
        }
        if run.curriculum {
            a.extend([
                "--curriculum-patience".into(),
                self.curriculum_patience.to_string(),
            ]);
        } else {
            a.push("--no-curriculum".into());
        }
        if let Some(from) = run.init_from {
            let from = self
                .runs
                .iter()
                .find(|r| r.name == from)
                .map(|r| self.final_checkpoint(out, r))
                .unwrap_or_default();
            a.extend([
                "--init-from".into(),
                from.display().to_string(),
                "--freeze-flow".into(),
            ]);
        }
        if !progress {
            a.push("--no-progress".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curriculum_patience_spans_the_papers_sixteen_epochs() {
        // Default: 84 training identities / batch 16 = 5.25 steps an epoch; 16 epochs = 84 steps,
        // which two validations 50 steps apart cover and one does not.
        let plan = DemoPlan::new(DemoSize::Default, 1);
        assert_eq!(plan.curriculum_patience, 2);
        // Full: 420 / 32 × 16 = 210 steps, three validations 100 steps apart.
        assert_eq!(DemoPlan::new(DemoSize::Full, 1).curriculum_patience, 3);
        let mut slow = plan.clone();
        slow.validate_every = 10;
        assert_eq!(slow.validations_for_epochs(16), 9);
        assert_eq!(slow.validations_for_epochs(0), 1);
    }

    #[test]
    fn keeping_one_run_keeps_the_run_it_starts_from() {
        let names = |p: &DemoPlan| p.runs.iter().map(|r| r.name).collect::<Vec<_>>();
        let mut plan = DemoPlan::new(DemoSize::Default, 1);
        plan.keep_only(&["fabnet-3src".into()]).unwrap();
        assert_eq!(names(&plan), ["fabnet-curriculum", "fabnet-3src"]);
        let out = Path::new("out");
        let args = plan.train_args(&plan.runs[1], out, false);
        let from = args.iter().position(|a| a == "--init-from").unwrap();
        assert_eq!(
            Path::new(&args[from + 1]),
            plan.final_checkpoint(out, &plan.runs[0])
        );
        let mut plan = DemoPlan::new(DemoSize::Default, 1);
        plan.keep_only(&["autoencoder".into(), "fabnet".into()])
            .unwrap();
        assert_eq!(names(&plan), ["fabnet", "autoencoder"]);
        let err = plan.keep_only(&["nope".into()]).unwrap_err();
        assert!(err.contains("nope") && err.contains("autoencoder"), "{err}");
    }
}
