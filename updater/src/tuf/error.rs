//! Errors of the TUF client. Each message is one line that names the role,
//! the file, the versions or hashes involved and what to do next.

use std::path::PathBuf;

use super::fetch::FetchError;
use crate::fsutil::FsError;

/// Errors of refreshing metadata and downloading targets.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("no trusted root.json in {}; run `tenderd tuf-client --metadata-dir {} init ROOT_FILE` with the fleet's root.json", dir.display(), dir.display())]
    NoTrustedRoot { dir: PathBuf },

    #[error("cannot read trusted metadata {}: {source}", path.display())]
    ReadTrusted { path: PathBuf, source: std::io::Error },

    #[error("trusted {file} in {} is invalid: {source}; restore it or run `tenderd tuf-client init` again", dir.display())]
    InvalidTrustedRoot { file: String, dir: PathBuf, source: tender_keys::Error },

    #[error("cannot write trusted metadata: {0}")]
    Store(#[from] FsError),

    #[error("cannot download {role} metadata {file}: {source}")]
    Fetch { role: String, file: String, source: FetchError },

    #[error("rejected {role} metadata {file}: {source}")]
    Verify { role: String, file: String, source: tender_keys::Error },

    #[error(
        "rejected {file}: it has root version {found}, expected {expected} after trusted version {trusted}; \
         the repository must publish each root as N.root.json with version N (possible rollback attack)"
    )]
    RootVersion { file: String, trusted: u64, expected: u64, found: u64 },

    #[error(
        "rejected {file}: {role} metadata version {found} is lower than the trusted version {trusted} \
         (possible rollback attack); the repository must publish a version of at least {trusted}"
    )]
    Rollback { role: String, file: String, trusted: u64, found: u64 },

    #[error(
        "rejected {file}: it lists {listed} version {found}, lower than version {trusted} in the trusted snapshot \
         (possible rollback attack); the repository must not lower the version of {listed}"
    )]
    ListedRollback { file: String, listed: String, trusted: u64, found: u64 },

    #[error(
        "rejected {file}: it no longer lists {listed}, which the trusted snapshot lists at version {trusted} \
         (possible rollback attack); the repository must keep every targets role in snapshot.json"
    )]
    ListedRemoved { file: String, listed: String, trusted: u64 },

    #[error("rejected {file}: {role} metadata has version {found} but {listed_in} lists version {expected} (possible mix-and-match attack); republish {listed_in} and {file} together")]
    VersionMismatch { role: String, file: String, listed_in: String, expected: u64, found: u64 },

    #[error("{listed_in} does not list {missing}; the repository must list every metadata file the client fetches")]
    NotListed { listed_in: String, missing: String },

    #[error("rejected {file}: it is {found} bytes but {listed_in} lists {expected}; republish {listed_in} and {file} together")]
    LengthMismatch { file: String, listed_in: String, expected: u64, found: u64 },

    #[error("rejected {file}: its {algorithm} is {found} but {listed_in} lists {expected}; republish {listed_in} and {file} together")]
    HashMismatch { file: String, listed_in: String, algorithm: String, expected: String, found: String },

    #[error("{listed_in} lists no sha256 or sha512 hash for {file}, so it cannot be checked; the repository must list a sha256 hash")]
    NoSupportedHash { file: String, listed_in: String },

    #[error(
        "rejected {file}: {role} metadata expired at {expires}, before the update start time {now} ({time_source}) \
         (possible freeze attack); the repository must re-sign {role} metadata, or the robot clock is wrong"
    )]
    Expired { role: String, file: String, expires: String, now: String, time_source: super::clock::TimeSource },

    #[error("rejected {file}: expiry {value:?} is not an RFC 3339 time")]
    InvalidExpiry { file: String, value: String },

    #[error("rejected delegation {role:?} in {delegator}: a delegated role may not use the name of a top-level role")]
    ReservedRoleName { role: String, delegator: String },

    #[error("target {target:?} is not listed by any targets role trusted for it ({visited} role(s) searched); check the target name and the delegations")]
    TargetNotFound { target: String, visited: usize },

    #[error("cannot store target {target:?} at {}: {source}", path.display())]
    WriteTarget { target: String, path: PathBuf, source: std::io::Error },

    #[error("cannot download target {target:?}: {source}")]
    FetchTarget { target: String, source: FetchError },
}
