//! The release manifest: what a release contains and how to install it.
//!
//! The manifest is canonical JSON (sorted keys, no floats), so the same tree
//! and recipe always give the same bytes. Entries are sorted by path bytes and
//! every entry's parent directory is listed before it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::format::limits::{MAX_CHUNK_BYTES, MAX_ENTRIES, MAX_STORED_CHUNK_BYTES, MAX_XATTR_BYTES};
use crate::format::path::{check_entry_path, check_symlink_target, parent, PathError};
use crate::format::Sha256Digest;

/// The manifest format version this updater reads and the builder writes.
pub const FORMAT_VERSION: u32 = 1;

/// A release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: semver::Version,
    /// Robots accept only releases whose `compatible` equals their own.
    pub compatible: String,
    /// Target architecture as Rust names it (`x86_64`, `aarch64`).
    pub architecture: String,
    /// Install prefix on the robot, such as `/opt/ecar`.
    pub prefix: String,
    pub provenance: Provenance,
    /// systemd units restarted one at a time after a switch.
    pub services: Vec<String>,
    pub pre_switch: PreSwitch,
    pub health: HealthCheck,
    pub entries: Vec<Entry>,
}

/// Provenance of a release: its sources and the tool that built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Git commit of the source tree, when it was a clean git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    pub recipe_sha256: Sha256Digest,
    /// Name and version of the tool that wrote the release.
    pub builder: String,
    /// `SOURCE_DATE_EPOCH` of the build, in seconds; every mtime equals it.
    pub source_date_epoch: u64,
}

/// Checks run against the staged slot before the switch. A failure stops the
/// install with the active slot untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreSwitch {
    /// Entry paths that must exist in the staged slot.
    pub required_files: Vec<String>,
    /// Command run with the staged slot as working directory; `{slot}` in an
    /// argument is replaced by the staged slot's path. Empty for none.
    pub self_test: Vec<String>,
    pub self_test_timeout_ms: u64,
}

/// The post-switch health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Command to run; `{prefix}` is replaced by the runtime path of the
    /// active release, such as `/opt/ecar/current`.
    pub command: Vec<String>,
    pub timeout_ms: u64,
    pub interval_ms: u64,
    /// Consecutive failures that make the robot revert to the previous slot.
    pub failures_to_revert: u32,
}

/// One file system object of the release tree.
// serde cannot combine `deny_unknown_fields` with `flatten`, so this struct
// accepts unknown fields; the signature still covers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the slot root, `/`-separated.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in seconds since the Unix epoch.
    pub mtime: u64,
    /// Extended attributes, values as hex, such as `security.capability`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// Kind of file system object of an entry, with the data of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    File {
        size: u64,
        sha256: Sha256Digest,
        chunks: Vec<ChunkRef>,
    },
    Dir,
    Symlink {
        target: String,
    },
    /// Another name for the file entry at `target`, an earlier entry path.
    Hardlink {
        target: String,
    },
}

/// A piece of a file: the SHA-256 and length of its uncompressed bytes, and
/// the length of its zstd-compressed form in the chunk store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    pub digest: Sha256Digest,
    pub size: u64,
    /// Bytes of the stored (compressed) chunk: what a robot downloads, and
    /// the most it accepts for this chunk.
    pub stored: u64,
}

/// Reasons a manifest is rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest format {found} is not supported; this tenderd reads format {FORMAT_VERSION}, update tenderd first")]
    Format { found: u32 },
    #[error("manifest lists {0} entries, more than the limit of {MAX_ENTRIES}")]
    TooManyEntries(usize),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("manifest entries are not sorted or repeat a path at {0:?}")]
    Unsorted(String),
    #[error("entry {path:?} has no directory entry for its parent {parent:?}")]
    MissingParent { path: String, parent: String },
    #[error("hardlink {path:?} points to {target:?}, which is not an earlier file entry")]
    BadHardlink { path: String, target: String },
    #[error("file {path:?} declares size {size} but its chunks add up to {sum}")]
    SizeMismatch { path: String, size: u64, sum: u64 },
    #[error("file {path:?} has a chunk of {size} bytes, more than the limit of {MAX_CHUNK_BYTES}")]
    ChunkTooLarge { path: String, size: u64 },
    #[error("entry {path:?} has mode {mode:#o}, which has bits outside 0o7777")]
    BadMode { path: String, mode: u32 },
    #[error("entry {path:?} has an invalid extended attribute {name:?}: {reason}")]
    BadXattr { path: String, name: String, reason: &'static str },
}

impl Manifest {
    /// Parses and validates a manifest. Callers bound the size of `bytes`
    /// beforehand.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the structural rules that keep every entry inside the slot.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT_VERSION {
            return Err(ManifestError::Format { found: self.format });
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(ManifestError::TooManyEntries(self.entries.len()));
        }
        // Kind of every entry seen so far, to check parents and hardlinks.
        let mut seen: HashMap<&str, &EntryKind> = HashMap::with_capacity(self.entries.len());
        let mut previous: Option<&str> = None;
        for entry in &self.entries {
            let path = entry.path.as_str();
            check_entry_path(path)?;
            if previous.is_some_and(|p| p.as_bytes() >= path.as_bytes()) {
                return Err(ManifestError::Unsorted(path.to_owned()));
            }
            previous = Some(path);
            if let Some(parent) = parent(path) {
                if !matches!(seen.get(parent), Some(EntryKind::Dir)) {
                    return Err(ManifestError::MissingParent { path: path.to_owned(), parent: parent.to_owned() });
                }
            }
            if entry.mode & !0o7777 != 0 {
                return Err(ManifestError::BadMode { path: path.to_owned(), mode: entry.mode });
            }
            for (name, value) in &entry.xattrs {
                let reason = if name.is_empty() || name.len() > 255 || name.contains('\0') {
                    Some("the name must be 1 to 255 bytes without NUL")
                } else if value.len() / 2 > MAX_XATTR_BYTES || hex::decode(value).is_err() {
                    Some("the value must be hex of at most 64 KiB")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ManifestError::BadXattr { path: path.to_owned(), name: name.clone(), reason });
                }
            }
            match &entry.kind {
                EntryKind::File { size, chunks, .. } => {
                    let mut sum: u64 = 0;
                    for chunk in chunks {
                        if chunk.size > MAX_CHUNK_BYTES || chunk.stored > MAX_STORED_CHUNK_BYTES {
                            return Err(ManifestError::ChunkTooLarge { path: path.to_owned(), size: chunk.size.max(chunk.stored) });
                        }
                        sum = sum.saturating_add(chunk.size);
                    }
                    if sum != *size {
                        return Err(ManifestError::SizeMismatch { path: path.to_owned(), size: *size, sum });
                    }
                }
                EntryKind::Symlink { target } => check_symlink_target(path, target)?,
                EntryKind::Hardlink { target } => {
                    if !matches!(seen.get(target.as_str()), Some(EntryKind::File { .. })) {
                        return Err(ManifestError::BadHardlink { path: path.to_owned(), target: target.clone() });
                    }
                }
                EntryKind::Dir => {}
            }
            seen.insert(path, &entry.kind);
        }
        Ok(())
    }

    /// Total uncompressed bytes of all regular files, hardlinks counted once.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| match entry.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Tender's `custom` field of a manifest target in `targets.json`, so a robot
/// can choose a release before it downloads the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub name: String,
    pub version: semver::Version,
    pub compatible: String,
    pub architecture: String,
    /// Staged rollout settings; a release without them is open to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// Signed authorisation to install this exact release on robots that
    /// committed a newer one (`tender repo allow-downgrade`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
}

impl Manifest {
    pub fn release_info(&self) -> ReleaseInfo {
        ReleaseInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            compatible: self.compatible.clone(),
            architecture: self.architecture.clone(),
            rollout: None,
            allow_downgrade: false,
        }
    }
}
