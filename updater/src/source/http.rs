//! A repository served over HTTP as a release source.
//!
//! Every body is read with a byte limit, so a server that sends endless data
//! costs at most that limit, and every request is retried with backoff by
//! [`Downloader`]. With a cache directory, chunks are downloaded into it
//! with resumption, so a dropped connection or a reboot costs only the bytes
//! that were in flight.

use std::path::{Path, PathBuf};

use super::download::{DownloadError, DownloadPolicy, Downloader};
use super::{ReleaseSource, SourceError};
use crate::format::layout::{repo_chunk_path, repo_manifest_path, TARGETS_FILE};
use crate::format::Sha256Digest;

/// Chunk downloads in flight at once.
const PARALLEL_DOWNLOADS: usize = 4;

pub struct HttpSource {
    base: String,
    downloader: Downloader,
    partial_dir: Option<PathBuf>,
}

impl HttpSource {
    /// Reads from the repository at `base`. With `cache_dir`, chunk
    /// downloads resume from partial files kept in `cache_dir/partial`.
    pub fn new(base: &str, cache_dir: Option<&Path>, policy: DownloadPolicy) -> Result<Self, SourceError> {
        let downloader = Downloader::new(policy).map_err(|e| SourceError::Http { url: base.to_owned(), detail: e.to_string() })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            downloader,
            partial_dir: cache_dir.map(|dir| dir.join("partial")),
        })
    }

    fn url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.base)
    }

    fn map_error(&self, what: &str, error: DownloadError) -> SourceError {
        match error {
            DownloadError::NotFound { .. } => SourceError::NotFound { what: what.to_owned(), source_name: self.base.clone() },
            DownloadError::TooLarge { len, limit, .. } => SourceError::TooLarge { what: what.to_owned(), len, limit },
            // Kept whole, so that a full cache is recognised as one.
            DownloadError::Io { action, path, source } => SourceError::Local { action, path, source },
            other => SourceError::Http { url: self.url(what), detail: other.to_string() },
        }
    }

    fn get(&self, relative: &str, limit: u64, what: &str) -> Result<Vec<u8>, SourceError> {
        tracing::debug!(url = %self.url(relative), "GET");
        self.downloader.get(&self.url(relative), limit).map_err(|e| self.map_error(what, e))
    }
}

impl ReleaseSource for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn targets(&mut self, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.get(TARGETS_FILE, limit, TARGETS_FILE)
    }

    fn pinned_manifest(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn manifest(&mut self, target_name: &str, limit: u64) -> Result<Vec<u8>, SourceError> {
        crate::format::path::check_entry_path(target_name)
            .map_err(|_| SourceError::NotFound { what: target_name.to_owned(), source_name: self.describe() })?;
        self.get(&repo_manifest_path(target_name), limit, target_name)
    }

    fn prefetch(&mut self, chunks: &[(Sha256Digest, u64)]) {
        let Some(dir) = &self.partial_dir else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Failures are left for chunk() to retry and report in order.
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_DOWNLOADS.min(chunks.len()) {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((digest, limit)) = chunks.get(index) else { break };
                    let destination = dir.join(format!("{digest}.zst"));
                    if destination.exists() {
                        continue;
                    }
                    let url = self.url(&repo_chunk_path(digest));
                    if let Err(error) = self.downloader.download_to(&url, &destination, *limit) {
                        tracing::warn!(%url, %error, "prefetch failed; the chunk is fetched again in order");
                    }
                });
            }
        });
    }

    fn chunk(&mut self, digest: &Sha256Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        let relative = repo_chunk_path(digest);
        let what = format!("chunk {digest}");
        let Some(dir) = &self.partial_dir else {
            return self.get(&relative, limit, &what);
        };
        std::fs::create_dir_all(dir).map_err(|source| SourceError::Io { path: dir.clone(), source })?;
        let destination = dir.join(format!("{digest}.zst"));
        let url = self.url(&relative);
        if !destination.exists() {
            tracing::debug!(%url, "GET with resume");
            self.downloader.download_to(&url, &destination, limit).map_err(|e| self.map_error(&what, e))?;
        }
        let bytes = std::fs::read(&destination).map_err(|source| SourceError::Io { path: destination.clone(), source });
        let _ = std::fs::remove_file(&destination);
        bytes
    }

    fn discard_chunk(&mut self, digest: &Sha256Digest) {
        if let Some(dir) = &self.partial_dir {
            let _ = std::fs::remove_file(dir.join(format!("{digest}.zst")));
            let _ = std::fs::remove_file(dir.join(format!("{digest}.zst.partial")));
            let _ = std::fs::remove_file(dir.join(format!("{digest}.zst.partial.etag")));
        }
    }
}
