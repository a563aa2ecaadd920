//! Optimisers with PyTorch's update rules and their state as named tensors,
//! so that a checkpoint restores them exactly (candle-nn's SGD has no momentum
//! and its AdamW keeps its moments private).

use crate::TrainError;
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which update rule, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// SGD with heavy-ball momentum, PyTorch semantics (no dampening, no
    /// Nesterov): `buf = momentum·buf + g; p -= lr·buf`, with `buf = g` on the
    /// first step. The paper: lr 1e-3, momentum 0.9, batch 32.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0.9 in the paper).
        momentum: f64,
    },
    /// Adam, PyTorch semantics (bias-corrected moments, `eps` added after the
    /// square root).
    Adam {
        /// Learning rate.
        lr: f64,
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the denominator for stability.
        eps: f64,
    },
}

impl OptimizerConfig {
    /// The paper's optimiser: SGD, lr 1e-3, momentum 0.9.
    pub fn paper() -> Self {
        Self::Sgd {
            lr: 1e-3,
            momentum: 0.9,
        }
    }

    /// Adam with PyTorch's default betas and eps.
    pub fn adam(lr: f64) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The configured learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }
}

/// An optimiser over named parameters. Parameters absent from the gradient
/// store (frozen, or unused in this step) are left untouched, as PyTorch does
/// for parameters whose `.grad` is None.
pub struct Optimizer {
    config: OptimizerConfig,
    lr: f64,
    params: Vec<(String, Var)>,
    /// SGD momentum buffers or Adam first moments, by parameter name.
    first: HashMap<String, Tensor>,
    /// Adam second moments, by parameter name.
    second: HashMap<String, Tensor>,
    /// Adam step counts, by parameter name (PyTorch keeps one per parameter).
    steps: HashMap<String, u64>,
}

impl Optimizer {
    /// An optimiser over `params` (name, variable). Names must be unique: they
    /// key the saved state.
    pub fn new(params: Vec<(String, Var)>, config: OptimizerConfig) -> Result<Self, TrainError> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &params {
            if !seen.insert(name.as_str()) {
                return Err(TrainError::Config(format!(
                    "parameter `{name}` is given to the optimiser twice"
                )));
            }
        }
        Ok(Self {
            lr: config.lr(),
            config,
            params,
            first: HashMap::new(),
            second: HashMap::new(),
            steps: HashMap::new(),
        })
    }

    /// The current learning rate (ReduceLROnPlateau may have lowered it).
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate for the following steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Names of the parameters this optimiser updates.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// The global L2 norm of this optimiser's gradients in `grads` (parameters
    /// without a gradient count as zero); NaN or infinite when any is.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64, TrainError> {
        let mut sum = 0.0;
        for (_, var) in &self.params {
            if let Some(g) = grads.get(var) {
                sum += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sum.sqrt())
    }

    /// Applies one update from the gradients of a `backward()` call.
    pub fn step(&mut self, grads: &GradStore) -> Result<(), TrainError> {
        for (name, var) in &self.params {
            let Some(grad) = grads.get(var) else {
                continue;
            };
            // Gradients computed through variables carry their graph; state
            // kept across steps must not, or every step's graph stays alive.
            let grad = &grad.detach();
            match self.config {
                OptimizerConfig::Sgd { momentum, .. } => {
                    let buf = match self.first.get(name) {
                        Some(prev) if momentum != 0.0 => ((prev * momentum)? + grad)?,
                        _ => grad.clone(),
                    };
                    var.set(&(var.as_tensor() - (&buf * self.lr)?)?)?;
                    if momentum != 0.0 {
                        self.first.insert(name.clone(), buf.detach());
                    }
                }
                OptimizerConfig::Adam {
                    beta1, beta2, eps, ..
                } => {
                    let t = self.steps.get(name).copied().unwrap_or(0) + 1;
                    let m_prev = match self.first.get(name) {
                        Some(m) => m.clone(),
                        None => grad.zeros_like()?,
                    };
                    let v_prev = match self.second.get(name) {
                        Some(v) => v.clone(),
                        None => grad.zeros_like()?,
                    };
                    let m = ((m_prev * beta1)? + (grad * (1.0 - beta1))?)?;
                    let v = ((v_prev * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
                    let bias1 = 1.0 - beta1.powi(t as i32);
                    let bias2 = 1.0 - beta2.powi(t as i32);
                    let denom = ((v.clone() / bias2)?.sqrt()? + eps)?;
                    let update = ((m.clone() / denom)? * (self.lr / bias1))?;
                    var.set(&(var.as_tensor() - update)?)?;
                    self.first.insert(name.clone(), m.detach());
                    self.second.insert(name.clone(), v.detach());
                    self.steps.insert(name.clone(), t);
                }
            }
        }
        Ok(())
    }

    /// The optimiser state as named tensors: `optim.first.<param>`,
    /// `optim.second.<param>` and `optim.step.<param>` (a u32 scalar-like
    /// tensor of shape (1,)), plus `optim.lr` (f64, shape (1,)).
    pub fn state(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut out = HashMap::new();
        for (name, t) in &self.first {
            out.insert(format!("optim.first.{name}"), t.clone());
        }
        for (name, t) in &self.second {
            out.insert(format!("optim.second.{name}"), t.clone());
        }
        let device = self
            .params
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        for (name, step) in &self.steps {
            out.insert(
                format!("optim.step.{name}"),
                Tensor::new(&[*step as f64], &device)?,
            );
        }
        out.insert("optim.lr".into(), Tensor::new(&[self.lr], &device)?);
        Ok(out)
    }

    /// Restores the state written by [`Optimizer::state`]. State of
    /// parameters this optimiser does not hold is an error, so that a
    /// mismatched checkpoint is not half-applied.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|(n, _)| n.as_str()).collect();
        let mut first = HashMap::new();
        let mut second = HashMap::new();
        let mut steps = HashMap::new();
        let mut lr = self.lr;
        for (key, tensor) in state {
            let Some(rest) = key.strip_prefix("optim.") else {
                continue;
            };
            if rest == "lr" {
                lr = tensor
                    .to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?[0];
                continue;
            }
            let (kind, name) = rest
                .split_once('.')
                .ok_or_else(|| TrainError::Checkpoint(format!("unknown optimiser key `{key}`")))?;
            if !known.contains(name) {
                return Err(TrainError::Checkpoint(format!(
                    "optimiser state for unknown parameter `{name}`"
                )));
            }
            match kind {
                "first" => {
                    first.insert(name.to_string(), tensor.clone());
                }
                "second" => {
                    second.insert(name.to_string(), tensor.clone());
                }
                "step" => {
                    let v = tensor
                        .to_dtype(DType::F64)?
                        .flatten_all()?
                        .to_vec1::<f64>()?;
                    steps.insert(name.to_string(), v.first().copied().unwrap_or(0.0) as u64);
                }
                _ => {
                    return Err(TrainError::Checkpoint(format!(
                        "unknown optimiser key `{key}`"
                    )))
                }
            }
        }
        self.first = first;
        self.second = second;
        self.steps = steps;
        self.lr = lr;
        Ok(())
    }
}
