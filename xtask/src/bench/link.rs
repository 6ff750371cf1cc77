//! A full install over a link that drops every response after 1 MiB of
//! body, against the same install over a clean link.
//!
//! The fault server closes each connection after `DROP_AFTER` body bytes,
//! on every request. `tenderd` resumes chunk downloads with `Range` and
//! retries other files from their start, with the download policy of
//! [`super::robot::make_robot`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tender_e2e::fault_server::{Fault, FaultServer};

use super::delta::body_bytes;
use super::measure::Sample;
use super::robot::{fresh_robot, install_json, measured_install, remove_if_present, Tools};

/// Body bytes after which the server closes each connection.
pub const DROP_AFTER: u64 = 1 << 20;
/// Maximum time of the install over the faulty link.
const LINK_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Outcome of the install over the faulty link.
pub struct LinkResult {
    pub label: String,
    /// Body bytes of the install over a clean link.
    pub needed_bytes: u64,
    /// Body bytes the faulty server sent, failed attempts included.
    pub sent_bytes: u64,
    pub requests: usize,
    /// Responses that stopped at [`DROP_AFTER`] body bytes: the ones the
    /// server cut, and any file of exactly that size.
    pub cut_responses: usize,
    /// Time and peak memory when the install succeeded, else the error.
    pub outcome: Result<Sample, String>,
}

/// Installs `version` from `repo` on an empty robot over a clean link and
/// then over the faulty one.
pub fn bench_link(label: &str, repo: &Path, version: &str, work: &Path, tools: &Tools) -> anyhow::Result<LinkResult> {
    eprintln!("==> installing {label} over a link that drops every {DROP_AFTER} bytes");
    let robot = work.join("robot-link");

    let clean = FaultServer::start(repo).with_context(|| format!("cannot serve {}", repo.display()))?;
    fresh_robot(&robot, &tools.keys)?;
    install_json(&tools.tenderd, &robot, &format!("{}/", clean.url()), Some(version))?;
    let needed_bytes = clean.body_bytes_sent();
    drop(clean);

    let faulty = FaultServer::start(repo).with_context(|| format!("cannot serve {}", repo.display()))?;
    faulty.add_fault("/", Fault::DropAfter(DROP_AFTER), None);
    fresh_robot(&robot, &tools.keys)?;
    let outcome = measured_install(&tools.tenderd, &robot, &format!("{}/", faulty.url()), Some(version), LINK_TIMEOUT)
        .map(|(sample, _)| sample)
        .map_err(|error| format!("{error:#}"));
    if let Err(error) = &outcome {
        eprintln!("    the install over the faulty link failed: {error}");
    }
    let log = faulty.requests();
    let result = LinkResult {
        label: label.to_owned(),
        needed_bytes,
        sent_bytes: body_bytes(&log),
        requests: log.len(),
        cut_responses: log.iter().filter(|request| request.body_bytes == DROP_AFTER).count(),
        outcome,
    };
    remove_if_present(&robot)?;
    Ok(result)
}
