//! The trusted metadata directory: `root.json`, `timestamp.json`,
//! `snapshot.json`, `targets.json` and delegated `ROLE.json` under plain
//! names (TUF 5.3.8, 5.4.5, 5.5.7, 5.6.6), each written with
//! [`write_atomic`]. The versions stored here are the highest the robot has
//! trusted, and they are what the rollback checks compare against.

use std::path::{Path, PathBuf};

use super::error::TufError;
use super::names::stored_metadata_name;
use crate::fsutil::{sync_dir, write_atomic, FsError};
use crate::source::{read_bounded, SourceError};

/// The trusted metadata directory of one repository.
#[derive(Debug, Clone)]
pub struct TrustedStore {
    dir: PathBuf,
}

impl TrustedStore {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the stored metadata of `role`.
    pub fn path(&self, role: &str) -> PathBuf {
        self.dir.join(stored_metadata_name(role))
    }

    /// Reads the stored metadata of `role`, at most `max_len` bytes, or
    /// returns `None` when there is none.
    pub fn load(&self, role: &str, max_len: u64) -> Result<Option<Vec<u8>>, TufError> {
        let path = self.path(role);
        match read_bounded(&path, max_len, &stored_metadata_name(role)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(SourceError::NotFound { .. }) => Ok(None),
            Err(SourceError::Io { path, source }) => Err(TufError::ReadTrusted { path, source }),
            Err(other) => Err(TufError::ReadTrusted { path, source: std::io::Error::other(other.to_string()) }),
        }
    }

    /// Replaces the stored metadata of `role` with `bytes`, atomically.
    pub fn save(&self, role: &str, bytes: &[u8]) -> Result<(), TufError> {
        write_atomic(&self.path(role), bytes)?;
        Ok(())
    }

    /// Deletes the stored metadata of `role`, if any.
    pub fn remove(&self, role: &str) -> Result<(), TufError> {
        let path = self.path(role);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FsError::new("remove", &path, e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_round_trips_and_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustedStore::new(dir.path());
        assert_eq!(store.load("timestamp", 100).expect("load"), None);
        store.save("timestamp", b"{}").expect("save");
        assert_eq!(store.load("timestamp", 100).expect("load").as_deref(), Some(&b"{}"[..]));
        store.remove("timestamp").expect("remove");
        store.remove("timestamp").expect("remove again");
        assert_eq!(store.load("timestamp", 100).expect("load"), None);
    }

    #[test]
    fn delegated_role_names_stay_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustedStore::new(dir.path());
        assert_eq!(store.path("../../etc/passwd").parent(), Some(dir.path()));
    }
}
