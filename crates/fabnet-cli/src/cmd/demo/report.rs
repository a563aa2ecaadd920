//! The demo's report: `report.md` (probe table, claim check, settings, commands, timings),
//! `metrics.json`, and the pictures (probe chart, validation curves, reconstructions).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use fabnet_probe::fsutil::write_atomic;
use fabnet_train::plot::{bar_chart, line_plot, save_png, Series};
use serde_json::json;

use super::plan::DemoPlan;
use super::probes::{MethodResult, ProbeResults};

/// What the caller prints.
pub struct Written {
    /// The probe table and the claim's verdict, as Markdown.
    pub summary: String,
}

/// One comparison of the claim: the FAb-Net row against a baseline on one metric.
struct Comparison {
    baseline: String,
    metric: &'static str,
    fabnet: f64,
    other: f64,
}

impl Comparison {
    fn holds(&self) -> bool {
        self.fabnet < self.other
    }
}

/// Every FAb-Net row against every baseline on the claim's metrics.
fn comparisons(fabnet: &MethodResult, results: &ProbeResults) -> Vec<Comparison> {
    let mut out = Vec::new();
    for b in results.methods.iter().filter(|m| !m.fabnet) {
        for (metric, ours, theirs) in [
            ("5-point NME", fabnet.landmarks5_nme, b.landmarks5_nme),
            ("68-point NME", fabnet.landmarks68_nme, b.landmarks68_nme),
            ("pose MAE", fabnet.pose_mae[3], b.pose_mae[3]),
        ] {
            out.push(Comparison {
                baseline: b.label.clone(),
                metric,
                fabnet: ours,
                other: theirs,
            });
        }
    }
    out
}

fn table(results: &ProbeResults) -> String {
    let mut s = String::from(
        "| method | 5 points, NME % ↓ | 68 points, NME % ↓ | pose MAE ° ↓ (roll / pitch / yaw) | mean | AU ROC-AUC ↑ |\n|---|---|---|---|---|---|\n",
    );
    for m in &results.methods {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2} | {:.2} | {:.3} |",
            m.label,
            m.landmarks5_nme,
            m.landmarks68_nme,
            m.pose_mae[0],
            m.pose_mae[1],
            m.pose_mae[2],
            m.pose_mae[3],
            m.au_auc
        );
    }
    s
}

/// Validation L1 against steps for every training run, from their metrics logs.
fn validation_curves(plan: &DemoPlan, out: &Path) -> Option<image::RgbImage> {
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for run in &plan.runs {
        let log = DemoPlan::run_dir(out, run.name).join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let points: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "val")
            .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
            .collect();
        curves.push((run.label.to_string(), points));
    }
    if curves.is_empty() {
        return None;
    }
    let series: Vec<Series> = curves
        .iter()
        .map(|(label, points)| Series { label, points })
        .collect();
    Some(line_plot(
        "validation reconstruction L1 (held-out identities)",
        "step (the 3-source stage counts from its start)",
        "L1",
        &series,
        true,
    ))
}

/// A method's name in the probe chart's legend.
fn chart_label(name: &str) -> &str {
    match name {
        "pixels" => "pixels + PCA",
        "random-init" => "random init",
        "autoencoder" => "autoencoder",
        "fabnet" => "FAb-Net",
        "fabnet-curriculum" => "FAb-Net + curric.",
        "fabnet-3src" => "FAb-Net 3 sources",
        other => other,
    }
}

/// Writes the report files; returns the summary to print.
pub fn write(
    plan: &DemoPlan,
    out: &Path,
    results: &ProbeResults,
    timings: &[(String, f64, bool)],
    seconds: f64,
    argv: &[String],
) -> anyhow::Result<Written> {
    // Pictures.
    // The chart's bitmap font is ASCII, and a legend entry holds about 18 characters.
    let labels: Vec<&str> = results
        .methods
        .iter()
        .map(|m| chart_label(&m.name))
        .collect();
    let values: Vec<Vec<f64>> = results
        .methods
        .iter()
        .map(|m| vec![m.landmarks5_nme, m.landmarks68_nme, m.pose_mae[3]])
        .collect();
    let chart = bar_chart(
        "probe errors on held-out identities (lower is better)",
        "NME % / MAE deg",
        &["5-point NME %", "68-point NME %", "pose MAE deg"],
        &labels,
        &values,
    );
    save_png(&chart, &out.join("probes.png")).context("cannot write probes.png")?;
    if let Some(curves) = validation_curves(plan, out) {
        save_png(&curves, &out.join("loss.png")).context("cannot write loss.png")?;
    }
    let mut pictures = Vec::new();
    for run in plan.runs.iter().filter(|r| !r.autoencoder) {
        let src = DemoPlan::run_dir(out, run.name)
            .join("pictures")
            .join(format!("step-{:08}.png", run.steps));
        if src.exists() {
            let name = format!("reconstructions-{}.png", run.name);
            std::fs::copy(&src, out.join(&name))
                .with_context(|| format!("cannot copy {}", src.display()))?;
            pictures.push((run.label, name));
        }
    }

    // The claim.
    let mut verdict = String::from(
        "The claim to check: a FAb-Net embedding beats every baseline on 5-point and 68-point landmark error and on pose MAE.\n\n",
    );
    let mut claim = Vec::new();
    for row in results.methods.iter().filter(|m| m.fabnet) {
        let comps = comparisons(row, results);
        let holds = comps.iter().all(Comparison::holds);
        if holds {
            let _ = writeln!(verdict, "- {}: **holds**.", row.label);
        } else {
            let failing: Vec<String> = comps
                .iter()
                .filter(|c| !c.holds())
                .map(|c| {
                    format!(
                        "{} {:.2} against {:.2} for {}",
                        c.metric, c.fabnet, c.other, c.baseline
                    )
                })
                .collect();
            let _ = writeln!(
                verdict,
                "- {}: **does not hold**: {}.",
                row.label,
                failing.join("; ")
            );
        }
        claim.push(json!({
            "row": row.name,
            "holds": holds,
            "comparisons": comps.iter().map(|c| json!({
                "baseline": c.baseline, "metric": c.metric, "fabnet": c.fabnet,
                "baseline_value": c.other, "holds": c.holds(),
            })).collect::<Vec<_>>(),
        }));
    }

    let (ids, clips, frames, side) = plan.corpus;
    let (ptrain, ptest, pimages) = plan.probe_sets;
    let command = argv.join(" ");
    let mut md = String::new();
    let _ = writeln!(md, "# fabnet demo ({:?})\n", plan.size);
    let _ = writeln!(
        md,
        "Command: `{command}` (seed {}). Wall time {:.1} min on this machine{}.\n",
        plan.seed,
        seconds / 60.0,
        if timings.iter().any(|t| t.2) {
            " (some stages reused from an earlier run; their times are from that run)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Linear (ridge) probes on frozen features of {} training and {} test images of disjoint synthetic identities; every method sees the same crop. Errors: NME in % of the inter-ocular distance (eye centres for 5 points, outer eye corners for 68), pose MAE in degrees, action units as mean ROC-AUC.\n",
        results.images.0, results.images.1
    );
    md.push_str(&table(results));
    md.push('\n');
    md.push_str(&verdict);
    md.push_str("\n![probe errors](probes.png)\n\n");
    if out.join("loss.png").exists() {
        md.push_str("## Training\n\n![validation L1](loss.png)\n\n");
    }
    for (label, name) in &pictures {
        let _ = writeln!(
            md,
            "{label}, end of training (target | source(s) | warped | fusion weight | fused):\n\n![{label}]({name})\n"
        );
    }
    if let Some(r) = &results.retrieval {
        let _ = writeln!(
            md,
            "## Retrieval\n\nEach row: a test query (left of the bar) and its 5 nearest test images of other identities by cosine similarity of the best FAb-Net embedding (lowest 68-point error).\n\n![retrieval]({r})\n"
        );
    }
    md.push_str("## Settings\n\n");
    let _ = writeln!(
        md,
        "- Corpus: {ids} training identities × {clips} clips × {frames} frames at {side}×{side} (seed {}); probes: {ptrain} training and {ptest} test identities × {pimages} images.",
        plan.seed
    );
    let _ = writeln!(
        md,
        "- Extraction: track boxes grown {}× (square), 256×256 JPEG frames; FAb-Net's crop recipe on top. The probes cut the same view from each face box.",
        plan.crop_scale
    );
    let _ = writeln!(
        md,
        "- Model `{}`; Adam, lr {}, batch {}; validation every {} steps; curriculum patience {} validations (the paper's 16 epochs of this corpus, rounded up to whole validations); 1-source FAb-Net runs skip the mask decoder, whose fusion weight is 1 and which gets no gradient. The paper trains with SGD for about 3000 iterations of batch 32 at 256×256 (a GPU-day) on VoxCeleb; these runs are minutes on a CPU.",
        plan.preset, plan.lr, plan.batch_size, plan.validate_every, plan.curriculum_patience
    );
    let _ = writeln!(
        md,
        "- Pixels: {0}×{0} grey thumbnails of the same view, PCA to at most 256 dimensions fitted on the training images. Probes: ridge with λ chosen by 5-fold cross-validation on the training split.\n",
        plan.pixel_side
    );
    md.push_str("## Equivalent commands\n\n```sh\n");
    let _ = writeln!(md, "fabnet synth {}", plan.synth_args(out, true).join(" "));
    let _ = writeln!(
        md,
        "fabnet extract {}",
        plan.extract_args(out, true).join(" ")
    );
    for run in &plan.runs {
        let _ = writeln!(
            md,
            "fabnet train {}",
            plan.train_args(run, out, true).join(" ")
        );
    }
    md.push_str("```\n\nThe probe stage has no single command: it embeds the probe images with each model (`fabnet embed`) and fits the probes (`fabnet probe`) with the view above.\n\n## Stage times\n\n| stage | seconds | |\n|---|---|---|\n");
    for (name, secs, reused) in timings {
        let _ = writeln!(
            md,
            "| {name} | {secs:.0} | {} |",
            if *reused { "reused" } else { "" }
        );
    }
    write_atomic(&out.join("report.md"), |w| w.write_all(md.as_bytes()))?;

    let metrics = json!({
        "command": command,
        "size": format!("{:?}", plan.size).to_lowercase(),
        "seed": plan.seed,
        "preset": plan.preset,
        "seconds": seconds,
        "stages": timings.iter().map(|(n, s, r)| json!({"stage": n, "seconds": s, "reused": r})).collect::<Vec<_>>(),
        "images": {"train": results.images.0, "test": results.images.1},
        "methods": results.methods.iter().map(|m| json!({
            "name": m.name, "label": m.label, "fabnet": m.fabnet, "dim": m.dim,
            "landmarks5_nme_percent": m.landmarks5_nme,
            "landmarks68_nme_percent": m.landmarks68_nme,
            "pose_mae_deg": {"roll": m.pose_mae[0], "pitch": m.pose_mae[1], "yaw": m.pose_mae[2], "mean": m.pose_mae[3]},
            "au_mean_auc": m.au_auc,
        })).collect::<Vec<_>>(),
        "claim": claim,
    });
    write_atomic(&out.join("metrics.json"), |w| {
        w.write_all(serde_json::to_string_pretty(&metrics)?.as_bytes())
    })?;
    let summary = format!("{}\n{}", table(results), verdict);
    Ok(Written { summary })
}
