//! Publication of `targets.json`, `snapshot.json` and `timestamp.json`, in
//! the order a TUF client needs them complete: targets, then the snapshot
//! that lists it, then the timestamp that lists the snapshot. A client starts
//! from `timestamp.json`, so renaming it into place is the commit point.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tender_keys::{format_time, Role, Root, Snapshot, Targets, Timestamp};

use crate::publish::{
    meta_file, sign_role, signed_version, PublishError, Repository, SNAPSHOT_FILE, TARGETS_FILE, TIMESTAMP_FILE,
};
use crate::signer::Signer;

/// How long a snapshot written by a release stays valid, from
/// `SOURCE_DATE_EPOCH`: as long as the targets it lists, because only a
/// release re-signs it and the timestamp already bounds freshness.
pub const SNAPSHOT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How long a timestamp stays valid: from `SOURCE_DATE_EPOCH` when a release
/// writes it, from now when `tender timestamp` re-signs it.
pub const TIMESTAMP_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// Versions and expiry of what was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedVersions {
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
    /// `expires` of the new `timestamp.json`, RFC 3339.
    pub timestamp_expires: String,
}

/// Signers of the snapshot and timestamp roles.
pub struct SnapshotSigners<'a> {
    pub snapshot: &'a [Signer],
    pub timestamp: &'a [Signer],
}

/// Publishes `targets_bytes` as version `targets_version` of
/// `targets.json`, then the next snapshot and timestamp, with expiries
/// counted from `source_date_epoch` so a release is reproducible.
pub fn publish_targets(
    repo: &Repository,
    root: &Root,
    targets_bytes: &[u8],
    targets_version: u64,
    signers: &SnapshotSigners,
    source_date_epoch: u64,
) -> Result<PublishedVersions, PublishError> {
    repo.publish(TARGETS_FILE, targets_version, targets_bytes)?;
    let epoch = UNIX_EPOCH + Duration::from_secs(source_date_epoch);

    let snapshot_version = next_version(repo, SNAPSHOT_FILE)?;
    let mut snapshot = Snapshot::new(snapshot_version, epoch + SNAPSHOT_VALIDITY);
    snapshot.meta.insert(TARGETS_FILE.to_owned(), meta_file(targets_bytes, targets_version));
    for (file, bytes) in delegated_metadata(repo, targets_bytes)? {
        let path = repo.metadata_path(&file);
        let version = signed_version(&bytes).ok_or(PublishError::NoVersion { path })?;
        snapshot.meta.insert(file, meta_file(&bytes, version));
    }
    let what = repo.metadata_path(SNAPSHOT_FILE).display().to_string();
    let snapshot_bytes = sign_role(snapshot, signers.snapshot, root, Role::Snapshot, &what)?.to_canonical_json()?;
    repo.publish(SNAPSHOT_FILE, snapshot_version, &snapshot_bytes)?;

    let (timestamp, timestamp_expires) = publish_timestamp(repo, root, signers.timestamp, epoch + TIMESTAMP_VALIDITY)?;
    Ok(PublishedVersions { targets: targets_version, snapshot: snapshot_version, timestamp, timestamp_expires })
}

/// Signs and publishes the next `timestamp.json` for the current
/// `snapshot.json`, valid until `expires`. Returns its version and expiry.
pub fn publish_timestamp(
    repo: &Repository,
    root: &Root,
    signers: &[Signer],
    expires: SystemTime,
) -> Result<(u64, String), PublishError> {
    let snapshot_path = repo.metadata_path(SNAPSHOT_FILE);
    let snapshot_bytes = repo.read_metadata(SNAPSHOT_FILE)?.ok_or_else(|| PublishError::Read {
        path: snapshot_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "publish a release first with `tender release`"),
    })?;
    let snapshot_version = signed_version(&snapshot_bytes).ok_or(PublishError::NoVersion { path: snapshot_path })?;
    let version = next_version(repo, TIMESTAMP_FILE)?;
    let mut timestamp = Timestamp::new(version, expires);
    timestamp.meta.insert(SNAPSHOT_FILE.to_owned(), meta_file(&snapshot_bytes, snapshot_version));
    let what = repo.metadata_path(TIMESTAMP_FILE).display().to_string();
    let bytes = sign_role(timestamp, signers, root, Role::Timestamp, &what)?.to_canonical_json()?;
    repo.publish(TIMESTAMP_FILE, version, &bytes)?;
    Ok((version, format_time(expires)))
}

/// Returns the published version of `file` plus one, or 1.
fn next_version(repo: &Repository, file: &str) -> Result<u64, PublishError> {
    Ok(repo.published_version(file)?.unwrap_or(0).saturating_add(1))
}

/// Reads `metadata/ROLE.json` of every role that `targets.json` delegates
/// to, so the snapshot lists them too. Tender itself writes no delegated
/// roles; this keeps hand-made ones covered.
// TODO: roles that delegated roles delegate to further are not listed.
fn delegated_metadata(repo: &Repository, targets_bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    let envelope: tender_keys::Signed<Targets> = match serde_json::from_slice(targets_bytes) {
        Ok(envelope) => envelope,
        Err(_) => return Ok(Vec::new()),
    };
    let mut files = Vec::new();
    for role in envelope.signed.delegations.iter().flat_map(|d| &d.roles) {
        let file = format!("{}.json", role.name);
        if let Some(bytes) = repo.read_metadata(&file)? {
            files.push((file, bytes));
        } else {
            tracing::warn!(role = role.name, "delegated role has no metadata/{}.json; the snapshot does not list it", role.name);
        }
    }
    Ok(files)
}
