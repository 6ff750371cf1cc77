use std::path::PathBuf;

use crate::{KeyId, Role};

/// Errors of key handling, signing and verification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode canonical JSON: {source}")]
    Canonical { source: serde_json::Error },

    #[error("cannot read key file {}: {source}", path.display())]
    ReadKey { path: PathBuf, source: std::io::Error },

    #[error("key file {} is not a valid ed25519 key: {reason}", path.display())]
    InvalidKeyFile { path: PathBuf, reason: String },

    #[error("key file {} already exists; pass --force to overwrite it", path.display())]
    KeyExists { path: PathBuf },

    #[error("cannot write key file {}: {source}", path.display())]
    WriteKey { path: PathBuf, source: std::io::Error },

    #[error("{what} is not valid TUF metadata: {source}")]
    Parse { what: String, source: serde_json::Error },

    #[error("{what} has type {found:?}, expected {expected:?}")]
    WrongType { what: String, expected: String, found: String },

    #[error("the trusted root has no {role} role")]
    MissingRole { role: Role },

    #[error(
        "{what} has {valid} valid {role} signature(s) but the root requires {threshold}; \
         sign it with enough of the keys that root.json lists for {role}"
    )]
    ThresholdNotMet { what: String, role: String, valid: usize, threshold: u32 },

    #[error("root key {keyid} in root.json is not a valid ed25519 public key")]
    InvalidPublicKey { keyid: KeyId },

    #[error("key {keyid} is not listed for the {role} role in root.json")]
    KeyNotInRole { keyid: KeyId, role: Role },
}
