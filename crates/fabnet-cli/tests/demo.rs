//! `fabnet demo --quick` end to end (what `cargo xtask demo --quick` runs): the report and its
//! pictures exist, every probe number is finite, FAb-Net + curriculum's landmark error is below the
//! random-init encoder's, and a rerun reuses every finished stage.

use std::path::Path;
use std::process::{Command, Output};

fn demo(out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabnet"))
        .args(["demo", "--quick", "--no-progress", "--out"])
        .arg(out)
        .output()
        .expect("run fabnet demo")
}

#[test]
fn quick_demo_reports_and_fabnet_curriculum_beats_random_init_on_landmarks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let first = demo(&out);
    let log = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.status.success(), "demo failed:\n{log}");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| method |"), "{report}");
    for png in [
        "probes.png",
        "loss.png",
        "retrieval.png",
        "reconstructions-fabnet-curriculum.png",
    ] {
        let img = image::open(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 100 && img.height() > 100, "{png} is tiny");
    }

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let methods = metrics["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pixels", "random-init", "fabnet-curriculum"]);
    let number = |m: &serde_json::Value, pointer: &str| -> f64 {
        let v = m.pointer(pointer).and_then(|v| v.as_f64());
        let v = v.unwrap_or_else(|| panic!("{} has no number at {pointer}: {m}", m["name"]));
        assert!(v.is_finite(), "{} {pointer} is {v}", m["name"]);
        v
    };
    for m in methods {
        for p in [
            "/landmarks5_nme_percent",
            "/landmarks68_nme_percent",
            "/pose_mae_deg/roll",
            "/pose_mae_deg/pitch",
            "/pose_mae_deg/yaw",
            "/pose_mae_deg/mean",
            "/au_mean_auc",
        ] {
            number(m, p);
        }
    }
    let random = &methods[1];
    let fabnet = &methods[2];
    for p in ["/landmarks5_nme_percent", "/landmarks68_nme_percent"] {
        let (ours, theirs) = (number(fabnet, p), number(random, p));
        assert!(
            ours < theirs,
            "FAb-Net + curriculum's {p} is {ours:.2}, not below the random-init encoder's {theirs:.2}\n{report}"
        );
    }

    // A rerun finds every stage done and only rewrites the report.
    let second = demo(&out);
    let log = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "rerun failed:\n{log}");
    for stage in ["synth", "extract", "train-fabnet-curriculum", "probe"] {
        assert!(
            log.contains(&format!("stage {stage}: already done")),
            "stage {stage} was not reused:\n{log}"
        );
    }
}
