//! `fabnet demo`: the whole pipeline on synthetic talking heads, in one command, with baselines
//! under one protocol and a report people can read.
//!
//! Stages, each skipped on a rerun once its marker in `OUT/stages/` records the same settings:
//! 1. `synth`: identities with clips for self-supervised training, and disjoint probe identities;
//! 2. `extract`: the clips through their VoxCeleb2 track files and real video decoding;
//! 3. `train-*`: the FAb-Net variants and the autoencoder baseline (resumed from their newest
//!    checkpoint when a run was cut short);
//! 4. `probe`: every method's features of the probe images, then ridge probes for 5-point and
//!    68-point landmarks, pose and action units;
//! 5. `report`: `report.md`, `metrics.json`, the probe chart, reconstructions and a retrieval grid.
//!
//! Every stage is also a `fabnet` subcommand; the report lists the equivalent commands.

mod plan;
mod probes;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use fabnet_probe::fsutil::write_atomic;
use serde_json::{json, Value};

pub use plan::{DemoPlan, DemoSize};

/// Arguments of `fabnet demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Output folder; default `runs/demo-YYYY-MM-DD` (UTC date), with `-quick` or `-full` appended
    /// for those sizes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A smoke test of about 4 minutes: FAb-Net + curriculum (3000 steps) against random-init and
    /// pixels.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The long run (hours on 2 cores): the `small` model, more identities, 3000 steps per run
    /// (4500 for the curriculum run, which back-propagates half of each batch).
    #[arg(long)]
    full: bool,
    /// Master seed of the corpus, the model inits, the splits and the sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override the optimiser steps of each 1-source training run (the 3-source stage gets a
    /// quarter of them).
    #[arg(long)]
    steps: Option<u64>,
    /// Override the model preset.
    #[arg(long)]
    preset: Option<String>,
    /// Override the batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override the clips' frames per second.
    #[arg(long)]
    fps: Option<u32>,
    /// Override Adam's learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override the curriculum patience, in validations (default: the paper's 16 epochs of this
    /// corpus, rounded up to whole validations).
    #[arg(long)]
    curriculum_patience: Option<u32>,
    /// Train and probe only these runs (comma-separated names, e.g. `fabnet-3src`), and the runs
    /// they start from (reused when finished).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Hide progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// Parses `args` as the flags of a subcommand whose `clap::Args` is `A`: the demo drives the same
/// code, with the same defaults, as the commands its report lists.
fn parse_args<A: clap::Args + clap::FromArgMatches>(
    name: &str,
    args: &[String],
) -> anyhow::Result<A> {
    #[derive(Parser)]
    struct Wrap<T: clap::Args + clap::FromArgMatches> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once(name.to_string()).chain(args.iter().cloned());
    Ok(Wrap::<A>::try_parse_from(argv)
        .with_context(|| format!("internal: bad `fabnet {name}` flags {args:?}"))?
        .inner)
}

/// Stage markers: `stages/NAME.json` holds the settings a finished stage ran with.
struct Stages {
    dir: PathBuf,
    timings: Vec<(String, f64, bool)>,
}

impl Stages {
    fn new(out: &Path) -> anyhow::Result<Self> {
        let dir = out.join("stages");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir,
            timings: Vec::new(),
        })
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Runs `stage` unless its marker records `settings`, then writes the marker; returns whether
    /// the stage ran.
    fn run(
        &mut self,
        name: &str,
        settings: Value,
        stage: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let marker = self.marker(name);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            if let Ok(done) = serde_json::from_str::<Value>(&text) {
                if done["settings"] == settings {
                    let seconds = done["seconds"].as_f64().unwrap_or(0.0);
                    tracing::info!("stage {name}: already done ({seconds:.0} s), reused");
                    self.timings.push((name.to_string(), seconds, true));
                    return Ok(false);
                }
            }
            tracing::info!("stage {name}: settings changed since the last run, redoing it");
        }
        tracing::info!("stage {name}: running");
        let started = Instant::now();
        stage().with_context(|| format!("demo stage {name}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let record = json!({ "settings": settings, "seconds": seconds });
        write_atomic(&marker, |w| {
            w.write_all(serde_json::to_string_pretty(&record)?.as_bytes())
        })?;
        tracing::info!("stage {name}: done in {seconds:.0} s");
        self.timings.push((name.to_string(), seconds, false));
        Ok(true)
    }

    /// The settings a finished stage recorded, if any.
    fn recorded(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.marker(name)).ok()?;
        let done: Value = serde_json::from_str(&text).ok()?;
        Some(done["settings"].clone())
    }

    /// Forgets a stage, so that a stage whose input was redone is redone too.
    fn invalidate(&self, name: &str) {
        let _ = std::fs::remove_file(self.marker(name));
    }
}

/// Today's UTC date as `YYYY-MM-DD`.
fn utc_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Runs `fabnet demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let size = match (args.quick, args.full) {
        (true, _) => DemoSize::Quick,
        (_, true) => DemoSize::Full,
        _ => DemoSize::Default,
    };
    let mut plan = DemoPlan::new(size, args.seed);
    if let Some(steps) = args.steps {
        plan.set_steps(steps);
    }
    if let Some(p) = &args.preset {
        plan.preset = p.clone();
    }
    if let Some(b) = args.batch_size {
        plan.batch_size = b;
    }
    if let Some(fps) = args.fps {
        plan.fps = fps;
    }
    if let Some(lr) = args.lr {
        plan.lr = lr;
    }
    if let Some(p) = args.curriculum_patience {
        plan.curriculum_patience = p;
    }
    if !args.only.is_empty() {
        plan.keep_only(&args.only).map_err(anyhow::Error::msg)?;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = match size {
            DemoSize::Quick => "-quick",
            DemoSize::Default => "",
            DemoSize::Full => "-full",
        };
        PathBuf::from("runs").join(format!("demo-{}{suffix}", utc_date()))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let started = Instant::now();
    let progress = !args.no_progress;
    let mut stages = Stages::new(&out)?;
    tracing::info!(size = ?size, seed = args.seed, out = %out.display(), "fabnet demo");

    let synth_args = plan.synth_args(&out, progress);
    // Markers record settings relative to the output folder, so a copied or moved run reuses them.
    let here = Path::new("OUT");
    let synth_ran = stages.run("synth", json!(plan.synth_args(here, false)), || {
        check(
            super::synth::run(parse_args("synth", &synth_args)?)?,
            "synth",
        )
    })?;
    if synth_ran {
        stages.invalidate("extract");
    }
    let extract_args = plan.extract_args(&out, progress);
    let extract_ran = stages.run("extract", json!(plan.extract_args(here, false)), || {
        check(
            super::extract::run(parse_args("extract", &extract_args)?)?,
            "extract",
        )
    })?;
    // A run is redone when its frames or the run it starts from were redone.
    let mut trained: Vec<&str> = Vec::new();
    for run in &plan.runs {
        let marker = format!("train-{}", run.name);
        let settings = json!(plan.train_args(run, here, false));
        // A run with no marker was cut short and resumes from its checkpoint; a run whose inputs
        // or settings changed starts again from scratch.
        let stale = extract_ran
            || run.init_from.is_some_and(|from| trained.contains(&from))
            || stages.recorded(&marker).is_some_and(|s| s != settings);
        let dir = DemoPlan::run_dir(&out, run.name);
        if stale && dir.exists() {
            tracing::info!("stage {marker}: its inputs or settings changed, starting it afresh");
            stages.invalidate(&marker);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove the stale run {}", dir.display()))?;
        }
        let train_args = plan.train_args(run, &out, progress);
        let train_cmd = parse_args::<super::train::TrainArgs>("train", &train_args)?;
        let cfg = super::train::config_from(&train_cmd)?;
        let ran = stages.run(&marker, settings, || {
            fabnet_train::train(
                &cfg,
                fabnet_train::RunOptions {
                    resume: true,
                    progress,
                },
            )
            .with_context(|| format!("training {}", run.name))?;
            Ok(())
        })?;
        if ran {
            trained.push(run.name);
        }
    }
    if extract_ran || !trained.is_empty() {
        stages.invalidate("probe");
    }
    let probe_settings = json!({
        "methods": plan.methods().iter().map(|m| m.name()).collect::<Vec<_>>(),
        "view_scale": plan.crop_scale,
        "train": plan.runs.iter().map(|r| plan.train_args(r, here, false)).collect::<Vec<_>>(),
    });
    let mut results = None;
    stages.run("probe", probe_settings, || {
        results = Some(probes::run_all(&plan, &out, progress)?);
        Ok(())
    })?;
    let results = match results {
        Some(r) => r,
        None => probes::load_results(&out)?,
    };
    let report = report::write(
        &plan,
        &out,
        &results,
        &stages.timings,
        started.elapsed().as_secs_f64(),
        &std::env::args().collect::<Vec<_>>(),
    )?;
    println!("{}", report.summary);
    println!("report: {}", out.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}

/// A stage's exit code as an error when it is not success.
fn check(code: ExitCode, stage: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        code == ExitCode::SUCCESS,
        "`fabnet {stage}` reported failures (see the messages above)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_run_once_per_settings_and_record_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut stages = Stages::new(dir.path()).unwrap();
        let mut calls = 0;
        let mut step = |stages: &mut Stages, settings: Value| {
            stages
                .run("s", settings, || {
                    calls += 1;
                    Ok(())
                })
                .unwrap()
        };
        assert!(step(&mut stages, json!({"steps": 1})));
        assert!(!step(&mut stages, json!({"steps": 1})));
        assert_eq!(stages.recorded("s"), Some(json!({"steps": 1})));
        assert!(step(&mut stages, json!({"steps": 2})));
        stages.invalidate("s");
        assert_eq!(stages.recorded("s"), None);
        assert!(step(&mut stages, json!({"steps": 2})));
        assert_eq!(calls, 3);
        // A failing stage leaves no marker.
        let err = stages.run("bad", json!(1), || anyhow::bail!("boom"));
        assert!(format!("{:#}", err.unwrap_err()).contains("demo stage bad: boom"));
        assert_eq!(stages.recorded("bad"), None);
    }

    #[test]
    fn utc_date_is_a_calendar_date() {
        let d = utc_date();
        let parts: Vec<u32> = d.split('-').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[0] >= 2024 && (1..=12).contains(&parts[1]) && (1..=31).contains(&parts[2]));
    }
}
