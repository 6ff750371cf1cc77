//! The build tools of a release: a Python virtual environment with colcon,
//! CMake, Ninja and setuptools from PyPI, at pinned versions, plus
//! python-tuf for the interoperability tests and prometheus_client for the
//! metrics tests.
//!
//! The environment is created once. A marker file inside it records the
//! requirement list it was installed with, so a later run skips pip when the
//! list is unchanged and installs again when it changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::workspace::{run_checked, target_dir};

/// Pinned PyPI requirements of the build environment. colcon's own packages
/// are pinned too, because they write the setup scripts of the install tree.
// TODO: pin the remaining transitive dependencies, with hashes.
pub const REQUIREMENTS: &[&str] = &[
    "colcon-common-extensions==0.3.0",
    "colcon-core==0.21.3",
    "colcon-cmake==0.2.30",
    "colcon-python-setup-py==0.2.9",
    "cmake==4.4.5",
    "ninja==1.13.2",
    "setuptools==65.5.0",
    // The reference TUF implementation, for the interoperability tests.
    "tuf==7.0.1",
    "securesystemslib[crypto]==1.6.0",
    // The Prometheus text parser that checks `tenderd metrics` output.
    "prometheus_client==0.26.0",
];

/// Name of the marker file inside the virtual environment.
const MARKER: &str = ".tender-requirements.txt";

/// Path of the build environment, `target/tender-venv`.
pub fn venv_dir() -> PathBuf {
    target_dir().join("tender-venv")
}

/// Creates or updates the build environment and returns its path.
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let marker = venv.join(MARKER);
    let expected = requirement_list();
    let installed = std::fs::read_to_string(&marker).unwrap_or_default();
    if installed == expected && venv.join("bin/colcon").is_file() {
        return Ok(venv);
    }
    let python = venv.join("bin/python3");
    if !python.is_file() {
        eprintln!("creating the build environment {}", venv.display());
        run_checked(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("cannot create the Python virtual environment; install python3 with the venv module")?;
    }
    eprintln!("installing {} into {}", REQUIREMENTS.join(" "), venv.display());
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
            .args(REQUIREMENTS),
    )
    .context("cannot install the build tools from PyPI; check the network or a pip proxy")?;
    write_marker(&marker, &expected)?;
    Ok(venv)
}

fn requirement_list() -> String {
    let mut list = REQUIREMENTS.join("\n");
    list.push('\n');
    list
}

fn write_marker(marker: &Path, list: &str) -> anyhow::Result<()> {
    std::fs::write(marker, list).with_context(|| format!("cannot write {}", marker.display()))
}
