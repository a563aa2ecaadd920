//! The BN→Linear probe's training against PyTorch 1.13 (float64): same data, same initial
//! parameters, Adam with weight decay, 7 full-batch steps, both losses with a masked (NaN) target.
//! The golden file and the script that wrote it are in `tests/fixtures/`.

use fabnet_probe::{BnLinearConfig, BnLinearProbe, Matrix, ProbeLoss};
use serde_json::Value;

fn matrix(v: &Value) -> Matrix {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    Matrix::new(rows.len(), cols, data).unwrap()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(what: &str, ours: &[f64], torch: &[f64]) {
    assert_eq!(ours.len(), torch.len(), "{what}");
    for (a, b) in ours.iter().zip(torch) {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "{what}: ours {a} vs torch {b}"
        );
    }
}

#[test]
fn training_matches_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bn_linear_golden.json"
    );
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let loss = match case["loss"].as_str().unwrap() {
            "mse" => ProbeLoss::Mse,
            _ => ProbeLoss::BceWithLogits,
        };
        let cfg = BnLinearConfig {
            lr: golden["lr"].as_f64().unwrap(),
            weight_decay: golden["weight_decay"].as_f64().unwrap(),
            max_steps: golden["steps"].as_u64().unwrap() as usize,
            val_fraction: 0.0,
            ..BnLinearConfig::new(loss)
        };
        let (x, y) = (matrix(&case["x"]), matrix(&case["y"]));
        assert!(y.get(3, 1).is_nan());
        let init = case["init"].clone();
        let mut start = BnLinearProbe::init(x.cols, y.cols, &cfg);
        start.gamma = vector(&init["gamma"]);
        start.beta = vector(&init["beta"]);
        start.weight = matrix(&init["weight"]);
        let (probe, fit) = BnLinearProbe::fit_from(start, &x, &y, &cfg).unwrap();
        let what = |s: &str| format!("{loss:?} {s}");
        assert_eq!((fit.steps, fit.n_val, fit.best_val_loss), (7, 0, None));
        let losses = vector(&case["losses"]);
        close(&what("last loss"), &[fit.final_train_loss], &losses[6..]);
        close(&what("gamma"), &probe.gamma, &vector(&case["gamma"]));
        close(&what("beta"), &probe.beta, &vector(&case["beta"]));
        close(
            &what("weight"),
            &probe.weight.data,
            &matrix(&case["weight"]).data,
        );
        close(
            &what("running mean"),
            &probe.running_mean,
            &vector(&case["running_mean"]),
        );
        close(
            &what("running var"),
            &probe.running_var,
            &vector(&case["running_var"]),
        );
        let out = probe.predict(&matrix(&case["x_test"])).unwrap();
        close(
            &what("eval outputs"),
            &out.data,
            &matrix(&case["test_outputs"]).data,
        );
    }
}
