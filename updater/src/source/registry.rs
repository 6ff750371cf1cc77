//! A Tender repository in an OCI registry as a release source: chunks come
//! from the blobs and chunk packs that the repository index names, through
//! the same [`super::Downloader`] as HTTP repositories (retries, resumption,
//! bandwidth cap). A chunk in a pack is fetched with a `Range` request on
//! the pack blob, so a robot downloads only the chunks it lacks.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ReleaseSource, SourceError};
use crate::format::layout::{repo_chunk_path, repo_manifest_path, TARGETS_FILE};
use crate::format::Sha256Digest;
use crate::registry::client::{RegistryClient, RegistryError};

/// Chunk downloads in flight at once, as for HTTP repositories.
const PARALLEL_DOWNLOADS: usize = 4;

pub struct RegistrySource {
    client: Arc<RegistryClient>,
    partial_dir: PathBuf,
}

impl RegistrySource {
    /// Reads chunks through `client`, resuming from partial files kept in
    /// `cache_dir/partial`.
    pub fn new(client: Arc<RegistryClient>, cache_dir: &std::path::Path) -> Self {
        Self { client, partial_dir: cache_dir.join("partial") }
    }

    fn source_error(&self, what: &str, error: RegistryError) -> SourceError {
        if let RegistryError::Local { action, path, source } = error {
            return SourceError::Local { action, path, source };
        }
        SourceError::Http { url: format!("{} ({what})", self.client.reference()), detail: crate::error_line(&error) }
    }

    /// Fetches the repository file `path` into memory, at most `limit` bytes.
    fn file(&self, path: &str, limit: u64, what: &str) -> Result<Vec<u8>, SourceError> {
        let location = self
            .client
            .location(path)
            .ok_or_else(|| SourceError::NotFound { what: what.to_owned(), source_name: self.describe() })?;
        if location.length > limit {
            return Err(SourceError::TooLarge { what: what.to_owned(), len: location.length, limit });
        }
        let destination = self.partial_path(path);
        self.fetch_into(path, &destination, limit, what)?;
        let bytes = std::fs::read(&destination).map_err(|source| SourceError::Io { path: destination.clone(), source });
        let _ = std::fs::remove_file(&destination);
        bytes
    }

    fn partial_path(&self, path: &str) -> PathBuf {
        self.partial_dir.join(path.replace('/', "_"))
    }

    /// Downloads `path` into `destination` unless a finished download is
    /// already there.
    fn fetch_into(&self, path: &str, destination: &std::path::Path, limit: u64, what: &str) -> Result<(), SourceError> {
        if destination.exists() {
            return Ok(());
        }
        let location = self
            .client
            .location(path)
            .ok_or_else(|| SourceError::NotFound { what: what.to_owned(), source_name: self.describe() })?;
        if location.length > limit {
            return Err(SourceError::TooLarge { what: what.to_owned(), len: location.length, limit });
        }
        std::fs::create_dir_all(&self.partial_dir).map_err(|source| SourceError::Io { path: self.partial_dir.clone(), source })?;
        self.client.file_to(location, destination).map_err(|e| self.source_error(what, e))?;
        Ok(())
    }
}

impl ReleaseSource for RegistrySource {
    fn describe(&self) -> String {
        self.client.reference().to_string()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.file(TARGETS_FILE, limit, TARGETS_FILE)
    }

    fn pinned_manifest(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn manifest(&mut self, target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError> {
        crate::format::path::check_entry_path(target_name)
            .map_err(|_| SourceError::NotFound { what: target_name.to_owned(), source_name: self.describe() })?;
        self.file(&repo_manifest_path(target_name), limit, target_name)
    }

    fn prefetch(&mut self, chunks: &[(Sha256Digest, u64)]) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Failures are left for chunk() to retry and report in order.
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_DOWNLOADS.min(chunks.len()) {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((digest, limit)) = chunks.get(index) else { break };
                    let path = repo_chunk_path(digest);
                    let what = format!("chunk {digest}");
                    if let Err(error) = self.fetch_into(&path, &self.partial_path(&path), *limit, &what) {
                        tracing::warn!(chunk = %digest, error = %error, "prefetch failed; the chunk is fetched again in order");
                    }
                });
            }
        });
    }

    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.file(&repo_chunk_path(digest), limit, &format!("chunk {digest}"))
    }

    fn discard_chunk(&mut self, digest: &Sha256Digest) {
        let path = self.partial_path(&repo_chunk_path(digest));
        let _ = std::fs::remove_file(&path);
        let mut partial = path.into_os_string();
        partial.push(".partial");
        let _ = std::fs::remove_file(&partial);
        partial.push(".etag");
        let _ = std::fs::remove_file(&partial);
    }
}
