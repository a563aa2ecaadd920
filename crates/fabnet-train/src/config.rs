//! The run configuration: one documented TOML file (`fabnet train --config
//! run.toml`), every field of which the CLI can override.
//!
//! ```toml
//! preset = "small"          # model preset: paper | small | tiny (data/presets/*.toml)
//! data = "runs/demo/frames" # IDENTITY/VIDEO/TRACK/frame* tree
//! out = "runs/demo/train"   # checkpoints, metrics.jsonl, pictures
//! seed = 0                  # model init, split and sampling all derive from it
//! steps = 2000              # optimiser steps to reach
//! batch_size = 32
//! sources = 1               # 1, or 3 for the multi-source stage
//! workers = 2               # decoding threads
//! checkpoint_every = 200    # steps between checkpoints (one is always written at the end)
//! keep_checkpoints = 3
//! picture_every = 200       # steps between reconstruction grids
//! validation_batches = 4    # batches of held-out identities per validation
//! validate_every = 0        # steps between validations; 0: after every epoch (the paper)
//! objective = "fabnet"      # or "autoencoder": the baseline that reconstructs its input
//! single_source_mask = true # run the (gradient-free) mask decoder with 1 source, as the authors
//! init_from = ""            # a checkpoint to start from (the multi-source stage)
//! freeze_flow = false       # lr 0 for the flow decoder (the multi-source stage)
//! device = "cpu"            # or "cuda" / "cuda:N" (a build with `--features cuda`)
//!
//! [optimizer]
//! kind = "sgd"              # or "adam" (with beta1, beta2, eps)
//! lr = 0.001
//! momentum = 0.9
//!
//! [curriculum]
//! enabled = true
//! start = [0.0, 0.5]
//! shift = 0.1
//! last = [0.4, 0.9]
//! patience = 16
//! min_epochs_between_shifts = 16
//! lr_patience = 10
//! lr_factor = 0.1
//! ```

use crate::{CurriculumConfig, OptimizerConfig, TrainError};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a training run needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model preset name (`paper`, `small`, `tiny`) or a path to a model TOML.
    pub preset: String,
    /// Root of the `IDENTITY/VIDEO/TRACK/frame*` tree.
    pub data: PathBuf,
    /// Output folder: `checkpoints/`, `metrics.jsonl`, `pictures/`.
    pub out: PathBuf,
    /// The seed every random draw derives from.
    #[serde(default)]
    pub seed: u64,
    /// Optimiser steps to reach; a resumed run continues up to this count.
    pub steps: u64,
    /// Where the model trains: `cpu`, or `cuda` (the first GPU) / `cuda:N`
    /// in a build with the `cuda` feature.
    #[serde(default = "default_device")]
    pub device: String,
    /// Samples per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Source frames per sample: 1, or 3 for the multi-source stage.
    #[serde(default = "default_sources")]
    pub sources: usize,
    /// Decoding threads of the loader.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Steps between checkpoints.
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Steps between reconstruction pictures (0: never).
    #[serde(default = "default_every")]
    pub picture_every: u64,
    /// Batches of held-out identities in each validation.
    #[serde(default = "default_validation_batches")]
    pub validation_batches: usize,
    /// Steps between validations (which drive the curriculum); 0 validates
    /// after every epoch, as the paper does. An epoch visits each training
    /// identity once, so on a corpus of few identities it is a handful of
    /// steps and the schedule would move far faster than the paper's.
    #[serde(default)]
    pub validate_every: u64,
    /// What is trained: FAb-Net, or the autoencoder baseline (same encoder,
    /// reconstructing its own input; sources are not drawn).
    #[serde(default)]
    pub objective: Objective,
    /// Runs the mask decoder with one source, as the authors' code does; off saves about a third
    /// of a 1-source step and changes no gradient (see `FabNet::set_single_source_mask`).
    #[serde(default = "default_true")]
    pub single_source_mask: bool,
    /// A checkpoint (its `.json`) whose model weights and curriculum start
    /// this run: how the multi-source stage starts from the 1-source model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Keeps the flow decoder fixed (lr 0), as the multi-source stage does.
    #[serde(default)]
    pub freeze_flow: bool,
    /// The optimiser.
    #[serde(default = "OptimizerConfig::paper")]
    pub optimizer: OptimizerConfig,
    /// The curriculum schedule.
    #[serde(default = "CurriculumConfig::paper")]
    pub curriculum: CurriculumConfig,
}

/// The training objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// FAb-Net: reconstruct the target by warping the sources.
    #[default]
    Fabnet,
    /// The autoencoder baseline: reconstruct the target from its own embedding.
    Autoencoder,
}

fn default_true() -> bool {
    true
}
fn default_device() -> String {
    "cpu".into()
}

fn default_batch() -> usize {
    32
}
fn default_sources() -> usize {
    1
}
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
fn default_every() -> u64 {
    200
}
fn default_keep() -> usize {
    3
}
fn default_validation_batches() -> usize {
    4
}

impl TrainConfig {
    /// Reads a TOML run file; errors name the file, line and column.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        gpu_ordinal(&self.device)?;
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.sources == 0 {
            return bad("sources must be at least 1".into());
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every must be at least 1".into());
        }
        if self.validation_batches == 0 {
            return bad("validation_batches must be at least 1".into());
        }
        if self.objective == Objective::Autoencoder
            && (self.init_from.is_some() || self.freeze_flow)
        {
            return bad("the autoencoder objective has no multi-source stage: drop init_from and freeze_flow".into());
        }
        if !self.optimizer.lr().is_finite() || self.optimizer.lr() <= 0.0 {
            return bad(format!(
                "learning rate {} must be positive",
                self.optimizer.lr()
            ));
        }
        let c = &self.curriculum;
        let in_unit = |x: f64| (0.0..=1.0).contains(&x);
        if !(in_unit(c.start.0) && in_unit(c.start.1) && in_unit(c.last.0) && in_unit(c.last.1))
            || c.start.0 >= c.start.1
            || c.last.0 >= c.last.1
        {
            return bad(format!(
                "curriculum windows {:?} and {:?} must lie in [0, 1] with lo < hi",
                c.start, c.last
            ));
        }
        Ok(())
    }
}

/// The GPU `spec` names (`cuda` is GPU 0, `cuda:N` GPU N), `None` for
/// `cpu`, or an error naming the spec.
fn gpu_ordinal(spec: &str) -> Result<Option<usize>, TrainError> {
    let gpu = match spec {
        "cpu" => return Ok(None),
        "cuda" => Some(0),
        _ => spec
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    gpu.map(Some)
        .ok_or_else(|| TrainError::Config(format!("device `{spec}`: expected cpu, cuda or cuda:N")))
}

/// The device `spec` names (`cpu`, `cuda`, `cuda:N`). A GPU needs a build
/// with the `cuda` feature; without it the error says so.
pub fn parse_device(spec: &str) -> Result<Device, TrainError> {
    let Some(ordinal) = gpu_ordinal(spec)? else {
        return Ok(Device::Cpu);
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(TrainError::Config(format!(
            "device `{spec}`: this build has no CUDA support; rebuild with `--features cuda`"
        )));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| TrainError::Config(format!("device `{spec}`: cannot open GPU {ordinal}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::{parse_device, TrainConfig};
    use crate::TrainError;

    fn message(e: TrainError) -> String {
        e.to_string()
    }

    /// `cpu` is the default and parses; GPU specs parse but, in a build
    /// without the `cuda` feature, fail with a message that says how to get
    /// one; anything else fails naming the spec.
    #[test]
    fn device_specs_parse_or_fail_with_a_message_naming_them() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        for gpu in ["cuda", "cuda:0", "cuda:3"] {
            let result = parse_device(gpu);
            if candle_core::utils::cuda_is_available() {
                continue;
            }
            let text = message(result.expect_err(gpu));
            assert!(text.contains(&format!("`{gpu}`")), "{text}");
            assert!(text.contains("--features cuda"), "{text}");
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", "cuda0", ""] {
            let text = message(parse_device(bad).expect_err(bad));
            assert!(
                text.contains(&format!("device `{bad}`")) && text.contains("cpu, cuda or cuda:N"),
                "{text}"
            );
        }
        let toml = "preset = \"tiny\"\ndata = \"d\"\nout = \"o\"\nsteps = 1\n";
        let config: TrainConfig = toml::from_str(toml).unwrap();
        assert_eq!(config.device, "cpu");
        config.validate().unwrap();
        let tpu: TrainConfig = toml::from_str(&format!("{toml}device = \"tpu\"\n")).unwrap();
        let bad = tpu.validate().expect_err("tpu");
        assert!(message(bad).contains("device `tpu`"));
    }
}
