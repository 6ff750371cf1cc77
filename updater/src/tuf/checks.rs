//! The pure checks of the client workflow: versions against the trusted
//! metadata, lengths and hashes against the metadata that lists a file, and
//! expiry against the update start time. They read no files and fetch nothing.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256, Sha512};
use tender_keys::{MetaFile, Snapshot, Timestamp};

use super::clock::UpdateTime;
use super::error::TufError;

/// Name of the snapshot in the `meta` map of `timestamp.json`.
pub const SNAPSHOT_META_KEY: &str = "snapshot.json";

/// Outcome of the rollback check of a new timestamp (5.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUpdate {
    /// The new timestamp is newer: it becomes the trusted one.
    Newer,
    /// Same version as the trusted one: the new file is discarded and the
    /// trusted one kept (5.4.3.1).
    SameVersion,
}

/// Checks a new timestamp against the trusted one (5.4.3): its version must
/// not go down, nor the snapshot version it lists (5.4.3.2).
pub fn check_timestamp_rollback(trusted: &Timestamp, new: &Timestamp, file: &str) -> Result<TimestampUpdate, TufError> {
    if new.version < trusted.version {
        return Err(TufError::Rollback {
            role: "timestamp".to_owned(),
            file: file.to_owned(),
            trusted: trusted.version,
            found: new.version,
        });
    }
    if new.version == trusted.version {
        return Ok(TimestampUpdate::SameVersion);
    }
    if let (Some(old), Some(listed)) = (trusted.meta.get(SNAPSHOT_META_KEY), new.meta.get(SNAPSHOT_META_KEY)) {
        if listed.version < old.version {
            return Err(TufError::ListedRollback {
                file: file.to_owned(),
                listed: SNAPSHOT_META_KEY.to_owned(),
                trusted: old.version,
                found: listed.version,
            });
        }
    }
    Ok(TimestampUpdate::Newer)
}

/// Checks a new snapshot against the trusted one (5.5.5): every targets
/// metadata file listed before must still be listed, at no lower version.
pub fn check_snapshot_rollback(trusted: &Snapshot, new: &Snapshot, file: &str) -> Result<(), TufError> {
    for (listed, old) in &trusted.meta {
        match new.meta.get(listed) {
            None => {
                return Err(TufError::ListedRemoved { file: file.to_owned(), listed: listed.clone(), trusted: old.version })
            }
            Some(meta) if meta.version < old.version => {
                return Err(TufError::ListedRollback {
                    file: file.to_owned(),
                    listed: listed.clone(),
                    trusted: old.version,
                    found: meta.version,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that a file has the version the metadata that lists it names
/// (5.5.4, 5.6.4).
pub fn check_listed_version(role: &str, file: &str, listed_in: &str, expected: u64, found: u64) -> Result<(), TufError> {
    if expected != found {
        return Err(TufError::VersionMismatch {
            role: role.to_owned(),
            file: file.to_owned(),
            listed_in: listed_in.to_owned(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Checks that metadata has not expired at the update start time (5.3.10,
/// 5.4.4, 5.5.6, 5.6.5). Expiring exactly at the start time counts as expired.
pub fn check_expiry(role: &str, file: &str, expires: &str, time: &UpdateTime) -> Result<(), TufError> {
    let expiry = tender_keys::parse_time(expires)
        .ok_or_else(|| TufError::InvalidExpiry { file: file.to_owned(), value: expires.to_owned() })?;
    if expiry <= time.now {
        return Err(TufError::Expired {
            role: role.to_owned(),
            file: file.to_owned(),
            expires: expires.to_owned(),
            now: tender_keys::format_time(time.now),
            time_source: time.source,
        });
    }
    Ok(())
}

/// SHA-256 and SHA-512 of data, computed while it streams past.
#[derive(Default)]
pub struct Hasher {
    length: u64,
    sha256: Sha256,
    sha512: Sha512,
}

/// The length and hashes of some data, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub length: u64,
    pub sha256: String,
    pub sha512: String,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.length += bytes.len() as u64;
        self.sha256.update(bytes);
        self.sha512.update(bytes);
    }

    pub fn finish(self) -> Digests {
        Digests {
            length: self.length,
            sha256: hex::encode(self.sha256.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        }
    }
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::default();
        hasher.update(bytes);
        hasher.finish()
    }
}

/// Checks `digests` against listed hashes. Every listed algorithm must be
/// one the client computes, and at least one must be listed, so a file can
/// never pass unchecked.
pub fn check_hashes(
    listed: &BTreeMap<String, String>,
    digests: &Digests,
    file: &str,
    listed_in: &str,
) -> Result<(), TufError> {
    if listed.is_empty() {
        return Err(TufError::NoSupportedHash { file: file.to_owned(), listed_in: listed_in.to_owned() });
    }
    for (algorithm, expected) in listed {
        let found = match algorithm.as_str() {
            "sha256" => &digests.sha256,
            "sha512" => &digests.sha512,
            _ => return Err(TufError::NoSupportedHash { file: file.to_owned(), listed_in: listed_in.to_owned() }),
        };
        if !found.eq_ignore_ascii_case(expected) {
            return Err(TufError::HashMismatch {
                file: file.to_owned(),
                listed_in: listed_in.to_owned(),
                algorithm: algorithm.clone(),
                expected: expected.clone(),
                found: found.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a length against the one listed for a file.
pub fn check_length(expected: u64, found: u64, file: &str, listed_in: &str) -> Result<(), TufError> {
    if expected != found {
        return Err(TufError::LengthMismatch { file: file.to_owned(), listed_in: listed_in.to_owned(), expected, found });
    }
    Ok(())
}

/// Checks metadata bytes against the length and hashes, where listed, of
/// their `MetaFile` (5.5.2, 5.6.2).
pub fn check_meta_file(meta: &MetaFile, bytes: &[u8], file: &str, listed_in: &str) -> Result<(), TufError> {
    if let Some(length) = meta.length {
        check_length(length, bytes.len() as u64, file, listed_in)?;
    }
    if let Some(hashes) = &meta.hashes {
        check_hashes(hashes, &Digests::of(bytes), file, listed_in)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::tuf::clock::TimeSource;

    fn timestamp(version: u64, snapshot_version: u64) -> Timestamp {
        let mut timestamp = Timestamp::new(version, UNIX_EPOCH);
        timestamp.meta.insert(SNAPSHOT_META_KEY.to_owned(), MetaFile { version: snapshot_version, length: None, hashes: None });
        timestamp
    }

    fn snapshot(entries: &[(&str, u64)]) -> Snapshot {
        let mut snapshot = Snapshot::new(1, UNIX_EPOCH);
        for (name, version) in entries {
            snapshot.meta.insert((*name).to_owned(), MetaFile { version: *version, length: None, hashes: None });
        }
        snapshot
    }

    #[test]
    fn timestamp_version_must_not_go_down() {
        let err = check_timestamp_rollback(&timestamp(5, 5), &timestamp(4, 5), "timestamp.json").expect_err("rollback");
        assert!(matches!(err, TufError::Rollback { trusted: 5, found: 4, .. }), "{err}");
    }

    #[test]
    fn timestamp_same_version_keeps_trusted() {
        let decision = check_timestamp_rollback(&timestamp(5, 5), &timestamp(5, 9), "timestamp.json").expect("same");
        assert_eq!(decision, TimestampUpdate::SameVersion);
    }

    #[test]
    fn timestamp_listed_snapshot_must_not_go_down() {
        let err = check_timestamp_rollback(&timestamp(5, 5), &timestamp(6, 4), "timestamp.json").expect_err("rollback");
        assert!(matches!(err, TufError::ListedRollback { trusted: 5, found: 4, .. }), "{err}");
        let decision = check_timestamp_rollback(&timestamp(5, 5), &timestamp(6, 5), "timestamp.json").expect("newer");
        assert_eq!(decision, TimestampUpdate::Newer);
    }

    #[test]
    fn snapshot_roles_must_not_go_down_or_vanish() {
        let trusted = snapshot(&[("targets.json", 3), ("releases.json", 2)]);
        let lower = snapshot(&[("targets.json", 2), ("releases.json", 2)]);
        let err = check_snapshot_rollback(&trusted, &lower, "snapshot.json").expect_err("rollback");
        assert!(matches!(err, TufError::ListedRollback { trusted: 3, found: 2, .. }), "{err}");
        let removed = snapshot(&[("targets.json", 3)]);
        let err = check_snapshot_rollback(&trusted, &removed, "snapshot.json").expect_err("removed");
        assert!(matches!(err, TufError::ListedRemoved { .. }), "{err}");
        let newer = snapshot(&[("targets.json", 4), ("releases.json", 2), ("beta.json", 1)]);
        check_snapshot_rollback(&trusted, &newer, "snapshot.json").expect("newer");
    }

    #[test]
    fn listed_version_must_match_exactly() {
        check_listed_version("targets", "targets.json", "snapshot.json", 3, 3).expect("same");
        let err = check_listed_version("targets", "targets.json", "snapshot.json", 3, 4).expect_err("newer");
        assert!(matches!(err, TufError::VersionMismatch { expected: 3, found: 4, .. }), "{err}");
    }

    #[test]
    fn expiry_at_start_time_is_expired() {
        let time = UpdateTime { now: UNIX_EPOCH + Duration::from_secs(1_700_000_000), source: TimeSource::SystemClock };
        let at_start = tender_keys::format_time(time.now);
        assert!(check_expiry("timestamp", "timestamp.json", &at_start, &time).is_err());
        let later = tender_keys::format_time(time.now + Duration::from_secs(1));
        check_expiry("timestamp", "timestamp.json", &later, &time).expect("valid");
        let err = check_expiry("timestamp", "timestamp.json", "tomorrow", &time).expect_err("invalid");
        assert!(matches!(err, TufError::InvalidExpiry { .. }), "{err}");
    }

    #[test]
    fn meta_file_length_and_hashes_are_checked() {
        let bytes = b"{\"signed\":{}}";
        let digests = Digests::of(bytes);
        let mut meta = MetaFile { version: 1, length: Some(bytes.len() as u64), hashes: None };
        check_meta_file(&meta, bytes, "snapshot.json", "timestamp.json").expect("length only");
        meta.hashes = Some(BTreeMap::from([("sha256".to_owned(), digests.sha256.clone())]));
        check_meta_file(&meta, bytes, "snapshot.json", "timestamp.json").expect("sha256");
        let err = check_meta_file(&meta, b"{\"signed\":{ }}", "snapshot.json", "timestamp.json").expect_err("other bytes");
        assert!(matches!(err, TufError::LengthMismatch { .. }), "{err}");
        meta.length = None;
        let err = check_meta_file(&meta, b"{\"signed\":[]}", "snapshot.json", "timestamp.json").expect_err("other hash");
        assert!(matches!(err, TufError::HashMismatch { .. }), "{err}");
        meta.hashes = Some(BTreeMap::from([("md5".to_owned(), "00".to_owned())]));
        let err = check_meta_file(&meta, bytes, "snapshot.json", "timestamp.json").expect_err("unknown algorithm");
        assert!(matches!(err, TufError::NoSupportedHash { .. }), "{err}");
    }
}
