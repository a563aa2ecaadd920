//! The `fabnet` binary: one subcommand per pipeline stage, each a thin layer over a library.
//!
//! Each subcommand lives in `cmd/<name>.rs` with a `clap::Args` struct and a `run` function;
//! adding one means adding a module there and a variant to [`Command`].

mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// FAb-Net: self-supervised facial attribute embeddings from talking-head video.
#[derive(Debug, Parser)]
#[command(name = "fabnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The pipeline stages.
#[derive(Debug, Subcommand)]
enum Command {
    /// Extract face-track frames from videos (VoxCeleb track files or face videos).
    Extract(cmd::extract::ExtractArgs),
    /// Render synthetic talking-head videos with exact landmarks, pose and action units.
    Synth(cmd::synth::SynthArgs),
    /// Embed a video's frames, a folder of images or a frame tree into an .npy/.safetensors matrix.
    Embed(cmd::embed::EmbedArgs),
    /// Fit and score a linear probe (landmarks, pose, action units) on frozen embeddings.
    Probe(cmd::probe::ProbeArgs),
    /// Find the nearest neighbours of a row or an image in an embeddings file.
    Retrieve(cmd::retrieve::RetrieveArgs),
    /// Train FAb-Net on a frame tree (curriculum, multi-source stage, resume).
    Train(cmd::train::TrainArgs),
    /// The whole pipeline on synthetic talking heads, against baselines, with a report.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    // Before any other thread exists: this writes the environment.
    fabnet_core::shorten_candle_spin();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    // Training and embedding free and reallocate multi-MiB buffers every
    // step; keeping them in the heap avoids page-faulting them in again.
    fabnet_core::keep_freed_memory();
    let result = match cli.command {
        Command::Extract(args) => cmd::extract::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::Embed(args) => cmd::embed::run(args),
        Command::Probe(args) => cmd::probe::run(args),
        Command::Retrieve(args) => cmd::retrieve::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Demo(args) => cmd::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
