//! The TUF 1.0 repository that `tender` publishes, with consistent snapshots:
//!
//! ```text
//! REPO/metadata/1.root.json … N.root.json   every root version, each signed by the previous root's threshold and its own
//! REPO/metadata/root.json                   the latest root
//! REPO/metadata/N.targets.json, targets.json
//! REPO/metadata/N.snapshot.json, snapshot.json
//! REPO/metadata/timestamp.json
//! REPO/targets/SHA256.NAME                  each target (a release manifest) under its consistent name
//! ```
//!
//! Every metadata write goes through [`Repository::publish`], which rejects
//! a version that is not above the published one and never replaces the
//! content of an existing `N.ROLE.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tender_keys::{to_canonical_json, MetaFile, Role, Root, Signed};

use crate::fsutil::write_atomic;
use crate::signer::{Signer, SignerError};

pub const METADATA_DIR: &str = "metadata";
pub const TARGETS_DIR: &str = "targets";
pub const ROOT_FILE: &str = "root.json";
pub const TARGETS_FILE: &str = "targets.json";
pub const SNAPSHOT_FILE: &str = "snapshot.json";
pub const TIMESTAMP_FILE: &str = "timestamp.json";

/// Largest metadata file `tender` reads back from a repository.
pub const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// Failures to read, sign or write repository metadata.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{} is {len} bytes, more than the {MAX_METADATA_BYTES} bytes tender reads", path.display())]
    TooLarge { path: PathBuf, len: u64 },

    #[error("{} is not valid TUF metadata: it has no signed.version", path.display())]
    NoVersion { path: PathBuf },

    #[error("refusing to publish {file} version {new}: {} already has version {published}, and a new version must be above it", path.display())]
    VersionNotIncreasing { file: String, new: u64, published: u64, path: PathBuf },

    #[error("refusing to overwrite {} with other content: a published version never changes; publish version {next} instead", path.display())]
    VersionExists { path: PathBuf, next: u64 },

    #[error("{what} has {valid} {role} signature(s) but the root requires {threshold}; pass more keys of the {role} role")]
    ThresholdNotMet { what: String, role: Role, valid: usize, threshold: u32 },

    #[error(transparent)]
    Signer(#[from] SignerError),

    #[error(transparent)]
    Key(#[from] tender_keys::Error),
}

/// Name of version `version` of a metadata file, such as `3.targets.json`.
pub fn versioned_file(version: u64, file: &str) -> String {
    format!("{version}.{file}")
}

/// Repository path of a target under its consistent name: the directory of
/// the target path, then `SHA256.BASENAME`.
pub fn consistent_target_path(target_name: &str, sha256_hex: &str) -> String {
    match target_name.rsplit_once('/') {
        Some((dir, base)) => format!("{TARGETS_DIR}/{dir}/{sha256_hex}.{base}"),
        None => format!("{TARGETS_DIR}/{sha256_hex}.{target_name}"),
    }
}

/// Describes `bytes` as snapshot or timestamp metadata lists a file.
pub fn meta_file(bytes: &[u8], version: u64) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some(BTreeMap::from([("sha256".to_owned(), hex::encode(Sha256::digest(bytes)))])),
    }
}

/// Returns `signed.version` of a metadata envelope.
pub fn signed_version(bytes: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("signed")?.get("version")?.as_u64()
}

/// Signs `document` for the top-level `role` of `root` with every signer,
/// and checks that the valid signatures reach the role's threshold.
pub fn sign_role<T: Serialize>(
    document: T,
    signers: &[Signer],
    root: &Root,
    role: Role,
    what: &str,
) -> Result<Signed<T>, PublishError> {
    let role_keys = root.role(role)?;
    let canonical = to_canonical_json(&document)?;
    let mut signatures = Vec::new();
    for signer in signers {
        signatures.push(signer.sign_for_role(&canonical, what, role.as_str(), &root.keys, &role_keys.keyids)?);
    }
    signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    signatures.dedup_by(|a, b| a.keyid == b.keyid);
    let threshold = role_keys.threshold.max(1);
    if signatures.len() < threshold as usize {
        return Err(PublishError::ThresholdNotMet { what: what.to_owned(), role, valid: signatures.len(), threshold });
    }
    Ok(Signed { signed: document, signatures })
}

/// A repository directory on disk.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn metadata_path(&self, file: &str) -> PathBuf {
        self.dir.join(METADATA_DIR).join(file)
    }

    /// Reads a metadata file, or returns `None` when it does not exist.
    pub fn read_metadata(&self, file: &str) -> Result<Option<Vec<u8>>, PublishError> {
        read_optional(&self.metadata_path(file))
    }

    /// Returns the version of the published `file`, if there is one.
    pub fn published_version(&self, file: &str) -> Result<Option<u64>, PublishError> {
        let path = self.metadata_path(file);
        match read_optional(&path)? {
            Some(bytes) => signed_version(&bytes).map(Some).ok_or(PublishError::NoVersion { path }),
            None => Ok(None),
        }
    }

    /// Publishes version `version` of `file` (`root.json`, `targets.json`,
    /// `snapshot.json` or `timestamp.json`): writes `N.FILE` unless `file`
    /// is the timestamp, then `FILE`. Rejects a version at or below the
    /// published one, and other bytes under an existing `N.FILE`.
    pub fn publish(&self, file: &str, version: u64, bytes: &[u8]) -> Result<(), PublishError> {
        if let Some(published) = self.published_version(file)? {
            if version <= published {
                return Err(PublishError::VersionNotIncreasing {
                    file: file.to_owned(),
                    new: version,
                    published,
                    path: self.metadata_path(file),
                });
            }
        }
        if file != TIMESTAMP_FILE {
            let versioned = self.metadata_path(&versioned_file(version, file));
            match read_optional(&versioned)? {
                Some(existing) if existing != bytes => {
                    return Err(PublishError::VersionExists { path: versioned, next: version + 1 });
                }
                Some(_) => {}
                None => write(&versioned, bytes)?,
            }
        }
        write(&self.metadata_path(file), bytes)?;
        tracing::info!(file, version, "published");
        Ok(())
    }

    /// Writes a target under its consistent name; an existing file with the
    /// same name already has these bytes, since the name contains their hash.
    pub fn write_target(&self, target_name: &str, bytes: &[u8]) -> Result<PathBuf, PublishError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.dir.join(consistent_target_path(target_name, &digest));
        if !path.is_file() {
            write(&path, bytes)?;
        }
        Ok(path)
    }
}

/// Reads a file of at most [`MAX_METADATA_BYTES`], or `None` when it is missing.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PublishError> {
    let len = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PublishError::Read { path: path.to_owned(), source }),
    };
    if len > MAX_METADATA_BYTES {
        return Err(PublishError::TooLarge { path: path.to_owned(), len });
    }
    std::fs::read(path).map(Some).map_err(|source| PublishError::Read { path: path.to_owned(), source })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    write_atomic(path, bytes).map_err(|source| PublishError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(version: u64, note: &str) -> Vec<u8> {
        format!(r#"{{"signatures":[],"signed":{{"note":"{note}","version":{version}}}}}"#).into_bytes()
    }

    #[test]
    fn consistent_target_path_keeps_directory() {
        assert_eq!(consistent_target_path("ecar-1.0.0.manifest.json", "ab12"), "targets/ab12.ecar-1.0.0.manifest.json");
        assert_eq!(consistent_target_path("beta/ecar.json", "ab12"), "targets/beta/ab12.ecar.json");
    }

    #[test]
    fn publish_rejects_non_increasing_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::new(dir.path());
        repo.publish(SNAPSHOT_FILE, 2, &envelope(2, "a")).expect("first");
        let err = repo.publish(SNAPSHOT_FILE, 2, &envelope(2, "b")).expect_err("same version");
        assert!(matches!(err, PublishError::VersionNotIncreasing { published: 2, new: 2, .. }), "{err}");
        let err = repo.publish(SNAPSHOT_FILE, 1, &envelope(1, "b")).expect_err("older version");
        assert!(matches!(err, PublishError::VersionNotIncreasing { .. }), "{err}");
        repo.publish(SNAPSHOT_FILE, 3, &envelope(3, "c")).expect("next");
        assert!(repo.metadata_path("2.snapshot.json").is_file());
        assert!(repo.metadata_path("3.snapshot.json").is_file());
    }

    #[test]
    fn publish_never_changes_existing_versioned_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::new(dir.path());
        std::fs::create_dir_all(dir.path().join(METADATA_DIR)).expect("mkdir");
        std::fs::write(repo.metadata_path("4.targets.json"), envelope(4, "old")).expect("write");
        let err = repo.publish(TARGETS_FILE, 4, &envelope(4, "new")).expect_err("changed content");
        assert!(matches!(err, PublishError::VersionExists { .. }), "{err}");
        assert!(!repo.metadata_path(TARGETS_FILE).exists());
    }

    #[test]
    fn timestamp_has_no_versioned_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::new(dir.path());
        repo.publish(TIMESTAMP_FILE, 1, &envelope(1, "t")).expect("publish");
        assert!(!repo.metadata_path("1.timestamp.json").exists());
        assert_eq!(repo.published_version(TIMESTAMP_FILE).expect("read"), Some(1));
    }
}
