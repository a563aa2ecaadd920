//! Checkpoints: the model's and optimiser's tensors in one safetensors file
//! plus a small JSON of everything else (epoch, step, curriculum, seed).
//! The JSON is renamed into place last and is the commit marker: a checkpoint
//! whose JSON is absent never happened, so a crash at any point leaves the
//! previous checkpoint loadable.

use crate::{Curriculum, TrainError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Everything in a checkpoint that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// The epoch in progress when the checkpoint was taken.
    pub epoch: u64,
    /// Batches of `epoch` already consumed; resuming starts at this batch.
    pub batch_in_epoch: u64,
    /// The curriculum's state.
    pub curriculum: Curriculum,
    /// The run's seed: every random draw derives from (seed, epoch, index), so
    /// this and the counters above are the whole RNG state.
    pub seed: u64,
    /// How many sources the stage trains with.
    pub sources: usize,
    /// The run configuration, verbatim, for provenance.
    pub config: serde_json::Value,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The non-tensor state.
    pub meta: CheckpointMeta,
    /// Model parameters and buffers under their official keys, and the
    /// optimiser state under `optim.*`.
    pub tensors: HashMap<String, Tensor>,
}

/// A folder of checkpoints named `step-00001234.{safetensors,json}`.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointDir {
    /// Checkpoints in `dir`, keeping the newest `keep` (at least one).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stem(step: u64) -> String {
        format!("step-{step:08}")
    }

    /// Writes a checkpoint atomically, then deletes all but the newest `keep`.
    pub fn save(
        &self,
        meta: &CheckpointMeta,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<PathBuf, TrainError> {
        fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let stem = Self::stem(meta.step);
        let weights = self.dir.join(format!("{stem}.safetensors"));
        let json = self.dir.join(format!("{stem}.json"));
        let weights_tmp = self.dir.join(format!("{stem}.safetensors.tmp"));
        let json_tmp = self.dir.join(format!("{stem}.json.tmp"));
        candle_core::safetensors::save(tensors, &weights_tmp)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", weights_tmp.display())))?;
        fs::rename(&weights_tmp, &weights).map_err(|e| TrainError::io(&weights, e))?;
        let text = serde_json::to_string_pretty(meta)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", json.display())))?;
        fs::write(&json_tmp, text).map_err(|e| TrainError::io(&json_tmp, e))?;
        fs::rename(&json_tmp, &json).map_err(|e| TrainError::io(&json, e))?;
        self.prune()?;
        Ok(json)
    }

    /// Committed checkpoints, oldest first, as (step, json path).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, TrainError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(TrainError::io(&self.dir, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| TrainError::io(&self.dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(step) = name
                .strip_prefix("step-")
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((step, path));
        }
        out.sort();
        Ok(out)
    }

    /// The newest committed checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>, TrainError> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    fn prune(&self) -> Result<(), TrainError> {
        let list = self.list()?;
        let excess = list.len().saturating_sub(self.keep);
        for (step, json) in list.into_iter().take(excess) {
            // The marker goes first so a crash mid-prune never leaves a JSON
            // pointing at deleted weights.
            fs::remove_file(&json).map_err(|e| TrainError::io(&json, e))?;
            let weights = self.dir.join(format!("{}.safetensors", Self::stem(step)));
            if weights.exists() {
                fs::remove_file(&weights).map_err(|e| TrainError::io(&weights, e))?;
            }
        }
        Ok(())
    }
}

/// Loads the checkpoint whose JSON marker is `json` (its weights sit beside it).
pub fn load_checkpoint(json: &Path, device: &Device) -> Result<Checkpoint, TrainError> {
    let text = fs::read_to_string(json).map_err(|e| TrainError::io(json, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", json.display())))?;
    let weights = json.with_extension("safetensors");
    let tensors = candle_core::safetensors::load(&weights, device)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", weights.display())))?;
    Ok(Checkpoint { meta, tensors })
}
