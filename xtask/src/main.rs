//! `cargo xtask`: the one entry point that installs system packages, runs the
//! test gate and drives the pipeline stages, so that a fresh machine needs
//! exactly two commands (`cargo xtask demo`, `cargo xtask test`).

mod bench;
mod setup;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  setup            install the system packages the workspace needs (apt)
  demo [--quick|--full] [ARGS]
                   the main job: synthetic talking heads -> frames -> FAb-Net and
                   baselines -> probes -> runs/demo-DATE/report.md (`fabnet demo`)
  test             setup, then rustfmt, clippy -D warnings and the whole test suite
  extract ARGS     extract face-track frames from videos (`fabnet extract ARGS`)
  synth ARGS       render synthetic talking heads (`fabnet synth ARGS`)
  train ARGS       train FAb-Net (`fabnet train ARGS`)
  embed ARGS       embed images or videos (`fabnet embed ARGS`)
  probe ARGS       run a linear probe (`fabnet probe ARGS`)
  retrieve ARGS    nearest neighbours (`fabnet retrieve ARGS`)
                   (each stage runs the release build of the `fabnet` CLI)
  bench [NAME..]   run benchmarks and rewrite BENCHMARKS.md (extract, warp, model,
                   train, synth, knn, embed, loader; --with-torch installs PyTorch)
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "setup" => setup::run(),
        "test" => test(),
        "extract" | "synth" | "train" | "embed" | "probe" | "retrieve" | "demo" => {
            stage(&command, &rest)
        }
        "bench" => bench::run(&rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Runs `program args` in the workspace root and fails if it exits non-zero.
pub(crate) fn run_checked(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: running {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// The cheapest checks first: formatting, then lints, then the tests.
fn test() -> Result<()> {
    setup::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(&cargo, &["fmt", "--all", "--check"])?;
    run_checked(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run_checked(&cargo, &["test", "--workspace"])
}

/// Runs one pipeline stage through the release build of the `fabnet` CLI.
fn stage(name: &str, args: &[String]) -> Result<()> {
    setup::run()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut full = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "fabnet-cli",
        "--",
        name,
    ];
    full.extend(args.iter().map(String::as_str));
    run_checked(&cargo, &full)
}
