//! A repository directory on a local file system as a release source.

use std::path::{Path, PathBuf};

use super::{read_bounded, ReleaseSource, SourceError};
use crate::format::layout::{repo_chunk_path, repo_manifest_path, TARGETS_FILE};
use crate::format::Sha256Digest;

pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }
}

impl ReleaseSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError> {
        read_bounded(&self.root.join(TARGETS_FILE), limit, TARGETS_FILE)
    }

    fn pinned_manifest(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn manifest(&mut self, target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError> {
        // Target names come from verified targets.json, but a name is still
        // checked before it becomes a path.
        crate::format::path::check_entry_path(target_name)
            .map_err(|_| SourceError::NotFound { what: target_name.to_owned(), source_name: self.describe() })?;
        read_bounded(&self.root.join(repo_manifest_path(target_name)), limit, target_name)
    }

    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        read_bounded(&self.root.join(repo_chunk_path(digest)), limit, &format!("chunk {digest}"))
    }
}
