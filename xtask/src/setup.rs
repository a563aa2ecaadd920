//! System packages: checked with dpkg, installed with apt-get when missing.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Debian 12 packages: FFmpeg 5.1 development files for video-rs/ffmpeg-next
/// (whose default features also link libavfilter and libavdevice), libclang
/// for bindgen, pkg-config, and the ffmpeg CLI that tests and benches compare
/// against.
pub const PACKAGES: &[&str] = &[
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libswscale-dev",
    "libswresample-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "libclang-dev",
    "pkg-config",
    "ffmpeg",
];

/// Installs whatever of [`PACKAGES`] is missing; does nothing when all is there.
pub fn run() -> Result<()> {
    install(PACKAGES)
}

/// Installs the given Debian packages if any is missing.
pub fn install(packages: &[&str]) -> Result<()> {
    if !has_program("dpkg-query") || !has_program("apt-get") {
        eprintln!(
            "xtask setup: this system has no apt; install these packages (or their equivalents) by hand:\n  {}",
            packages.join(" ")
        );
        bail!("no apt-get on this system");
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    let sudo = !is_root();
    apt(sudo, &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q"];
    args.extend(&missing);
    apt(sudo, &args)?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if !still.is_empty() {
        bail!("apt-get did not install: {}", still.join(" "));
    }
    Ok(())
}

fn apt(sudo: bool, args: &[&str]) -> Result<()> {
    let mut command = if sudo {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    } else {
        Command::new("apt-get")
    };
    let status = command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not start apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// True when dpkg reports the package as installed.
pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
