//! The optimisers against torch.optim goldens (tests/goldens/make_optim_goldens.py):
//! SGD with momentum 0.9 and Adam over five steps, with one step where a
//! parameter gets no gradient.

use candle_core::{backprop::GradStore, Device, Tensor, Var};

/// A gradient store holding exactly the given gradients: the gradient of
/// `Σ p·g` with respect to `p` is `g`.
fn grads_of(pairs: &[(&Var, &Tensor)]) -> GradStore {
    let mut loss = Tensor::new(0.0f64, &Device::Cpu).unwrap();
    for (var, grad) in pairs {
        loss = (loss + (var.as_tensor() * *grad).unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap()
}
use fabnet_train::{Optimizer, OptimizerConfig};
use std::collections::HashMap;

fn goldens(name: &str) -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/goldens/optim/");
    candle_core::safetensors::load(format!("{path}{name}.safetensors"), &Device::Cpu)
        .expect("golden file")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Runs the five steps of a golden file and returns the optimiser.
fn replay(name: &str, config: OptimizerConfig) -> (Optimizer, Var, Var, HashMap<String, Tensor>) {
    let g = goldens(name);
    let a = Var::from_tensor(&g["a.init"]).unwrap();
    let b = Var::from_tensor(&g["b.init"]).unwrap();
    let mut opt = Optimizer::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        config,
    )
    .unwrap();
    for step in 0..5 {
        let ga = &g[&format!("a.grad.{step}")];
        let gb = &g[&format!("b.grad.{step}")];
        let grads = if step == 2 {
            grads_of(&[(&a, ga)])
        } else {
            grads_of(&[(&a, ga), (&b, gb)])
        };
        opt.step(&grads).unwrap();
        for (var, key) in [(&a, "a"), (&b, "b")] {
            let expected = &g[&format!("{key}.after.{step}")];
            let err = max_abs_diff(var.as_tensor(), expected);
            assert!(
                err < 1e-12,
                "{name} step {step} param {key}: max error {err}"
            );
        }
    }
    (opt, a, b, g)
}

#[test]
fn sgd_momentum_matches_torch() {
    replay(
        "sgd",
        OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
        },
    );
}

#[test]
fn adam_matches_torch() {
    replay("adam", OptimizerConfig::adam(0.01));
}

/// Saving the state after three steps and restoring it into a fresh
/// optimiser continues the exact trajectory.
#[test]
fn state_round_trip_continues_exactly() {
    for (name, config) in [
        (
            "sgd",
            OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.9,
            },
        ),
        ("adam", OptimizerConfig::adam(0.01)),
    ] {
        let g = goldens(name);
        let a = Var::from_tensor(&g["a.init"]).unwrap();
        let b = Var::from_tensor(&g["b.init"]).unwrap();
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut opt = Optimizer::new(params.clone(), config).unwrap();
        let grads_at = |step: usize| {
            let ga = &g[&format!("a.grad.{step}")];
            let gb = &g[&format!("b.grad.{step}")];
            if step == 2 {
                grads_of(&[(&a, ga)])
            } else {
                grads_of(&[(&a, ga), (&b, gb)])
            }
        };
        for step in 0..3 {
            opt.step(&grads_at(step)).unwrap();
        }
        let state = opt.state().unwrap();
        let mut restored = Optimizer::new(params, config).unwrap();
        restored.load_state(&state).unwrap();
        for step in 3..5 {
            restored.step(&grads_at(step)).unwrap();
        }
        for (var, key) in [(&a, "a"), (&b, "b")] {
            let err = max_abs_diff(var.as_tensor(), &g[&format!("{key}.after.4")]);
            assert!(
                err < 1e-12,
                "{name} after restore, param {key}: error {err}"
            );
        }
    }
}

#[test]
fn state_of_an_unknown_parameter_is_rejected() {
    let a = Var::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(vec![("a".into(), a)], OptimizerConfig::paper()).unwrap();
    let mut state = HashMap::new();
    state.insert(
        "optim.first.nope".to_string(),
        Tensor::new(&[0.0f64], &Device::Cpu).unwrap(),
    );
    let err = opt.load_state(&state).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn duplicate_parameter_names_are_rejected() {
    let a = Var::new(&[1.0f64], &Device::Cpu).unwrap();
    let err = Optimizer::new(
        vec![("a".into(), a.clone()), ("a".into(), a)],
        OptimizerConfig::paper(),
    )
    .err()
    .expect("duplicate names must fail")
    .to_string();
    assert!(err.contains("`a`"), "{err}");
}
