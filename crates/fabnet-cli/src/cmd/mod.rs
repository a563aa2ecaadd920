//! One module per subcommand; each exposes `XArgs` (clap) and `run(XArgs) -> anyhow::Result<ExitCode>`.

pub mod demo;
pub mod embed;
pub mod extract;
pub mod probe;
pub mod retrieve;
pub mod synth;
pub mod train;
pub mod weights;
