//! `fabnet train`: trains FAb-Net on an `IDENTITY/VIDEO/TRACK/frame*` tree.
//!
//! `fabnet train --config run.toml` reads a documented run file (see
//! [`fabnet_train::TrainConfig`]); every flag below overrides its field, and
//! without a file `--data` and `--out` are enough (paper defaults for the
//! rest). `--resume` continues from the newest checkpoint in `OUT/checkpoints`.
//! The multi-source stage is `--sources 3 --init-from OUT1/checkpoints/step-N.json
//! --freeze-flow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use fabnet_train::{train, CurriculumConfig, Objective, OptimizerConfig, RunOptions, TrainConfig};

/// The optimiser choice on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OptimizerKind {
    /// SGD with momentum 0.9 (the paper).
    Sgd,
    /// Adam with PyTorch's default betas.
    Adam,
}

/// The training objective on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ObjectiveKind {
    /// FAb-Net (the default).
    Fabnet,
    /// The autoencoder baseline: the same encoder, reconstructing its own input.
    Autoencoder,
}

/// Arguments of `fabnet train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Run file (TOML); the flags below override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model preset (paper, small, tiny) or a model TOML file.
    #[arg(long)]
    preset: Option<String>,
    /// Root of the IDENTITY/VIDEO/TRACK/frame* tree.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (checkpoints, metrics.jsonl, pictures, loss.png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Optimiser steps to reach.
    #[arg(long)]
    steps: Option<u64>,
    /// Samples per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Source frames per sample (1, or 3 for the multi-source stage).
    #[arg(long)]
    sources: Option<usize>,
    /// Optimiser.
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Turn the curriculum off (every sample is back-propagated).
    #[arg(long)]
    no_curriculum: bool,
    /// Validations without improvement before the curriculum window moves.
    #[arg(long)]
    curriculum_patience: Option<u32>,
    /// Steps between validations, which drive the curriculum (0: after every epoch, the paper).
    #[arg(long)]
    validate_every: Option<u64>,
    /// What to train.
    #[arg(long, value_enum)]
    objective: Option<ObjectiveKind>,
    /// With one source, skip the mask decoder (its fusion weight is 1 and it gets no gradient):
    /// about a third faster, same gradients; the authors' code runs it.
    #[arg(long)]
    skip_single_source_mask: bool,
    /// Seed of init, split and sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to train: cpu, or cuda / cuda:N (a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
    /// Decoding threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Steps between checkpoints.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Steps between reconstruction pictures (0: never).
    #[arg(long)]
    picture_every: Option<u64>,
    /// A checkpoint (.json) to start from (the multi-source stage).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Keep the flow decoder fixed (lr 0), as the multi-source stage does.
    #[arg(long)]
    freeze_flow: bool,
    /// Continue from the newest checkpoint of the output folder.
    #[arg(long)]
    resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Builds the run configuration from the file and the flags.
pub fn config_from(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(path) => TrainConfig::from_toml_file(path)?,
        None => {
            let (Some(data), Some(out)) = (&args.data, &args.out) else {
                bail!("give --config run.toml, or at least --data and --out");
            };
            TrainConfig {
                preset: "paper".into(),
                data: data.clone(),
                out: out.clone(),
                seed: 0,
                steps: 3000,
                batch_size: 32,
                sources: 1,
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                checkpoint_every: 200,
                keep_checkpoints: 3,
                picture_every: 200,
                validation_batches: 4,
                validate_every: 0,
                objective: Objective::Fabnet,
                single_source_mask: true,
                device: "cpu".into(),
                init_from: None,
                freeze_flow: false,
                optimizer: OptimizerConfig::paper(),
                curriculum: CurriculumConfig::paper(),
            }
        }
    };
    if let Some(v) = &args.device {
        cfg.device = v.clone();
    }
    if let Some(v) = &args.preset {
        cfg.preset = v.clone();
    }
    if let Some(v) = &args.data {
        cfg.data = v.clone();
    }
    if let Some(v) = &args.out {
        cfg.out = v.clone();
    }
    if let Some(v) = args.steps {
        cfg.steps = v;
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = args.sources {
        cfg.sources = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.workers {
        cfg.workers = v;
    }
    if let Some(v) = args.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    if let Some(v) = args.picture_every {
        cfg.picture_every = v;
    }
    if let Some(v) = &args.init_from {
        cfg.init_from = Some(v.clone());
    }
    if args.freeze_flow {
        cfg.freeze_flow = true;
    }
    if args.skip_single_source_mask {
        cfg.single_source_mask = false;
    }
    if let Some(v) = args.validate_every {
        cfg.validate_every = v;
    }
    if let Some(v) = args.objective {
        cfg.objective = match v {
            ObjectiveKind::Fabnet => Objective::Fabnet,
            ObjectiveKind::Autoencoder => Objective::Autoencoder,
        };
    }
    let lr = args.lr.unwrap_or(cfg.optimizer.lr());
    cfg.optimizer = match (args.optimizer, cfg.optimizer) {
        (Some(OptimizerKind::Adam), OptimizerConfig::Sgd { .. }) => OptimizerConfig::adam(lr),
        (Some(OptimizerKind::Sgd), OptimizerConfig::Adam { .. }) => {
            OptimizerConfig::Sgd { lr, momentum: 0.9 }
        }
        (_, OptimizerConfig::Sgd { momentum, .. }) => OptimizerConfig::Sgd { lr, momentum },
        (
            _,
            OptimizerConfig::Adam {
                beta1, beta2, eps, ..
            },
        ) => OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
        },
    };
    if args.no_curriculum {
        cfg.curriculum = CurriculumConfig::off();
    }
    if let Some(p) = args.curriculum_patience {
        cfg.curriculum.patience = p;
        cfg.curriculum.min_epochs_between_shifts = p;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Trains, then prints where the results are.
pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = config_from(&args)?;
    let progress = !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = train(
        &cfg,
        RunOptions {
            resume: args.resume,
            progress,
        },
    )
    .with_context(|| format!("training into {}", cfg.out.display()))?;
    println!(
        "trained to step {} (last loss {:.4}{}); checkpoint {}; metrics {}; loss curve {}",
        summary.steps,
        summary.last_train_loss,
        summary
            .best_validation
            .map(|v| format!(", best validation L1 {v:.4}"))
            .unwrap_or_default(),
        summary.checkpoint.display(),
        summary.metrics.display(),
        cfg.out.join("loss.png").display()
    );
    Ok(ExitCode::SUCCESS)
}
