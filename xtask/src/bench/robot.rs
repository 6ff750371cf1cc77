//! Simulated robots under a directory (`tenderd --root`), and `tenderd
//! install` on them, plain or measured.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::measure::{measure_with, Sample};

/// The binaries, keys and tree recipe every section uses.
pub struct Tools {
    pub tender: PathBuf,
    pub tenderd: PathBuf,
    pub keys: PathBuf,
    /// Recipe for packaging a prebuilt tree (`tender release --tree`).
    pub recipe: PathBuf,
}

/// Slot base of the bench recipe and of the sample recipe.
pub const SLOT_BASE: &str = "opt/ecar";

/// Writes `etc/tender/updater.toml` and the trusted root under `robot`.
/// Service commands are `true`, and the download policy keeps the defaults
/// of `updater/src/config.rs` (8 attempts per file, exponential backoff from
/// 500 ms up to 60 s).
pub fn make_robot(robot: &Path, keys: &Path) -> anyhow::Result<()> {
    let etc = robot.join("etc/tender");
    fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
    let root = keys.join("root.json");
    fs::copy(&root, etc.join("root.json")).with_context(|| format!("cannot copy {} into the robot", root.display()))?;
    fs::write(
        etc.join("updater.toml"),
        "compatible = \"ecar-4wd4ws\"\n[trust]\nroot = \"/etc/tender/root.json\"\n[services]\nrestart = [\"true\"]\nis_active = [\"true\"]\nactive_timeout = \"10s\"\n",
    )
    .with_context(|| format!("cannot write the configuration of the robot {}", robot.display()))?;
    Ok(())
}

/// Removes `robot` if present and creates an empty one.
pub fn fresh_robot(robot: &Path, keys: &Path) -> anyhow::Result<()> {
    remove_if_present(robot)?;
    make_robot(robot, keys)
}

/// Removes a directory tree if it exists.
pub fn remove_if_present(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Directory of the slot that `current` points to on `robot`.
pub fn active_slot(robot: &Path) -> anyhow::Result<PathBuf> {
    let link = robot.join(SLOT_BASE).join("current");
    let target = fs::read_link(&link).with_context(|| format!("cannot read the link {}", link.display()))?;
    Ok(robot.join(SLOT_BASE).join(target))
}

/// Runs `tenderd install --json SOURCE [--version V]` unmeasured and returns
/// its report.
pub fn install_json(tenderd: &Path, robot: &Path, source: &str, version: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new(tenderd);
    command.arg("--root").arg(robot).args(["install", "--json", source]).env("RUST_LOG", "warn");
    if let Some(version) = version {
        command.args(["--version", version]);
    }
    let output = command.output().with_context(|| format!("cannot run {}", tenderd.display()))?;
    if !output.status.success() {
        bail!("tenderd install {source} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("invalid JSON from tenderd install {source}"))
}

/// Runs `tenderd install --json SOURCE [--version V]` under the measurement
/// wrapper and returns the sample and the report.
pub fn measured_install(
    tenderd: &Path,
    robot: &Path,
    source: &str,
    version: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Sample, serde_json::Value)> {
    let mut argv = vec![
        tenderd.display().to_string(),
        "--root".to_owned(),
        robot.display().to_string(),
        "install".to_owned(),
        "--json".to_owned(),
        source.to_owned(),
    ];
    if let Some(version) = version {
        argv.extend(["--version".to_owned(), version.to_owned()]);
    }
    let measured = measure_with(&argv, &[("RUST_LOG", "warn")], timeout)?;
    let report = serde_json::from_str(&measured.stdout).with_context(|| format!("invalid JSON from tenderd install {source}"))?;
    Ok((measured.sample, report))
}

/// Reads a field of the `stats` object of an install report, 0 when missing.
pub fn stat(report: &serde_json::Value, field: &str) -> u64 {
    report["stats"][field].as_u64().unwrap_or(0)
}
