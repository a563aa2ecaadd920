//! Builds kernels/warp.cu to PTX with nvcc, only when the `cuda` feature is
//! on; a CPU build never needs the CUDA toolkit.
//!
//! The PTX targets `compute_$CUDA_COMPUTE_CAP`; without that variable, the
//! compute capability `nvidia-smi` reports for the first GPU, and failing
//! that 75 (the oldest CUDA 13 accepts: its nvcc rejects compute_70, as seen
//! on the GPU check of 2026-11-28). The driver JIT-compiles the PTX for newer
//! GPUs. `$NVCC` overrides the compiler path.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels/warp.cu");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("warp.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .or_else(gpu_compute_cap)
        .unwrap_or_else(|| "75".to_string());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++14"])
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg("kernels/warp.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on kernels/warp.cu with {s}"),
        Err(e) => panic!(
            "the `cuda` feature needs nvcc to build kernels/warp.cu, and running `{nvcc}` failed: {e}"
        ),
    }
}

/// The first GPU's compute capability as nvidia-smi prints it ("9.0"), if any.
fn gpu_compute_cap() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let first = text.lines().next()?.trim();
    (out.status.success() && !first.is_empty()).then(|| first.to_string())
}
