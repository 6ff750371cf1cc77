//! Signature and content audits of a bundle or a repository, as
//! `tender verify` runs them: the same checks a robot makes, on every
//! release and every chunk, reporting who signed what.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use tender_keys::{verify_root, SignatureReport};
use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::limits::{MAX_ROOT_BYTES, MAX_STORED_CHUNK_BYTES};
use tender_updater::format::{ChunkRef, EntryKind, Manifest};
use tender_updater::source::{open_source, read_bounded};
use tender_updater::verify::fetch_all_releases;

/// Errors that stop an audit before it starts.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("trusted root {}: {detail}", path.display())]
    Root { path: std::path::PathBuf, detail: String },
    #[error(transparent)]
    Source(#[from] tender_updater::source::SourceError),
}

/// The audit of one release.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseAudit {
    pub target: String,
    pub name: String,
    pub version: String,
    pub compatible: String,
    pub architecture: String,
    pub manifest_sha256: String,
    pub signatures: SignatureReport,
    pub chunks_checked: usize,
    pub chunk_errors: Vec<String>,
}

impl ReleaseAudit {
    /// Renders the release and its bad chunks, one line each.
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{} {} ({}, {}): targets signed by {} of threshold {}; manifest sha256 {}; {} chunks checked, {} bad",
            self.name,
            self.version,
            self.compatible,
            self.architecture,
            key_list(&self.signatures.valid),
            self.signatures.threshold,
            self.manifest_sha256,
            self.chunks_checked,
            self.chunk_errors.len(),
        )];
        lines.extend(self.chunk_errors.iter().map(|error| format!("  bad chunk: {error}")));
        lines
    }
}

/// The whole audit, as `tender verify --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub source: String,
    /// True when every signature threshold was met and every chunk verified.
    pub ok: bool,
    pub root: SignatureReport,
    pub releases: Vec<ReleaseAudit>,
    /// Failures that stopped the audit before it reached the chunks.
    pub errors: Vec<String>,
}

/// Audits `source_text` (a bundle, a repository directory or an HTTP URL)
/// against the trusted root at `root_path`.
pub fn audit(source_text: &str, root_path: &Path) -> Result<AuditReport, AuditError> {
    let root_error = |detail: String| AuditError::Root { path: root_path.to_owned(), detail };
    let bytes = read_bounded(root_path, MAX_ROOT_BYTES, "root.json").map_err(|e| root_error(e.to_string()))?;
    let mut root = verify_root(&bytes, &root_path.display().to_string()).map_err(|e| root_error(e.to_string()))?;
    let mut source = open_source(source_text)?;
    let mut report = AuditReport {
        source: source.describe(),
        ok: true,
        root: root.report().clone(),
        releases: Vec::new(),
        errors: Vec::new(),
    };
    // A bundle carries its root chain: walk it from the given root, one
    // version at a time, as a robot does.
    for (version, bytes) in source.root_chain().range(root.version + 1..) {
        let what = format!("roots/{version}.root.json of {}", source.describe());
        if *version != root.version + 1 {
            report.ok = false;
            report.errors.push(format!("{what}: the root chain skips from version {} to {version}", root.version));
            return Ok(report);
        }
        match tender_keys::verify_root_update(&root, bytes, &what) {
            Ok(next) if next.version == *version => {
                report.root = next.report().clone();
                root = next;
            }
            Ok(next) => {
                report.ok = false;
                report.errors.push(format!("{what}: its version field is {}", next.version));
                return Ok(report);
            }
            Err(error) => {
                report.ok = false;
                report.errors.push(error.to_string());
                return Ok(report);
            }
        }
    }
    let releases = match fetch_all_releases(&root, source.as_mut()) {
        Ok(releases) => releases,
        Err(error) => {
            report.ok = false;
            report.errors.push(error.to_string());
            return Ok(report);
        }
    };
    for release in releases {
        let manifest = release.manifest();
        let chunks = distinct_chunks(manifest);
        let mut chunk_errors = Vec::new();
        for chunk in &chunks {
            let checked = source
                .chunk(&chunk.digest, MAX_STORED_CHUNK_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|stored| decode_chunk(chunk, &stored).map(|_| ()).map_err(|e| e.to_string()));
            if let Err(error) = checked {
                chunk_errors.push(error);
            }
        }
        report.ok &= chunk_errors.is_empty();
        report.releases.push(ReleaseAudit {
            target: release.target_name().to_owned(),
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
    Ok(report)
}

/// Returns every chunk a manifest references, each once, in entry order.
pub fn distinct_chunks(manifest: &Manifest) -> Vec<ChunkRef> {
    let mut seen = BTreeSet::new();
    let mut chunks = Vec::new();
    for entry in &manifest.entries {
        if let EntryKind::File { chunks: refs, .. } = &entry.kind {
            chunks.extend(refs.iter().filter(|c| seen.insert(c.digest)).copied());
        }
    }
    chunks
}

/// Lists key ids by their short form, or `none`.
pub fn key_list(keys: &[tender_keys::KeyId]) -> String {
    if keys.is_empty() {
        return "none".to_owned();
    }
    keys.iter().map(|k| k.short().to_owned()).collect::<Vec<_>>().join(", ")
}

impl AuditReport {
    /// Renders the report for a terminal, one line per fact.
    pub fn to_text(&self) -> String {
        let mut lines = vec![
            format!("source: {}", self.source),
            format!(
                "root.json: signed by {} of threshold {} (root keys)",
                key_list(&self.root.valid),
                self.root.threshold
            ),
        ];
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
