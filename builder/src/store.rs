//! The chunk store of a repository: content-defined chunking with FastCDC
//! (the 2020 variant), zstd compression, and one file per distinct chunk at
//! `chunks/ab/<sha256>.zst`, named by the SHA-256 of the uncompressed bytes.
//!
//! Chunk boundaries depend only on the content and the recipe's sizes, and
//! each chunk is compressed on its own, single-threaded, at the recipe's
//! level, so the same content always gives the same stored bytes with the
//! same zstd version.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fastcdc::v2020::StreamCDC;
use sha2::{Digest, Sha256};
use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::layout::repo_chunk_path;
use tender_updater::format::{ChunkRef, Sha256Digest};

use crate::recipe::ChunkingSettings;

/// Failures to store content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {name}: {source}")]
    Read { name: String, source: std::io::Error },

    #[error("cannot write chunk {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("cannot compress chunk {digest}: {source}")]
    Compress { digest: Sha256Digest, source: std::io::Error },
}

/// Counters of what a release stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Files chunked.
    pub files: u64,
    /// Uncompressed bytes of all files.
    pub file_bytes: u64,
    /// Chunk references of all files, repeats included.
    pub chunk_refs: u64,
    /// Distinct chunks of the release.
    pub unique_chunks: u64,
    /// Uncompressed bytes not stored again because an identical chunk came
    /// earlier in the same release.
    pub deduplicated_bytes: u64,
    /// Compressed bytes of the release's distinct chunks.
    pub compressed_bytes: u64,
    /// Distinct chunks the repository already had from an earlier release.
    pub reused_chunks: u64,
}

/// Writes chunks into `REPO/chunks/` and remembers which ones this release uses.
pub struct ChunkStore {
    repo: PathBuf,
    settings: ChunkingSettings,
    /// Compressed size of each distinct chunk of this release.
    chunks: BTreeMap<Sha256Digest, u64>,
    stats: StoreStats,
}

impl ChunkStore {
    /// Opens the chunk store of the repository at `repo`. `settings` must come
    /// from a validated recipe, whose sizes FastCDC accepts.
    pub fn new(repo: &Path, settings: ChunkingSettings) -> Self {
        Self { repo: repo.to_owned(), settings, chunks: BTreeMap::new(), stats: StoreStats::default() }
    }

    /// Chunks and stores the content of `reader`; `name` identifies it in errors.
    /// Returns the content's size, SHA-256 and chunk list.
    pub fn add(&mut self, reader: impl Read, name: &str) -> Result<(u64, Sha256Digest, Vec<ChunkRef>), StoreError> {
        let ChunkingSettings { min_bytes, avg_bytes, max_bytes, .. } = self.settings;
        let mut hasher = Sha256::new();
        let mut refs = Vec::new();
        let mut size = 0u64;
        for chunk in StreamCDC::new(reader, min_bytes, avg_bytes, max_bytes) {
            let chunk = chunk.map_err(|e| StoreError::Read { name: name.to_owned(), source: e.into() })?;
            hasher.update(&chunk.data);
            size += chunk.data.len() as u64;
            refs.push(self.add_chunk(&chunk.data)?);
        }
        self.stats.files += 1;
        self.stats.file_bytes += size;
        Ok((size, Sha256Digest::from_hasher(hasher), refs))
    }

    /// Stores one chunk unless this release or an earlier one already did.
    fn add_chunk(&mut self, data: &[u8]) -> Result<ChunkRef, StoreError> {
        let mut chunk = ChunkRef { digest: Sha256Digest::of(data), size: data.len() as u64, stored: 0 };
        self.stats.chunk_refs += 1;
        if let Some(stored_len) = self.chunks.get(&chunk.digest) {
            self.stats.deduplicated_bytes += chunk.size;
            chunk.stored = *stored_len;
            return Ok(chunk);
        }
        let path = self.chunk_path(&chunk.digest);
        let stored_len = match self.existing_chunk(&chunk, &path) {
            Some(len) => {
                self.stats.reused_chunks += 1;
                len
            }
            None => self.write_chunk(&chunk, data, &path)?,
        };
        self.chunks.insert(chunk.digest, stored_len);
        self.stats.unique_chunks += 1;
        self.stats.compressed_bytes += stored_len;
        chunk.stored = stored_len;
        Ok(chunk)
    }

    /// Returns the stored size of a chunk that is already in the repository
    /// and decodes to `chunk`. A damaged chunk, such as one cut short by a
    /// crash, is written again.
    fn existing_chunk(&self, chunk: &ChunkRef, path: &Path) -> Option<u64> {
        let stored = std::fs::read(path).ok()?;
        match decode_chunk(chunk, &stored) {
            Ok(_) => Some(stored.len() as u64),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "replacing a damaged chunk");
                None
            }
        }
    }

    /// Compresses a chunk and writes it through a temporary file and a
    /// rename, so a reader never sees a partial chunk. Returns its stored size.
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8], path: &Path) -> Result<u64, StoreError> {
        let compressed = zstd::bulk::compress(data, self.settings.zstd_level)
            .map_err(|source| StoreError::Compress { digest: chunk.digest, source })?;
        let write = |source| StoreError::Write { path: path.to_owned(), source };
        let directory = path.parent().unwrap_or(&self.repo);
        std::fs::create_dir_all(directory).map_err(write)?;
        let mut temp = tempfile::NamedTempFile::new_in(directory).map_err(write)?;
        temp.write_all(&compressed).map_err(write)?;
        // No fsync per chunk: a chunk damaged by a crash fails its digest
        // check and is written again by the next release.
        temp.persist(path).map_err(|e| write(e.error))?;
        set_mode_0644(path).map_err(write)?;
        Ok(compressed.len() as u64)
    }

    /// Path of a chunk in this repository.
    pub fn chunk_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.repo.join(repo_chunk_path(digest))
    }

    /// Returns the release's distinct chunks, sorted by digest.
    pub fn chunks(&self) -> impl Iterator<Item = &Sha256Digest> {
        self.chunks.keys()
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }
}

/// Gives a file mode 0644, because temporary files are created 0600 and the
/// repository is served to anyone.
pub fn set_mode_0644(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn settings() -> ChunkingSettings {
        ChunkingSettings { min_bytes: 1024, avg_bytes: 4096, max_bytes: 16384, zstd_level: 3 }
    }

    /// Bytes that do not repeat, so FastCDC finds several boundaries.
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_through_decode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ChunkStore::new(dir.path(), settings());
        let data = noise(100_000, 1);
        let (size, digest, refs) = store.add(data.as_slice(), "noise").expect("add");
        assert_eq!(size, 100_000);
        assert_eq!(digest, Sha256Digest::of(&data));
        assert!(refs.len() > 1, "expected several chunks, got {}", refs.len());
        let mut joined = Vec::new();
        for chunk in &refs {
            let stored = std::fs::read(store.chunk_path(&chunk.digest)).expect("chunk file");
            joined.extend(decode_chunk(chunk, &stored).expect("valid chunk"));
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn repeated_content_is_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ChunkStore::new(dir.path(), settings());
        let data = noise(50_000, 2);
        store.add(data.as_slice(), "first").expect("add");
        let after_first = store.stats();
        store.add(data.as_slice(), "second").expect("add");
        let stats = store.stats();
        assert_eq!(stats.unique_chunks, after_first.unique_chunks);
        assert_eq!(stats.deduplicated_bytes, 50_000);
        assert_eq!(stats.file_bytes, 100_000);
    }

    #[test]
    fn chunk_from_earlier_release_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = noise(20_000, 3);
        ChunkStore::new(dir.path(), settings()).add(data.as_slice(), "v1").expect("add");
        let mut store = ChunkStore::new(dir.path(), settings());
        store.add(data.as_slice(), "v2").expect("add");
        assert_eq!(store.stats().reused_chunks, store.stats().unique_chunks);
    }

    #[test]
    fn damaged_chunk_is_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = b"servo calibration".to_vec();
        let mut first = ChunkStore::new(dir.path(), settings());
        let (_, _, refs) = first.add(data.as_slice(), "v1").expect("add");
        let path = first.chunk_path(&refs[0].digest);
        std::fs::write(&path, b"garbage").expect("damage");
        let mut second = ChunkStore::new(dir.path(), settings());
        second.add(data.as_slice(), "v2").expect("add");
        assert_eq!(second.stats().reused_chunks, 0);
        let stored = std::fs::read(&path).expect("chunk");
        assert_eq!(decode_chunk(&refs[0], &stored).expect("repaired"), data);
    }

    #[test]
    fn empty_content_has_no_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ChunkStore::new(dir.path(), settings());
        let (size, digest, refs) = store.add(&b""[..], "empty").expect("add");
        assert_eq!(size, 0);
        assert_eq!(digest, Sha256Digest::of(b""));
        assert!(refs.is_empty());
    }
}
