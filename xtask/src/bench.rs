//! `cargo xtask bench`: runs each benchmark, which leaves its numbers in
//! `target/fabnet-bench/<name>.json`, and rewrites that benchmark's section of
//! BENCHMARKS.md, so every figure there carries its command, machine and date.

use crate::{run_checked, setup, workspace_root};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs;
use std::process::Command;

/// A benchmark: its name, the cargo arguments that run it, and what it measures.
struct Bench {
    name: &'static str,
    cargo_args: &'static [&'static str],
    title: &'static str,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "extract",
        cargo_args: &["bench", "-p", "fabnet-video", "--bench", "extract"],
        title: "Frame extraction against the ffmpeg CLI",
    },
    Bench {
        name: "warp",
        cargo_args: &["bench", "-p", "fabnet-core", "--bench", "warp"],
        title: "grid_sample and bilinear upsample against PyTorch",
    },
    Bench {
        name: "model",
        cargo_args: &["bench", "-p", "fabnet-core", "--bench", "model"],
        title: "FAb-Net forward and backward against PyTorch",
    },
    Bench {
        name: "conv",
        cargo_args: &["bench", "-p", "fabnet-core", "--bench", "conv_layers"],
        title: "Each conv of the training step against PyTorch",
    },
    Bench {
        name: "train",
        cargo_args: &["bench", "-p", "fabnet-train", "--bench", "train_step"],
        title: "Training step against PyTorch",
    },
    Bench {
        name: "synth",
        cargo_args: &["bench", "-p", "fabnet-synth", "--bench", "synth"],
        title: "Synthetic talking-head rendering and encoding",
    },
    Bench {
        name: "knn",
        cargo_args: &["bench", "-p", "fabnet-probe", "--bench", "knn"],
        title: "Exact nearest-neighbour search against NumPy",
    },
    Bench {
        name: "embed",
        cargo_args: &["bench", "-p", "fabnet-cli", "--bench", "embed"],
        title: "Embedding throughput against PyTorch (eval mode)",
    },
    Bench {
        name: "loader",
        cargo_args: &["bench", "-p", "fabnet-data", "--bench", "loader"],
        title: "Training data loader throughput",
    },
];

/// Debian packages of the PyTorch reference column (CPU torch 1.13).
const TORCH_PACKAGES: &[&str] = &["python3-torch", "libopenblas0-pthread", "python3-numpy"];

/// Runs the named benchmarks (all when none is named) and rewrites their
/// sections of BENCHMARKS.md. `--with-torch` installs the PyTorch reference.
pub fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    let mut names: Vec<&str> = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--with-torch" => setup::install(TORCH_PACKAGES)?,
            name => names.push(name),
        }
    }
    let selected: Vec<&Bench> = if names.is_empty() {
        BENCHES.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                BENCHES
                    .iter()
                    .find(|b| b.name == *n)
                    .with_context(|| format!("unknown bench `{n}`"))
            })
            .collect::<Result<_>>()?
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out_dir = workspace_root().join("target/fabnet-bench");
    let machine = machine();
    let mut failed = Vec::new();
    for bench in selected {
        let json = out_dir.join(format!("{}.json", bench.name));
        let _ = fs::remove_file(&json);
        if let Err(e) = run_checked(&cargo, bench.cargo_args) {
            eprintln!("xtask bench: {}: {e:#}", bench.name);
            failed.push(bench.name);
            continue;
        }
        let text = fs::read_to_string(&json)
            .with_context(|| format!("bench `{}` wrote no {}", bench.name, json.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid json", json.display()))?;
        let section = render_section(bench, &value, &machine)?;
        replace_section(bench.name, &section)?;
        eprintln!("xtask bench: {} recorded in BENCHMARKS.md", bench.name);
    }
    if !failed.is_empty() {
        bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// One line naming the CPU, core count, memory and OS of this machine.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|s| s.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown os".into());
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, {os}")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
        None => "missing".into(),
    }
}

/// Renders one bench's JSON (the contract in ARCHITECTURE.md) as Markdown.
fn render_section(bench: &Bench, value: &Value, machine: &str) -> Result<String> {
    let rows = value["rows"]
        .as_array()
        .with_context(|| format!("bench `{}`: json has no rows", bench.name))?;
    let mut s = String::new();
    s.push_str(&format!("## {}\n\n", bench.title));
    s.push_str(&format!(
        "Command: `cargo xtask bench {}` (runs `cargo {}`).\n",
        bench.name,
        bench.cargo_args.join(" ")
    ));
    s.push_str(&format!("Machine: {machine}.\n"));
    s.push_str(&format!("Date: {}.\n\n", today()));
    s.push_str(
        "| case | fabnet | reference | advantage (>1: fabnet better) | unit | reference is |\n",
    );
    s.push_str("|---|---|---|---|---|---|\n");
    for row in rows {
        let ours = &row["ours"];
        let reference = &row["reference"];
        let lower_is_better = row["lower_is_better"].as_bool().unwrap_or(true);
        let ratio = match (ours.as_f64(), reference.as_f64()) {
            (Some(o), Some(r)) if o > 0.0 && r > 0.0 => {
                let speedup = if lower_is_better { r / o } else { o / r };
                format!("{speedup:.2}×")
            }
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row["case"].as_str().unwrap_or("?"),
            number(ours),
            number(reference),
            ratio,
            row["unit"].as_str().unwrap_or(""),
            row["reference_name"].as_str().unwrap_or("none"),
        ));
    }
    if let Some(notes) = value["notes"].as_str().filter(|n| !n.is_empty()) {
        s.push_str(&format!("\n{notes}\n"));
    }
    Ok(s)
}

/// Replaces the marked section of BENCHMARKS.md, appending it when absent;
/// the file is rewritten atomically.
fn replace_section(name: &str, body: &str) -> Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let block = format!("{begin}\n{body}{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], block, &text[e + end.len()..]),
        _ => format!("{}\n{}\n", text.trim_end(), block),
    };
    let tmp = path.with_extension("md.tmp");
    fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
