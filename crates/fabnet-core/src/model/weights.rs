//! Weights in and out under the official state-dict keys: safetensors both
//! ways, zip-format PyTorch `.pth` in (the release's legacy pickles go
//! through `tests/goldens/convert_release.py` first), and a strict check that
//! names every missing, unexpected and mis-shaped tensor before anything is
//! loaded.

use super::config::ModelConfig;
use super::fabnet::FabNet;
use super::spec::ParamSpec;
use super::ModelError;
use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Tensors by official key, e.g. `encoder.0.weight`.
pub type StateDict = BTreeMap<String, Tensor>;

/// Top-level entries of a `.pth` checkpoint that hold the model, in the
/// order they are tried: the release's `*_4views.pth` keep the model under
/// `state_dict_model` (and a probe under `state_dict`), `nv2_curriculum.pth`
/// under `state_dict`; a bare state dict is the last resort.
const PTH_MODEL_KEYS: [Option<&str>; 3] = [Some("state_dict_model"), Some("state_dict"), None];

/// A tensor whose shape differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The key.
    pub name: String,
    /// The shape the model needs.
    pub expected: Vec<usize>,
    /// The shape in the file.
    pub found: Vec<usize>,
}

/// How a state dict differs from what a [`ModelConfig`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDictReport {
    /// Keys the model needs that the state dict lacks.
    pub missing: Vec<String>,
    /// Keys of the state dict that the model does not have.
    pub unexpected: Vec<String>,
    /// Keys present on both sides with different shapes.
    pub mismatched: Vec<ShapeMismatch>,
}

impl StateDictReport {
    /// Whether the state dict fits the model exactly.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for StateDictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing: {}",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected: {}",
                self.unexpected.len(),
                self.unexpected.join(", ")
            ));
        }
        if !self.mismatched.is_empty() {
            let list: Vec<String> = self
                .mismatched
                .iter()
                .map(|m| format!("{} (model {:?}, file {:?})", m.name, m.expected, m.found))
                .collect();
            parts.push(format!("{} mis-shaped: {}", list.len(), list.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("no differences")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Compares `state` with the tensors `config` needs (parameters and
/// BatchNorm running statistics).
pub fn check_state_dict(config: &ModelConfig, state: &StateDict) -> StateDictReport {
    check_state_dict_specs(&config.param_specs(), state)
}

/// [`check_state_dict`] against any list of tensors, e.g.
/// [`ModelConfig::autoencoder_param_specs`].
pub fn check_state_dict_specs(specs: &[ParamSpec], state: &StateDict) -> StateDictReport {
    let mut report = StateDictReport::default();
    for spec in specs {
        match state.get(&spec.name) {
            None => report.missing.push(spec.name.clone()),
            Some(t) if t.dims() != spec.shape.as_slice() => report.mismatched.push(ShapeMismatch {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: t.dims().to_vec(),
            }),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    report.unexpected = state
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    report
}

/// What a weights file holds, from its first bytes.
enum FileKind {
    Zip,
    LegacyPickle,
    Safetensors,
}

fn sniff(path: &Path) -> Result<FileKind, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_owned(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let n = file.read(&mut magic).map_err(io)?;
    Ok(match &magic[..n] {
        [b'P', b'K', 3, 4] => FileKind::Zip,
        // Pickle protocol 2 opens with PROTO 2; pre-1.6 torch.save writes a
        // sequence of such pickles.
        [0x80, 2, ..] => FileKind::LegacyPickle,
        _ => FileKind::Safetensors,
    })
}

/// Reads every tensor of a safetensors file or a zip-format `.pth`
/// checkpoint as f32 on the CPU, normalised to official keys: the model is
/// taken from `state_dict_model` or `state_dict` when present, a `module.`
/// prefix (from `nn.DataParallel`) is stripped, and the
/// `*.num_batches_tracked` counters that PyTorch ≥ 0.4.1 adds are dropped.
pub fn read_state_dict(path: &Path) -> Result<StateDict, ModelError> {
    let read_err = |source| ModelError::Read {
        path: path.to_owned(),
        source,
    };
    let raw: Vec<(String, Tensor)> = match sniff(path)? {
        FileKind::LegacyPickle => {
            return Err(ModelError::LegacyPickle {
                path: path.to_owned(),
            })
        }
        FileKind::Safetensors => candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(read_err)?
            .into_iter()
            .collect(),
        FileKind::Zip => read_pth(path)?,
    };
    let all_module = !raw.is_empty() && raw.iter().all(|(k, _)| k.starts_with("module."));
    let mut state = StateDict::new();
    for (key, tensor) in raw {
        if key.ends_with(".num_batches_tracked") {
            continue;
        }
        let key = if all_module {
            key["module.".len()..].to_owned()
        } else {
            key
        };
        let tensor = tensor.to_dtype(DType::F32).map_err(read_err)?;
        state.insert(key, tensor);
    }
    Ok(state)
}

fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    let read_err = |source| ModelError::Read {
        path: path.to_owned(),
        source,
    };
    for key in PTH_MODEL_KEYS {
        let pth = match PthTensors::new(path, key) {
            Ok(pth) => pth,
            // A missing top-level key just means the next layout.
            Err(_) if key.is_some() => continue,
            Err(e) => return Err(read_err(e)),
        };
        if pth.tensor_infos().is_empty() {
            continue;
        }
        let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(t) = pth.get(name).map_err(read_err)? {
                out.push((name.clone(), t));
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// Reads `path` and checks it against `config`: either every tensor the
/// model needs, with the right shape and nothing else, or an error that
/// lists every difference by name.
pub fn load_state_dict(config: &ModelConfig, path: &Path) -> Result<StateDict, ModelError> {
    let state = read_state_dict(path)?;
    let report = check_state_dict(config, &state);
    if !report.is_clean() {
        return Err(ModelError::StateDictMismatch {
            path: path.to_owned(),
            report,
        });
    }
    Ok(state)
}

/// Overwrites the vars of `varmap` (e.g. from [`FabNet::init`]) with the
/// checked weights of `path`. Nothing is written unless the file fits the
/// model and the varmap exactly.
pub fn load_into_varmap(
    config: &ModelConfig,
    varmap: &VarMap,
    path: &Path,
) -> Result<(), ModelError> {
    let state = load_state_dict(config, path)?;
    set_varmap(config, varmap, &state, path)
}

/// Overwrites the vars of `varmap` with `state` (read from `origin`, which
/// errors name). Both must fit `config` exactly, or nothing is written.
pub fn set_varmap(
    config: &ModelConfig,
    varmap: &VarMap,
    state: &StateDict,
    origin: &Path,
) -> Result<(), ModelError> {
    set_varmap_specs(&config.param_specs(), varmap, state, origin)
}

/// [`set_varmap`] for any list of tensors, e.g. the autoencoder baseline's
/// [`ModelConfig::autoencoder_param_specs`].
pub fn set_varmap_specs(
    specs: &[ParamSpec],
    varmap: &VarMap,
    state: &StateDict,
    origin: &Path,
) -> Result<(), ModelError> {
    let report = check_state_dict_specs(specs, state);
    if !report.is_clean() {
        return Err(ModelError::StateDictMismatch {
            path: origin.to_owned(),
            report,
        });
    }
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let as_state: StateDict = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let report = check_state_dict_specs(specs, &as_state);
    if !report.is_clean() {
        return Err(ModelError::VarMapMismatch { report });
    }
    // Convert everything first so that a failure cannot leave a half-loaded map.
    let mut converted = Vec::with_capacity(state.len());
    for (name, tensor) in state {
        let var = &data[name];
        let t = tensor
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|source| ModelError::Read {
                path: origin.to_owned(),
                source,
            })?;
        converted.push((var, t));
    }
    for (var, t) in converted {
        var.set(&t)?;
    }
    Ok(())
}

/// Writes every var of `varmap` (parameters and BatchNorm running
/// statistics) to a safetensors file under its official key, atomically.
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<(), ModelError> {
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let tmp = temp_path(path);
    let write_err = |source| ModelError::Write {
        path: path.to_owned(),
        source,
    };
    candle_core::safetensors::save(&tensors, &tmp).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// A sibling of `path` for atomic writes.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

impl FabNet {
    /// Loads a model for `config` from a safetensors or zip-format `.pth`
    /// file, strictly checked (see [`load_state_dict`]), onto `device`.
    pub fn from_file(
        config: &ModelConfig,
        path: &Path,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let state = load_state_dict(config, path)?;
        let tensors: HashMap<String, Tensor> = state.into_iter().collect();
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }
}
