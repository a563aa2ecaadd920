//! Optimisers with PyTorch's update rules and their state as named tensors,
//! so that a checkpoint restores them exactly (candle-nn's SGD has no momentum
//! and its AdamW keeps its moments private).

use crate::{update, TrainError};
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
    /// Whether CPU parameters take the fused in-place kernels (the tests
    /// turn it off to compare them with the tensor-op path other devices take).
    in_place: bool,
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
            in_place: true,
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
        for i in 0..self.params.len() {
            // A cheap clone (a name and a shared handle) so that the state can be updated.
            let (name, var) = self.params[i].clone();
            let (name, var) = (&name, &var);
            let Some(grad) = grads.get(var) else {
                continue;
            };
            // Gradients computed through variables carry their graph; state
            // kept across steps must not, or every step's graph stays alive.
            let grad = &grad.detach();
            if self.in_place && var.device().is_cpu() {
                self.step_in_place(name, var, grad)?;
                continue;
            }
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
                    let denom = ((v.sqrt()? / bias2.sqrt())? + eps)?;
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

    /// One parameter's update on the CPU: the same arithmetic as the tensor
    /// ops of [`Optimizer::step`], written into the parameter and its state
    /// in one pass each (see [`crate::update`]).
    fn step_in_place(&mut self, name: &str, var: &Var, grad: &Tensor) -> Result<(), TrainError> {
        let param = var.as_tensor();
        match self.config {
            OptimizerConfig::Sgd { momentum, .. } => {
                if momentum == 0.0 {
                    update::descend(param, grad, self.lr)?;
                    return Ok(());
                }
                match self.first.get(name) {
                    Some(buf) => update::momentum(buf, grad, momentum)?,
                    // PyTorch starts the buffer as a copy of the first gradient.
                    None => {
                        self.first.insert(name.to_string(), grad.copy()?);
                    }
                }
                update::descend(param, &self.first[name], self.lr)?;
            }
            OptimizerConfig::Adam {
                beta1, beta2, eps, ..
            } => {
                let t = self.steps.get(name).copied().unwrap_or(0) + 1;
                for (state, beta, square) in [
                    (&mut self.first, beta1, false),
                    (&mut self.second, beta2, true),
                ] {
                    if !state.contains_key(name) {
                        state.insert(name.to_string(), grad.zeros_like()?);
                    }
                    update::moment(&state[name], grad, beta, square)?;
                }
                let bias1 = 1.0 - beta1.powi(t as i32);
                let bias2 = 1.0 - beta2.powi(t as i32);
                update::adam(
                    param,
                    &self.first[name],
                    &self.second[name],
                    self.lr / bias1,
                    bias2.sqrt(),
                    eps,
                )?;
                self.steps.insert(name.to_string(), t);
            }
        }
        Ok(())
    }

    /// The optimiser state as named tensors: `optim.first.<param>`,
    /// `optim.second.<param>` and `optim.step.<param>` (a u32 scalar-like
    /// tensor of shape (1,)), plus `optim.lr` (f64, shape (1,)). The moments
    /// are copies: the optimiser updates its own in place.
    pub fn state(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut out = HashMap::new();
        for (name, t) in &self.first {
            out.insert(format!("optim.first.{name}"), t.copy()?);
        }
        for (name, t) in &self.second {
            out.insert(format!("optim.second.{name}"), t.copy()?);
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
                    first.insert(name.to_string(), tensor.copy()?);
                }
                "second" => {
                    second.insert(name.to_string(), tensor.copy()?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Runs five steps of `config` on two f64 parameters, the tensor-op path
    /// or the in-place one, and returns the parameters and the state.
    fn run(config: OptimizerConfig, in_place: bool) -> Vec<Vec<f64>> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::arange(-3f64, 3.0, &dev).unwrap()).unwrap();
        let b =
            Var::from_tensor(&Tensor::new(&[[0.5f64, -0.25], [2.0, 1.0]], &dev).unwrap()).unwrap();
        let mut opt = Optimizer::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            config,
        )
        .unwrap();
        opt.in_place = in_place;
        for step in 0..5 {
            let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap()
                + (b.as_tensor() * (step as f64 + 1.0))
                    .unwrap()
                    .sin()
                    .unwrap()
                    .sum_all()
                    .unwrap())
            .unwrap()
                + a.as_tensor().sum_all().unwrap())
            .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let mut out = vec![
            a.as_tensor().to_vec1::<f64>().unwrap(),
            b.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        ];
        let state = opt.state().unwrap();
        let mut keys: Vec<_> = state.keys().collect();
        keys.sort();
        for k in keys {
            out.push(state[k].flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
        out
    }

    #[test]
    fn in_place_kernels_match_the_tensor_ops() {
        for config in [
            OptimizerConfig::paper(),
            OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.0,
            },
            OptimizerConfig::adam(0.05),
        ] {
            let (ours, ops) = (run(config, true), run(config, false));
            assert_eq!(ours.len(), ops.len(), "{config:?}");
            for (x, y) in ours.iter().zip(&ops) {
                assert_eq!(x.len(), y.len());
                for (x, y) in x.iter().zip(y) {
                    assert!(
                        (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                        "{config:?}: {x} vs {y}"
                    );
                }
            }
            // The updates moved the parameters at all.
            assert!(ours[0]
                .iter()
                .zip(-3..3)
                .any(|(x, y)| (x - f64::from(y)).abs() > 1e-3));
        }
    }

    #[test]
    fn state_is_a_copy_of_the_moments() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[1f64, 2.0], &dev).unwrap()).unwrap();
        let mut opt =
            Optimizer::new(vec![("a".into(), a.clone())], OptimizerConfig::adam(0.1)).unwrap();
        let grads = |a: &Var| {
            a.as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        opt.step(&grads(&a)).unwrap();
        let saved = opt.state().unwrap()["optim.first.a"]
            .to_vec1::<f64>()
            .unwrap();
        let held = opt.state().unwrap();
        opt.step(&grads(&a)).unwrap();
        assert_eq!(held["optim.first.a"].to_vec1::<f64>().unwrap(), saved);
        assert_ne!(
            opt.state().unwrap()["optim.first.a"]
                .to_vec1::<f64>()
                .unwrap(),
            saved
        );
    }
}
