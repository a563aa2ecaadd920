//! One module per subcommand; each exposes `XArgs` (clap) and `run(XArgs) -> anyhow::Result<ExitCode>`.

pub mod extract;
pub mod synth;
