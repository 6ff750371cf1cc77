//! Peak memory of `tenderd install` for a release of 1 GiB, from a bundle
//! and from an HTTP repository, on an empty robot.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tender_e2e::fault_server::FaultServer;

use super::files::{file_len, path_text, strings, tree_size};
use super::measure::{measure_with, summarize, Summary};
use super::robot::{fresh_robot, measured_install, remove_if_present, Tools};

/// Maximum time of one release or install of the big tree.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub struct MemoryResult {
    pub files: usize,
    pub bytes: u64,
    pub bundle_bytes: u64,
    pub release: Summary,
    pub from_bundle: Summary,
    pub from_http: Summary,
}

/// Releases `tree` once, then installs it `runs` times from the bundle and
/// from the repository served over HTTP.
pub fn bench_memory(tree: &Path, work: &Path, tools: &Tools, epoch: &str, runs: u32) -> anyhow::Result<MemoryResult> {
    eprintln!("==> measuring memory on {}", tree.display());
    let (files, bytes) = tree_size(tree);
    let out = work.join("memory-out");
    remove_if_present(&out)?;
    let release = [
        vec![path_text(&tools.tender), "release".into(), "--recipe".into(), path_text(&tools.recipe)],
        strings(&["--version", "1.0.0", "--source-date-epoch", epoch, "--out"]),
        vec![path_text(&out), "--keys".into(), path_text(&tools.keys), "--tree".into(), path_text(tree)],
    ]
    .concat();
    let release = measure_with(&release, &[("RUST_LOG", "warn")], TIMEOUT)?.sample;
    let bundle = out.join("bench-1.0.0.tender");
    let bundle_bytes = file_len(&bundle)?;

    let robot = work.join("robot-memory");
    let server = FaultServer::start(&out.join("repo")).with_context(|| format!("cannot serve {}", out.display()))?;
    let url = format!("{}/", server.url());
    let mut from_bundle = Vec::new();
    let mut from_http = Vec::new();
    for _ in 0..runs {
        fresh_robot(&robot, &tools.keys)?;
        from_bundle.push(measured_install(&tools.tenderd, &robot, &path_text(&bundle), None, TIMEOUT)?.0);
        fresh_robot(&robot, &tools.keys)?;
        from_http.push(measured_install(&tools.tenderd, &robot, &url, None, TIMEOUT)?.0);
    }
    drop(server);
    remove_if_present(&robot)?;
    remove_if_present(&out)?;
    Ok(MemoryResult {
        files,
        bytes,
        bundle_bytes,
        release: summarize(&[release]),
        from_bundle: summarize(&from_bundle),
        from_http: summarize(&from_http),
    })
}
