//! The sample workspace released three times with one-line changes, and
//! those releases installed in order on one robot from their bundles.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::files::{copy_tree, tree_size};
use super::robot::{install_json, make_robot, Tools};
use crate::workspace::{root, run_checked};

/// Versions of the sample workspace; each differs from the one before in
/// one line of `servo_controller`.
pub const SAMPLE_VERSIONS: [&str; 3] = ["1.0.0", "1.0.1", "1.0.2"];

/// Output of [`release_sample_workspace`].
pub struct SampleReleases {
    /// `tender release --out` of every version: `repo/`, the bundles and
    /// colcon's `work/`.
    pub dist: PathBuf,
}

/// Bytes an upgrade wrote and fetched, from `tenderd install --json`.
pub struct UpgradeResult {
    pub label: String,
    pub report: serde_json::Value,
    pub tree_bytes: u64,
}

/// Releases the versions of `recipes/ecar-ws` into one output directory,
/// with `epoch` as `SOURCE_DATE_EPOCH`.
pub fn release_sample_workspace(work: &Path, tools: &Tools, venv: &Path, epoch: &str) -> anyhow::Result<SampleReleases> {
    eprintln!("==> releasing the sample workspace");
    let source = work.join("src");
    copy_tree(&root().join("recipes"), &source)?;
    let dist = work.join("dist");
    let version_file = source.join("ecar-ws/src/servo_controller/include/servo_controller/version.hpp");
    let mut previous = SAMPLE_VERSIONS[0].to_owned();
    for version in SAMPLE_VERSIONS {
        if version != SAMPLE_VERSIONS[0] {
            let text = fs::read_to_string(&version_file).with_context(|| format!("cannot read {}", version_file.display()))?;
            fs::write(&version_file, text.replace(&format!("\"{previous}\""), &format!("\"{version}\"")))
                .with_context(|| format!("cannot write {}", version_file.display()))?;
        }
        run_checked(
            Command::new(&tools.tender)
                .arg("release")
                .arg("--recipe")
                .arg(source.join("ecar-4wd4ws.toml"))
                .args(["--version", version, "--source-date-epoch", epoch, "--out"])
                .arg(&dist)
                .arg("--keys")
                .arg(&tools.keys)
                .arg("--colcon-venv")
                .arg(venv)
                .stdout(std::process::Stdio::null()),
        )?;
        previous = version.to_owned();
    }
    Ok(SampleReleases { dist })
}

/// Installs the sample releases in order on one robot from their bundles.
pub fn bench_upgrades(work: &Path, tools: &Tools, releases: &SampleReleases) -> anyhow::Result<Vec<UpgradeResult>> {
    eprintln!("==> measuring upgrades of the sample workspace");
    let robot = work.join("robot-upgrades");
    make_robot(&robot, &tools.keys)?;
    let (_, tree_bytes) = tree_size(&releases.dist.join("work/install"));
    let labels = [
        ("1.0.0", "1.0.0 on an empty robot"),
        ("1.0.1", "1.0.1 over 1.0.0 (slot b empty)"),
        ("1.0.2", "1.0.2 over 1.0.1 (slot a holds 1.0.0)"),
    ];
    let mut results = Vec::new();
    for (version, label) in labels {
        let bundle = releases.dist.join(format!("ecar-4wd4ws-{version}.tender"));
        let report = install_json(&tools.tenderd, &robot, &bundle.display().to_string(), None)?;
        results.push(UpgradeResult { label: label.to_owned(), report, tree_bytes });
    }
    Ok(results)
}
