//! Architecture invariants of ARCHITECTURE.md, checked by reading the
//! manifests and sources of the workspace (the rust-analyzer "tidy" pattern).

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate sits in the workspace root")
        .to_path_buf()
}

/// Every crate under `crates/` with its parsed manifest.
fn crates() -> Vec<(String, toml::Table)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join("crates")).expect("crates/ exists") {
        let dir = entry.expect("readable crates/ entry").path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = fs::read_to_string(&manifest).expect("readable manifest");
        let table: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let name = table["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_string();
        out.push((name, table));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Package names of normal dependencies (optional ones included, renames
/// resolved).
fn normal_deps(manifest: &toml::Table) -> Vec<String> {
    deps_of(manifest, &["dependencies"])
}

/// Package names of every dependency: normal, dev and build, also under
/// `[target.*]`, with `package = ...` renames resolved.
fn all_deps(manifest: &toml::Table) -> Vec<String> {
    deps_of(
        manifest,
        &["dependencies", "dev-dependencies", "build-dependencies"],
    )
}

fn deps_of(manifest: &toml::Table, kinds: &[&str]) -> Vec<String> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    for kind in kinds {
        tables.extend(manifest.get(*kind).and_then(|t| t.as_table()));
    }
    for target in manifest
        .get("target")
        .and_then(|t| t.as_table())
        .into_iter()
        .flat_map(|t| t.values())
    {
        for kind in kinds {
            tables.extend(target.get(*kind).and_then(|t| t.as_table()));
        }
    }
    tables
        .into_iter()
        .flat_map(|t| t.iter())
        .map(|(name, spec)| {
            spec.get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

fn manifest_of(name: &str) -> Option<toml::Table> {
    crates()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
}

/// Architecture invariant: fabnet-data is reusable alone, without the model,
/// not even in its tests.
#[test]
fn data_loader_is_free_of_the_model() {
    let manifest = manifest_of("fabnet-data").expect("fabnet-data exists");
    let deps = all_deps(&manifest);
    assert!(
        deps.iter().any(|d| d == "image"),
        "manifest not understood: {deps:?}"
    );
    for banned in ["fabnet-core", "candle-nn", "fabnet-train", "fabnet-probe"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "fabnet-data must not depend on {banned}"
        );
    }
}

/// Architecture invariant: probes and retrieval work on embeddings from any
/// source, so fabnet-probe depends on no model or tensor library.
#[test]
fn probes_are_free_of_the_model() {
    let manifest = manifest_of("fabnet-probe").expect("fabnet-probe exists");
    let deps = all_deps(&manifest);
    assert!(
        deps.iter().any(|d| d == "image"),
        "manifest not understood: {deps:?}"
    );
    for banned in ["fabnet-core", "fabnet-train", "candle-core", "candle-nn"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "fabnet-probe must not depend on {banned}"
        );
    }
}

/// Architecture invariant: video extraction needs no tensor library.
#[test]
fn video_crate_is_free_of_candle() {
    let manifest = manifest_of("fabnet-video").expect("fabnet-video exists");
    let deps = all_deps(&manifest);
    assert!(
        !deps
            .iter()
            .any(|d| d.starts_with("candle") || d.starts_with("fabnet-core")),
        "fabnet-video must not depend on candle or fabnet-core: {deps:?}"
    );
}

/// Architecture invariant: libraries return typed errors; anyhow lives only
/// at the CLI and xtask edges.
#[test]
fn libraries_do_not_use_anyhow() {
    for (name, manifest) in crates() {
        if name == "fabnet-cli" {
            continue;
        }
        assert!(
            !normal_deps(&manifest).iter().any(|d| d == "anyhow"),
            "{name} is a library and must use thiserror, not anyhow"
        );
    }
}

/// Architecture invariant: a CPU build never needs nvcc, so no crate turns on
/// CUDA by default.
#[test]
fn cuda_is_opt_in() {
    for (name, manifest) in crates() {
        let default = manifest
            .get("features")
            .and_then(|f| f.get("default"))
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        assert!(
            !default
                .iter()
                .any(|f| f.as_str().is_some_and(|s| s.contains("cuda"))),
            "{name} enables cuda by default"
        );
    }
}

/// Architecture invariant: xtask builds before `setup` has installed any
/// system library, so it depends on no workspace crate.
#[test]
fn xtask_depends_on_no_workspace_crate() {
    let text = fs::read_to_string(root().join("xtask/Cargo.toml")).expect("xtask manifest");
    let manifest: toml::Table = text.parse().expect("xtask manifest parses");
    let deps = normal_deps(&manifest);
    assert!(
        !deps.iter().any(|d| d.starts_with("fabnet")),
        "xtask must not depend on workspace crates: {deps:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Tidy: every source module opens with a `//!` paragraph.
#[test]
fn every_module_has_a_doc_paragraph() {
    let mut files = Vec::new();
    for dir in ["crates", "xtask/src", "tests/src", "tests/tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:?}");
}

/// Tidy: no test is silently switched off or passes by panicking.
#[test]
fn no_ignored_or_should_panic_tests() {
    let mut files = Vec::new();
    for dir in ["crates", "tests/tests", "xtask/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        for pattern in banned {
            assert!(
                !text.contains(pattern),
                "{} contains {pattern}]",
                file.display()
            );
        }
    }
}

/// Tidy: every library crate's lib.rs ends with a `pub use` list, the crate's
/// front door.
#[test]
fn libraries_end_with_a_pub_use_list() {
    for (name, _) in crates() {
        if name == "fabnet-cli" {
            continue;
        }
        let lib = root().join("crates").join(&name).join("src/lib.rs");
        let text = fs::read_to_string(&lib).unwrap_or_default();
        assert!(
            text.contains("pub use "),
            "{} has no pub use list",
            lib.display()
        );
    }
}
