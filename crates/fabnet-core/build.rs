//! Builds kernels/warp.cu to PTX with nvcc, only when the `cuda` feature is
//! on; a CPU build never needs the CUDA toolkit.
//!
//! The PTX targets `compute_$CUDA_COMPUTE_CAP` (default 70), which the driver
//! JIT-compiles for newer GPUs. `$NVCC` overrides the compiler path.

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
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "70".to_string());
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
