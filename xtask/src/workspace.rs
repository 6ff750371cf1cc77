//! Paths of this repository and running its binaries.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// Returns the repository root, the parent of this crate's directory.
pub fn root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the root.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Returns the cargo that runs this task.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Builds the `tender` binary (dev profile) and returns its path.
pub fn build_tender() -> anyhow::Result<PathBuf> {
    let cargo = cargo();
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--package", "tender-builder", "--bin", "tender"])
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("`cargo build --package tender-builder --bin tender` failed ({status}); fix the build errors above");
    }
    Ok(target_dir().join("debug/tender"))
}

/// Runs `command`, echoing it to stderr, and fails when it fails.
pub fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {command:?}");
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
