//! Probe reports: serde types written as JSON and rendered as Markdown tables.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, Result};
use crate::fsutil::write_atomic;
use crate::metrics::{AuAuc, NmeResult, PoseMae};

/// The metrics of one probe run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeMetrics {
    /// Landmark NME, %, with its normaliser.
    Landmarks(NmeResult),
    /// Pose MAE, degrees.
    Pose(PoseMae),
    /// Per-AU ROC-AUC.
    ActionUnits(AuAuc),
}

/// One probe run: what was fitted on what, and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// `landmarks`, `pose` or `au`.
    pub task: String,
    /// `ridge` or `bn-linear`.
    pub probe: String,
    /// D.
    pub embedding_dim: usize,
    /// Training rows (including any validation rows carved from them).
    pub n_train: usize,
    /// Test rows.
    pub n_test: usize,
    /// The scores.
    pub metrics: ProbeMetrics,
    /// Probe settings and fitting record (chosen λ and CV curve, or training log).
    pub fit: serde_json::Value,
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |a| format!("{:.2}", 100.0 * a))
}

impl ProbeReport {
    /// A Markdown table of the headline numbers; the landmark table names its normaliser.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let head = "| task | probe | D | train | test |";
        match &self.metrics {
            ProbeMetrics::Landmarks(r) => {
                s += &format!("{head} NME % | normaliser |\n|---|---|---|---|---|---|---|\n");
                s += &format!(
                    "| {} | {} | {} | {} | {} | {:.3} | {} |\n",
                    self.task,
                    self.probe,
                    self.embedding_dim,
                    self.n_train,
                    self.n_test,
                    r.mean_percent,
                    r.normaliser
                );
            }
            ProbeMetrics::Pose(m) => {
                s += &format!("{head} roll ° | pitch ° | yaw ° | mean ° |\n|---|---|---|---|---|---|---|---|---|\n");
                s += &format!(
                    "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    self.task,
                    self.probe,
                    self.embedding_dim,
                    self.n_train,
                    self.n_test,
                    m.roll_deg,
                    m.pitch_deg,
                    m.yaw_deg,
                    m.mean_deg
                );
            }
            ProbeMetrics::ActionUnits(a) => {
                s += &format!("{head} mean AUC % |\n|---|---|---|---|---|---|\n");
                s += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n\n| AU | AUC % | positives | negatives |\n|---|---|---|---|\n",
                    self.task,
                    self.probe,
                    self.embedding_dim,
                    self.n_train,
                    self.n_test,
                    pct(a.mean_auc)
                );
                for e in &a.per_au {
                    s += &format!(
                        "| {} | {} | {} | {} |\n",
                        e.name,
                        pct(e.auc),
                        e.positives,
                        e.negatives
                    );
                }
            }
        }
        s
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ProbeError::Invalid(format!("cannot serialise the report: {e}")))?;
        write_atomic(path, |w| writeln!(w, "{text}"))
    }

    /// Writes [`ProbeReport::to_markdown`], atomically.
    pub fn write_markdown(&self, path: &Path) -> Result<()> {
        let text = self.to_markdown();
        write_atomic(path, |w| w.write_all(text.as_bytes()))
    }
}
