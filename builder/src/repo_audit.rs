//! `tender audit` of a TUF repository, on disk or over HTTP: the checks of
//! a TUF 1.0 client (root chain, timestamp, snapshot, targets), then the
//! length and hashes of every target and every chunk of every release.
//!
//! The audit does not stop at the first failure: it records each one and
//! goes on with what it can still check, so one run lists every problem.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tender_keys::{
    parse_time, verify_delegated, verify_root, verify_root_update, verify_snapshot, verify_targets, verify_timestamp,
    MetaFile, Root, SignatureReport, TargetFile, Targets, Verified,
};
use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::layout::repo_chunk_path;
use tender_updater::format::limits::{MAX_MANIFEST_BYTES, MAX_STORED_CHUNK_BYTES};
use tender_updater::format::ReleaseInfo;
use tender_updater::source::{read_bounded, SourceError};
use tender_updater::verify::verify_release;

use crate::audit::{distinct_chunks, key_list, ReleaseAudit};
use crate::publish::{
    consistent_target_path, versioned_file, MAX_METADATA_BYTES, METADATA_DIR, ROOT_FILE, SNAPSHOT_FILE, TARGETS_FILE,
    TIMESTAMP_FILE,
};
use crate::rootchain::MAX_ROOT_VERSIONS;

/// Failures that stop an audit before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RepoAuditError {
    #[error("cannot read the trusted root {}: {source}", path.display())]
    Root { path: PathBuf, source: std::io::Error },

    #[error("cannot create an HTTP client for {url}: {detail}")]
    Http { url: String, detail: String },
}

/// Source of the repository's files: a directory or an HTTP base URL.
enum Fetcher {
    Dir(PathBuf),
    Http { base: String, client: reqwest::blocking::Client },
}

impl Fetcher {
    fn open(source: &str) -> Result<Self, RepoAuditError> {
        if source.starts_with("http://") || source.starts_with("https://") {
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| RepoAuditError::Http { url: source.to_owned(), detail: e.to_string() })?;
            return Ok(Fetcher::Http { base: source.trim_end_matches('/').to_owned(), client });
        }
        Ok(Fetcher::Dir(PathBuf::from(source)))
    }

    /// Reads `relative` with at most `limit` bytes; `Ok(None)` when it does not exist.
    fn get(&self, relative: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
        match self {
            Fetcher::Dir(dir) => {
                let path = dir.join(relative);
                match read_bounded(&path, limit, relative) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(SourceError::NotFound { .. }) => Ok(None),
                    Err(error) => Err(error.to_string()),
                }
            }
            Fetcher::Http { base, client } => {
                use std::io::Read;
                let url = format!("{base}/{relative}");
                let response = client.get(&url).send().map_err(|e| format!("download of {url} failed: {e}"))?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !response.status().is_success() {
                    return Err(format!("download of {url} failed: server answered {}", response.status()));
                }
                let mut bytes = Vec::new();
                response.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("download of {url} failed: {e}"))?;
                if bytes.len() as u64 > limit {
                    return Err(format!("{url} is more than the limit of {limit} bytes"));
                }
                Ok(Some(bytes))
            }
        }
    }
}

/// One verified metadata file.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataAudit {
    pub file: String,
    pub version: u64,
    pub expires: String,
    pub signatures: SignatureReport,
}

/// The whole audit, as `tender audit --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RepoAudit {
    pub source: String,
    /// True when no check failed.
    pub ok: bool,
    /// The root the chain was checked from: a `--root` file, or version 1
    /// of the repository itself (trust on first use).
    pub trusted_root: String,
    pub roots: Vec<MetadataAudit>,
    pub timestamp: Option<MetadataAudit>,
    pub snapshot: Option<MetadataAudit>,
    pub targets: Option<MetadataAudit>,
    pub delegations: Vec<MetadataAudit>,
    pub releases: Vec<ReleaseAudit>,
    /// Every failed check, one line each.
    pub errors: Vec<String>,
}

impl RepoAudit {
    fn fail(&mut self, message: String) {
        tracing::debug!(message, "audit check failed");
        self.ok = false;
        self.errors.push(message);
    }

    /// Returns the first failure, for a one-line error.
    pub fn first_error(&self) -> Option<String> {
        self.errors
            .first()
            .cloned()
            .or_else(|| self.releases.iter().flat_map(|r| r.chunk_errors.first()).next().cloned())
    }

    /// Renders the report for a terminal, one line per fact.
    pub fn to_text(&self) -> String {
        let mut lines = vec![format!("source: {}", self.source), format!("trusted root: {}", self.trusted_root)];
        let describe = |m: &MetadataAudit| {
            format!(
                "{}: version {}, expires {}, signed by {} of threshold {} ({} keys)",
                m.file,
                m.version,
                m.expires,
                key_list(&m.signatures.valid),
                m.signatures.threshold,
                m.signatures.role
            )
        };
        lines.extend(self.roots.iter().map(describe));
        lines.extend([&self.timestamp, &self.snapshot, &self.targets].into_iter().flatten().map(describe));
        lines.extend(self.delegations.iter().map(describe));
        for release in &self.releases {
            lines.extend(release.to_lines());
        }
        for error in &self.errors {
            lines.push(format!("error: {error}"));
        }
        lines.push(if self.ok { "result: OK".to_owned() } else { "result: FAILED".to_owned() });
        lines.join("\n")
    }
}

fn metadata_audit(file: String, version: u64, expires: &str, report: &SignatureReport) -> MetadataAudit {
    MetadataAudit { file, version, expires: expires.to_owned(), signatures: report.clone() }
}

/// Audits the repository at `source` (a directory or an http(s) URL),
/// trusting `trusted_root` when given and the repository's own version 1
/// root otherwise.
pub fn audit_repository(source: &str, trusted_root: Option<&Path>) -> Result<RepoAudit, RepoAuditError> {
    let fetcher = Fetcher::open(source)?;
    let trusted_bytes = match trusted_root {
        Some(path) => Some(std::fs::read(path).map_err(|source| RepoAuditError::Root { path: path.to_owned(), source })?),
        None => None,
    };
    let mut report = RepoAudit {
        source: source.to_owned(),
        ok: true,
        trusted_root: match trusted_root {
            Some(path) => path.display().to_string(),
            None => format!("{METADATA_DIR}/1.root.json of the repository (trusted on first use; pass --root to check it)"),
        },
        roots: Vec::new(),
        timestamp: None,
        snapshot: None,
        targets: None,
        delegations: Vec::new(),
        releases: Vec::new(),
        errors: Vec::new(),
    };
    let now = SystemTime::now();
    let Some(root) = audit_root_chain(&fetcher, trusted_bytes.as_deref(), &mut report) else {
        return Ok(report);
    };
    check_expiry(&mut report, &format!("{METADATA_DIR}/{ROOT_FILE} version {}", root.version), &root.expires, now);
    let Some(targets) = audit_top_level(&fetcher, &root, now, &mut report) else {
        return Ok(report);
    };
    audit_targets(&fetcher, &targets, &mut report);
    Ok(report)
}

/// Walks `metadata/1.root.json`, `2.root.json`, … and returns the latest
/// verified root.
fn audit_root_chain(fetcher: &Fetcher, trusted: Option<&[u8]>, report: &mut RepoAudit) -> Option<Verified<Root>> {
    let mut latest: Option<(Verified<Root>, Vec<u8>)> = None;
    for version in 1..=MAX_ROOT_VERSIONS {
        let file = format!("{METADATA_DIR}/{}", versioned_file(version, ROOT_FILE));
        let bytes = match fetcher.get(&file, MAX_METADATA_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) if version == 1 => {
                report.fail(format!("{file} is missing; a TUF repository starts its root chain with version 1"));
                return None;
            }
            Ok(None) => break,
            Err(error) => {
                report.fail(error);
                return None;
            }
        };
        let verified = match &latest {
            None => verify_root(&bytes, &file),
            Some((previous, _)) => verify_root_update(previous, &bytes, &file),
        };
        let root = match verified {
            Ok(root) => root,
            Err(error) => {
                report.fail(format!("{file}: {error}"));
                return None;
            }
        };
        if root.version != version {
            report.fail(format!("{file} has version {}, expected {version}", root.version));
            return None;
        }
        report.roots.push(metadata_audit(file, version, &root.expires, root.report()));
        latest = Some((root, bytes));
    }
    let (root, latest_bytes) = latest?;
    if let Some(trusted) = trusted {
        match verify_root(trusted, "the trusted root") {
            Ok(trusted_root) => {
                let published = report.roots.get((trusted_root.version as usize).saturating_sub(1));
                let same = published.is_some()
                    && fetcher
                        .get(&format!("{METADATA_DIR}/{}", versioned_file(trusted_root.version, ROOT_FILE)), MAX_METADATA_BYTES)
                        .ok()
                        .flatten()
                        .is_some_and(|bytes| bytes == trusted);
                if !same {
                    report.fail(format!(
                        "the trusted root (version {}) is not version {} of this repository's root chain; the repository belongs to another root",
                        trusted_root.version, trusted_root.version
                    ));
                }
            }
            Err(error) => report.fail(format!("the trusted root: {error}")),
        }
    }
    let current = format!("{METADATA_DIR}/{ROOT_FILE}");
    match fetcher.get(&current, MAX_METADATA_BYTES) {
        Ok(Some(bytes)) if bytes != latest_bytes => {
            report.fail(format!("{current} differs from {METADATA_DIR}/{}", versioned_file(root.version, ROOT_FILE)))
        }
        Ok(_) => {}
        Err(error) => report.fail(error),
    }
    Some(root)
}

fn check_expiry(report: &mut RepoAudit, what: &str, expires: &str, now: SystemTime) {
    match parse_time(expires) {
        Some(time) if time > now => {}
        Some(_) => report.fail(format!("{what} expired at {expires}")),
        None => report.fail(format!("{what} has an invalid expiry {expires:?}")),
    }
}

/// Checks that `bytes` have the length and sha256 that `meta` lists.
fn check_meta(report: &mut RepoAudit, file: &str, listed_by: &str, meta: &MetaFile, bytes: &[u8]) {
    if let Some(length) = meta.length {
        if length != bytes.len() as u64 {
            report.fail(format!("{file} is {} bytes but {listed_by} lists {length}", bytes.len()));
        }
    }
    if let Some(hashes) = &meta.hashes {
        check_hashes(report, file, listed_by, hashes, bytes);
    }
}

fn check_hashes(report: &mut RepoAudit, file: &str, listed_by: &str, hashes: &std::collections::BTreeMap<String, String>, bytes: &[u8]) {
    match hashes.get("sha256") {
        Some(expected) => {
            let actual = hex::encode(Sha256::digest(bytes));
            if *expected != actual {
                report.fail(format!("{file} has sha256 {actual} but {listed_by} lists {expected}"));
            }
        }
        None => report.fail(format!("{listed_by} lists no sha256 for {file}, the only hash tender checks")),
    }
}

/// Fetches a required metadata file, recording a failure when it is missing.
fn fetch_required(fetcher: &Fetcher, file: &str, report: &mut RepoAudit) -> Option<Vec<u8>> {
    match fetcher.get(file, MAX_METADATA_BYTES) {
        Ok(Some(bytes)) => Some(bytes),
        Ok(None) => {
            report.fail(format!("{file} is missing"));
            None
        }
        Err(error) => {
            report.fail(error);
            None
        }
    }
}

/// Checks timestamp → snapshot → targets and returns the verified targets.
fn audit_top_level(fetcher: &Fetcher, root: &Verified<Root>, now: SystemTime, report: &mut RepoAudit) -> Option<Verified<Targets>> {
    let file = format!("{METADATA_DIR}/{TIMESTAMP_FILE}");
    let bytes = fetch_required(fetcher, &file, report)?;
    let timestamp = verify_timestamp(root, &bytes, &file).map_err(|e| report.fail(format!("{file}: {e}"))).ok()?;
    report.timestamp = Some(metadata_audit(file.clone(), timestamp.version, &timestamp.expires, timestamp.report()));
    check_expiry(report, &file, &timestamp.expires, now);
    let Some(snapshot_meta) = timestamp.meta.get(SNAPSHOT_FILE) else {
        report.fail(format!("{file} does not list {SNAPSHOT_FILE}"));
        return None;
    };

    let snapshot_name = if root.consistent_snapshot { versioned_file(snapshot_meta.version, SNAPSHOT_FILE) } else { SNAPSHOT_FILE.to_owned() };
    let file = format!("{METADATA_DIR}/{snapshot_name}");
    let bytes = fetch_required(fetcher, &file, report)?;
    check_meta(report, &file, TIMESTAMP_FILE, snapshot_meta, &bytes);
    let snapshot = verify_snapshot(root, &bytes, &file).map_err(|e| report.fail(format!("{file}: {e}"))).ok()?;
    if snapshot.version != snapshot_meta.version {
        report.fail(format!("{file} has version {} but {TIMESTAMP_FILE} lists {}", snapshot.version, snapshot_meta.version));
    }
    report.snapshot = Some(metadata_audit(file.clone(), snapshot.version, &snapshot.expires, snapshot.report()));
    check_expiry(report, &file, &snapshot.expires, now);
    check_same(fetcher, &format!("{METADATA_DIR}/{SNAPSHOT_FILE}"), &file, &bytes, report);
    let Some(targets_meta) = snapshot.meta.get(TARGETS_FILE) else {
        report.fail(format!("{file} does not list {TARGETS_FILE}"));
        return None;
    };

    let targets_name = if root.consistent_snapshot { versioned_file(targets_meta.version, TARGETS_FILE) } else { TARGETS_FILE.to_owned() };
    let file = format!("{METADATA_DIR}/{targets_name}");
    let bytes = fetch_required(fetcher, &file, report)?;
    check_meta(report, &file, SNAPSHOT_FILE, targets_meta, &bytes);
    let targets = verify_targets(root, &bytes, &file).map_err(|e| report.fail(format!("{file}: {e}"))).ok()?;
    if targets.version != targets_meta.version {
        report.fail(format!("{file} has version {} but {SNAPSHOT_FILE} lists {}", targets.version, targets_meta.version));
    }
    report.targets = Some(metadata_audit(file.clone(), targets.version, &targets.expires, targets.report()));
    check_expiry(report, &file, &targets.expires, now);
    check_same(fetcher, &format!("{METADATA_DIR}/{TARGETS_FILE}"), &file, &bytes, report);
    // The top-level targets.json of the older layout, when present, must be the same document.
    check_same(fetcher, TARGETS_FILE, &file, &bytes, report);

    audit_delegations(fetcher, &targets, &snapshot.meta, now, report);
    Some(targets)
}

/// Checks that the unversioned copy `copy`, when present, equals `bytes`.
fn check_same(fetcher: &Fetcher, copy: &str, original: &str, bytes: &[u8], report: &mut RepoAudit) {
    match fetcher.get(copy, MAX_METADATA_BYTES) {
        Ok(Some(found)) if found != bytes => report.fail(format!("{copy} differs from {original}")),
        Ok(_) => {}
        Err(error) => report.fail(error),
    }
}

/// Verifies the roles that targets delegates to, one level deep.
// TODO: roles delegated by delegated roles, and their targets, are not audited.
fn audit_delegations(
    fetcher: &Fetcher,
    targets: &Verified<Targets>,
    meta: &std::collections::BTreeMap<String, MetaFile>,
    now: SystemTime,
    report: &mut RepoAudit,
) {
    let Some(delegations) = &targets.delegations else { return };
    for role in &delegations.roles {
        let listed = format!("{}.json", role.name);
        let Some(role_meta) = meta.get(&listed) else {
            report.fail(format!("{SNAPSHOT_FILE} does not list the delegated role {listed}"));
            continue;
        };
        let file = format!("{METADATA_DIR}/{}", versioned_file(role_meta.version, &listed));
        let Some(bytes) = fetch_required(fetcher, &file, report) else { continue };
        check_meta(report, &file, SNAPSHOT_FILE, role_meta, &bytes);
        match verify_delegated(&delegations.keys, &role.role_keys(), &role.name, &bytes, &file) {
            Ok(verified) => {
                check_expiry(report, &file, &verified.expires, now);
                report.delegations.push(metadata_audit(file, verified.version, &verified.expires, verified.report()));
            }
            Err(error) => report.fail(format!("{file}: {error}")),
        }
    }
}

/// Checks every target file, and every release manifest's chunks.
fn audit_targets(fetcher: &Fetcher, targets: &Verified<Targets>, report: &mut RepoAudit) {
    for (name, target) in &targets.targets {
        let Some(bytes) = audit_target_file(fetcher, name, target, report) else { continue };
        let is_release = target.custom.clone().and_then(|c| serde_json::from_value::<ReleaseInfo>(c).ok()).is_some();
        if !is_release {
            continue;
        }
        let release = match verify_release(targets, name, &bytes) {
            Ok(release) => release,
            Err(error) => {
                report.fail(error.to_string());
                continue;
            }
        };
        let manifest = release.manifest();
        let chunks = distinct_chunks(manifest);
        let mut chunk_errors = Vec::new();
        for chunk in &chunks {
            let path = repo_chunk_path(&chunk.digest);
            let checked = match fetcher.get(&path, MAX_STORED_CHUNK_BYTES) {
                Ok(Some(stored)) => decode_chunk(chunk, &stored).map(|_| ()).map_err(|e| format!("{path}: {e}")),
                Ok(None) => Err(format!("{path} is missing")),
                Err(error) => Err(error),
            };
            if let Err(error) = checked {
                chunk_errors.push(error);
            }
        }
        if !chunk_errors.is_empty() {
            report.ok = false;
        }
        report.releases.push(ReleaseAudit {
            target: name.clone(),
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            compatible: manifest.compatible.clone(),
            architecture: manifest.architecture.clone(),
            manifest_sha256: release.digest().to_hex(),
            signatures: release.signatures().clone(),
            chunks_checked: chunks.len(),
            chunk_errors,
        });
    }
}

/// Fetches a target under its consistent name and checks its length and sha256.
fn audit_target_file(fetcher: &Fetcher, name: &str, target: &TargetFile, report: &mut RepoAudit) -> Option<Vec<u8>> {
    let Some(sha256) = target.hashes.get("sha256") else {
        report.fail(format!("target {name} lists no sha256, the only hash tender checks"));
        return None;
    };
    let path = consistent_target_path(name, sha256);
    let limit = target.length.min(MAX_MANIFEST_BYTES);
    let bytes = match fetcher.get(&path, limit) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            report.fail(format!("target {name} is missing: {path} does not exist"));
            return None;
        }
        Err(error) => {
            report.fail(format!("target {name}: {error}"));
            return None;
        }
    };
    let listed_by = format!("{TARGETS_FILE} (target {name})");
    if bytes.len() as u64 != target.length {
        report.fail(format!("{path} is {} bytes but {listed_by} lists {}", bytes.len(), target.length));
    }
    check_hashes(report, &path, &listed_by, &target.hashes, &bytes);
    Some(bytes)
}
