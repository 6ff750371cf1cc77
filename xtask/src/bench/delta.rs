//! Tender's side of a tree pair: the robot has the older release installed
//! from an HTTP repository and installs the newer one from it. The bytes a
//! robot downloads are the body bytes the server sent for that second
//! install, metadata included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tender_e2e::fault_server::{FaultServer, RequestLog};

use super::files::copy_tree;
use super::measure::{median_bytes, summarize, Summary};
use super::robot::{active_slot, fresh_robot, install_json, measured_install, stat, Tools};

/// Maximum time of one install of a pair.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Two releases in one repository.
pub struct PairInput<'a> {
    pub label: String,
    /// `OUT/repo` of `tender release`, holding both versions.
    pub repo: &'a Path,
    pub old_version: &'a str,
    pub new_version: &'a str,
    /// A caveat printed under the pair's heading.
    pub note: Option<String>,
}

/// Tender's numbers for one pair, medians over the runs.
pub struct TenderPair {
    /// Body bytes the server sent for the upgrade, metadata included.
    pub download_bytes: u64,
    /// Part of `download_bytes` outside `chunks/`: TUF metadata and the
    /// release manifest.
    pub metadata_bytes: u64,
    pub requests: usize,
    /// Time and peak memory of `tenderd install` of the newer release.
    pub apply: Summary,
    /// The upgrade's `--json` report of the last run.
    pub report: serde_json::Value,
    /// Body bytes of installing the older release on an empty robot.
    pub full_install_bytes: u64,
}

/// Copies of the slots after the first run. The other tools work on them,
/// so every tool packages the same files.
pub struct SlotTrees {
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Installs the older release, then measures the install of the newer one,
/// `runs` times on fresh robots under `work`.
pub fn bench_tender_pair(input: &PairInput, work: &Path, tools: &Tools, runs: u32) -> anyhow::Result<(TenderPair, SlotTrees)> {
    eprintln!("==> measuring Tender on {}", input.label);
    let server = FaultServer::start(input.repo).with_context(|| format!("cannot serve {}", input.repo.display()))?;
    let url = format!("{}/", server.url());
    let robot = work.join("robot");
    let trees = SlotTrees { old: work.join("old-tree"), new: work.join("new-tree") };
    let mut samples = Vec::new();
    let mut download = Vec::new();
    let mut metadata = Vec::new();
    let mut requests = Vec::new();
    let mut full = Vec::new();
    let mut report = serde_json::Value::Null;
    for run in 0..runs {
        fresh_robot(&robot, &tools.keys)?;

        let start = server.requests().len();
        install_json(&tools.tenderd, &robot, &url, Some(input.old_version))?;
        let middle = server.requests().len();
        if run == 0 {
            copy_tree(&active_slot(&robot)?, &trees.old)?;
        }
        let (sample, upgrade) = measured_install(&tools.tenderd, &robot, &url, Some(input.new_version), INSTALL_TIMEOUT)?;
        if run == 0 {
            copy_tree(&active_slot(&robot)?, &trees.new)?;
        }

        let log = server.requests();
        full.push(body_bytes(&log[start..middle]));
        let upgrade_log = &log[middle..];
        download.push(body_bytes(upgrade_log));
        metadata.push(body_bytes(upgrade_log.iter().filter(|r| !r.path.starts_with("/chunks/"))));
        requests.push(upgrade_log.len() as u64);
        samples.push(sample);
        report = upgrade;
    }
    super::robot::remove_if_present(&robot)?;
    let pair = TenderPair {
        download_bytes: median_bytes(&download),
        metadata_bytes: median_bytes(&metadata),
        requests: median_bytes(&requests) as usize,
        apply: summarize(&samples),
        report,
        full_install_bytes: median_bytes(&full),
    };
    eprintln!(
        "    Tender downloaded {} bytes ({} metadata), bytes_fetched {}",
        pair.download_bytes,
        pair.metadata_bytes,
        stat(&pair.report, "bytes_fetched")
    );
    Ok((pair, trees))
}

/// Sum of the body bytes of `log`.
pub fn body_bytes<'a>(log: impl IntoIterator<Item = &'a RequestLog>) -> u64 {
    log.into_iter().map(|request| request.body_bytes).sum()
}
