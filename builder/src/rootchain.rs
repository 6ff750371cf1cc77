//! The chain of published root versions, `metadata/1.root.json` to
//! `metadata/N.root.json`, and the publication of the next one.
//!
//! TUF 1.0 §5.3 (update the root role): version N+1 is trusted only when the
//! threshold of root keys of version N and the threshold of its own root keys
//! signed it, and its version is exactly N+1. The publisher applies the same
//! rule before it writes a root, so every published chain verifies.

use std::path::PathBuf;
use std::time::SystemTime;

use tender_keys::{parse_time, verify_root, verify_root_update, Root, Verified};

use crate::fsutil::write_atomic;
use crate::publish::{versioned_file, PublishError, Repository, ROOT_FILE};

/// Most root versions read from a repository; a longer chain is rejected.
pub const MAX_ROOT_VERSIONS: u64 = 1024;

/// Failures to read or extend the root chain.
#[derive(Debug, thiserror::Error)]
pub enum RootChainError {
    #[error(transparent)]
    Publish(#[from] PublishError),

    #[error("{what} is not a valid next root: {source}")]
    Invalid { what: String, source: tender_keys::Error },

    #[error("{what} has version {found}, expected {expected}; root versions go up by exactly one")]
    WrongVersion { what: String, found: u64, expected: u64 },

    #[error("{what} expired at {expires}; pass a later --expires")]
    Expired { what: String, expires: String },

    #[error("the repository has more than {MAX_ROOT_VERSIONS} root versions")]
    TooLong,
}

/// The verified root versions of a repository, oldest first.
#[derive(Debug)]
pub struct RootChain {
    /// Bytes of `metadata/N.root.json` at index N-1.
    versions: Vec<Vec<u8>>,
    /// Verified root of each version, in the same order.
    roots: Vec<Verified<Root>>,
}

impl RootChain {
    /// Builds the chain of a new repository from its version 1 root.
    pub fn first(bytes: Vec<u8>, root: Verified<Root>) -> Self {
        Self { versions: vec![bytes], roots: vec![root] }
    }

    pub fn latest(&self) -> &Verified<Root> {
        // A chain always contains version 1, so `roots` is never empty.
        &self.roots[self.roots.len() - 1]
    }

    /// Every root version, oldest first.
    pub fn roots(&self) -> &[Verified<Root>] {
        &self.roots
    }

    pub fn latest_bytes(&self) -> &[u8] {
        self.versions.last().map(Vec::as_slice).unwrap_or_default()
    }

    pub fn latest_version(&self) -> u64 {
        self.latest().version
    }

    /// Returns the bytes of root version `version`, if it was published.
    pub fn version_bytes(&self, version: u64) -> Option<&[u8]> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.versions.get(index).map(Vec::as_slice)
    }
}

/// Reads and verifies the root chain of `repo`, or returns `None` when the
/// repository has no `metadata/1.root.json` yet.
pub fn load_root_chain(repo: &Repository) -> Result<Option<RootChain>, RootChainError> {
    let first_file = versioned_file(1, ROOT_FILE);
    let Some(first) = repo.read_metadata(&first_file)? else {
        return Ok(None);
    };
    let what = repo.metadata_path(&first_file).display().to_string();
    let first_root = verify_root(&first, &what).map_err(|source| RootChainError::Invalid { what: what.clone(), source })?;
    check_version(&first_root, 1, &what)?;
    let mut chain = RootChain::first(first, first_root);
    for version in 2..=MAX_ROOT_VERSIONS + 1 {
        let file = versioned_file(version, ROOT_FILE);
        let Some(bytes) = repo.read_metadata(&file)? else {
            break;
        };
        if version > MAX_ROOT_VERSIONS {
            return Err(RootChainError::TooLong);
        }
        let what = repo.metadata_path(&file).display().to_string();
        let next = verify_root_update(chain.latest(), &bytes, &what)
            .map_err(|source| RootChainError::Invalid { what: what.clone(), source })?;
        check_version(&next, version, &what)?;
        chain.versions.push(bytes);
        chain.roots.push(next);
    }
    Ok(Some(chain))
}

fn check_version(root: &Root, expected: u64, what: &str) -> Result<(), RootChainError> {
    if root.version != expected {
        return Err(RootChainError::WrongVersion { what: what.to_owned(), found: root.version, expected });
    }
    Ok(())
}

/// Checks `bytes` as the next root of `chain` (or as version 1 of a new
/// repository), then publishes it as `metadata/N.root.json`,
/// `metadata/root.json` and the top-level `root.json` that robots without a
/// TUF client still read.
pub fn publish_root(repo: &Repository, chain: Option<&RootChain>, bytes: &[u8], what: &str) -> Result<Verified<Root>, RootChainError> {
    let invalid = |source| RootChainError::Invalid { what: what.to_owned(), source };
    let (root, expected) = match chain {
        Some(chain) => (verify_root_update(chain.latest(), bytes, what).map_err(invalid)?, chain.latest_version() + 1),
        None => (verify_root(bytes, what).map_err(invalid)?, 1),
    };
    check_version(&root, expected, what)?;
    if parse_time(&root.expires).is_none_or(|expires| expires <= SystemTime::now()) {
        return Err(RootChainError::Expired { what: what.to_owned(), expires: root.expires.clone() });
    }
    repo.publish(ROOT_FILE, root.version, bytes)?;
    write_legacy_root(repo, bytes)?;
    Ok(root)
}

/// Writes the top-level `root.json` of the layout that predates the
/// `metadata/` directory.
// TODO: drop the top-level root.json, targets.json and manifests/ once
// robots read the metadata/ and targets/ layout.
pub fn write_legacy_root(repo: &Repository, bytes: &[u8]) -> Result<(), PublishError> {
    let path: PathBuf = repo.dir().join(ROOT_FILE);
    write_atomic(&path, bytes).map_err(|source| PublishError::Write { path, source })
}
