//! Staging a release into the inactive slot.
//!
//! Staging has two steps. [`prepare`] decides for every file where its bytes
//! come from, and fetches and verifies every chunk that the robot lacks. It
//! writes nothing to the slots or the state, so a bad release is rejected
//! before anything changes. [`PreparedStage::write`] then rewrites
//! the inactive slot in place: files that already match are kept, files the
//! active slot holds are copied from it, and only the rest is rebuilt from
//! chunks. Every chunk is checked against its digest when it is decoded, and
//! every file against its SHA-256 before it is renamed into place.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::metadata;
use super::space::{self, Room};
use super::DirectorySlots;
use crate::format::chunk::{decode_chunk, ChunkError};
use crate::format::limits::MAX_STORED_CHUNK_BYTES;
use crate::delta::DeltaPack;
use crate::format::{ChunkRef, EntryKind, Manifest, Sha256Digest};
use crate::source::{ReleaseSource, SourceError};
use crate::state::Slot;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; the release is damaged, get a new copy")]
    Chunk(#[from] ChunkError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    #[error("file {path:?} rebuilt from its chunks hashes to {actual}, but the manifest says {expected}")]
    FileDigest { path: String, expected: Sha256Digest, actual: Sha256Digest },
    #[error("{place} at {} cannot be written: {source}; remount it read-write or fix its permissions, then install again", path.display())]
    NotWritable { place: String, path: PathBuf, source: std::io::Error },
    #[error("{place} at {} has {available} free but staging needs {needed}; free space on that filesystem, then install again", path.display())]
    NoSpace { place: String, path: PathBuf, available: String, needed: String },
    #[error("{place} at {} ran out of space ({source}); its partial data was removed; free space on that filesystem, then install again", path.display())]
    OutOfSpace { place: String, path: PathBuf, source: Box<StageError> },
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StageError + 'p {
    move |source| StageError::Io { action, path: path.to_owned(), source }
}

/// Counters of a staging, for the summary and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageStats {
    /// Files already correct in the inactive slot.
    pub files_kept: u64,
    pub bytes_kept: u64,
    /// Files copied whole from the active slot.
    pub files_copied: u64,
    pub bytes_copied: u64,
    /// Files rebuilt from chunks.
    pub files_rebuilt: u64,
    /// Uncompressed chunk bytes read from the active slot.
    pub chunk_bytes_reused: u64,
    /// Stored bytes of the chunks the robot lacked, known before the download.
    pub bytes_planned: u64,
    /// Chunks taken from the release source, and their stored size.
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// File bytes written into the slot (copied plus rebuilt).
    pub bytes_written: u64,
    /// Bytes of the delta pack used, and the files rebuilt from it.
    pub delta_bytes: u64,
    pub files_from_delta: u64,
}

#[derive(Debug, Clone)]
enum FilePlan {
    Keep,
    CopyFromActive(PathBuf),
    /// Move in a file rebuilt from a delta pack and verified.
    FromDelta(PathBuf),
    Rebuild,
}

/// Location of a chunk in a file of the active slot.
#[derive(Debug, Clone)]
struct LocalChunk {
    path: PathBuf,
    offset: u64,
}

/// A staging plan whose chunks were all fetched and verified.
pub struct PreparedStage<'m> {
    manifest: &'m Manifest,
    slot: Slot,
    slot_dir: PathBuf,
    scratch: PathBuf,
    /// Files written to the scratch directory, not yet synced and renamed
    /// into place, and their bytes.
    pending: Vec<(PathBuf, PathBuf)>,
    pending_bytes: u64,
    active_dir: Option<PathBuf>,
    plans: HashMap<String, FilePlan>,
    local_chunks: HashMap<Sha256Digest, LocalChunk>,
    cache_dir: PathBuf,
    stats: StageStats,
}

/// Hashes a file, or returns `None` when it cannot be read.
fn hash_file(path: &Path) -> Option<Sha256Digest> {
    let mut file = File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(Sha256Digest::from_hasher(hasher))
}

/// Returns true when `path` is a regular file of `size` bytes with no other
/// names. A file with other hardlinks is never kept, because setting its
/// metadata would change those names too.
fn is_lone_file_of_size(path: &Path, size: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.len() == size && m.nlink() == 1)
}

/// Plans the staging of `manifest` into `target`, rebuilds the files a delta
/// pack carries, and fetches every chunk the robot still lacks, verifying
/// each. Writes only to `cache_dir`: the rebuilt files, and the chunks of
/// remote sources.
pub fn prepare<'m>(
    manifest: &'m Manifest,
    slots: &DirectorySlots,
    target: Slot,
    active: Option<(Slot, &Manifest)>,
    source: &mut dyn ReleaseSource,
    cache_dir: &Path,
    delta: Option<&DeltaPack>,
) -> Result<PreparedStage<'m>, StageError> {
    let slot_dir = slots.slot_dir(target);
    let active_dir = active.map(|(slot, _)| slots.slot_dir(slot));

    // Files and chunks of the active slot, by digest.
    let mut active_files: HashMap<Sha256Digest, PathBuf> = HashMap::new();
    let mut local_chunks: HashMap<Sha256Digest, LocalChunk> = HashMap::new();
    if let (Some((_, active_manifest)), Some(dir)) = (active, &active_dir) {
        for entry in &active_manifest.entries {
            if let EntryKind::File { sha256, chunks, .. } = &entry.kind {
                let path = dir.join(&entry.path);
                active_files.entry(*sha256).or_insert_with(|| path.clone());
                let mut offset = 0;
                for chunk in chunks {
                    local_chunks.entry(chunk.digest).or_insert_with(|| LocalChunk { path: path.clone(), offset });
                    offset += chunk.size;
                }
            }
        }
    }

    let mut stats = StageStats::default();
    let mut plans = HashMap::new();
    // Files that neither the inactive nor the active slot has.
    let mut pending = Vec::new();
    for entry in &manifest.entries {
        let EntryKind::File { size, sha256, chunks } = &entry.kind else { continue };
        let existing = slot_dir.join(&entry.path);
        if is_lone_file_of_size(&existing, *size) && hash_file(&existing) == Some(*sha256) {
            stats.files_kept += 1;
            stats.bytes_kept += size;
            plans.insert(entry.path.clone(), FilePlan::Keep);
        } else if let Some(path) = active_files.get(sha256) {
            plans.insert(entry.path.clone(), FilePlan::CopyFromActive(path.clone()));
        } else {
            pending.push((entry.path.as_str(), sha256, chunks));
        }
    }

    check_slot_room(manifest, &slot_dir, target, &plans)?;

    let fetched = fetch_missing(manifest, active, active_dir.as_deref(), source, cache_dir, delta, &local_chunks, pending, &mut plans, &mut stats);
    match fetched {
        Err(error) if space::is_storage_full(&error) => {
            space::empty_dir(cache_dir);
            return Err(StageError::OutOfSpace { place: "the download cache".to_owned(), path: cache_dir.to_owned(), source: Box::new(error) });
        }
        other => other?,
    }

    Ok(PreparedStage {
        manifest,
        slot: target,
        slot_dir: slot_dir.clone(),
        scratch: slot_dir.join(SCRATCH_DIR),
        pending: Vec::new(),
        pending_bytes: 0,
        active_dir,
        plans,
        local_chunks,
        cache_dir: cache_dir.to_owned(),
        stats,
    })
}

/// Name of the directory inside the slot where files are written before
/// they are renamed into place. It is inside the slot so that the rename
/// never crosses filesystems when the slot is a mount of its own.
const SCRATCH_DIR: &str = ".tender-scratch";

/// Most bytes and files written to the scratch directory before one
/// filesystem sync and their renames. The bytes also bound the extra room
/// that staging needs, since replaced files are freed only at their rename.
const BATCH_BYTES: u64 = 64 * 1024 * 1024;
const BATCH_FILES: usize = 1024;

/// Checks, before anything is written, that the inactive slot is writable
/// and has room for the files the plan writes. Files the write replaces or
/// removes count as free, except for one batch of replaced files, whose
/// blocks are freed only when their new copies are renamed over them.
fn check_slot_room(manifest: &Manifest, slot_dir: &Path, target: Slot, plans: &HashMap<String, FilePlan>) -> Result<(), StageError> {
    let place = || format!("slot {target}");
    space::check_writable(slot_dir).map_err(|e| StageError::NotWritable { place: place(), path: slot_dir.to_owned(), source: e })?;
    let room = space::room(slot_dir).map_err(io_error("measure free space of", slot_dir))?;
    let written: HashMap<&str, u64> = manifest
        .entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File { size, .. } if !matches!(plans.get(&entry.path), Some(FilePlan::Keep)) => Some((entry.path.as_str(), *size)),
            _ => None,
        })
        .collect();
    let needed: u64 = written.values().map(|size| room.blocks_of(*size)).sum();
    let freed = freed_by_write(slot_dir, &written, plans, room);
    let batch = freed.replaced.min(BATCH_BYTES + freed.largest_replaced);
    let required = needed.saturating_sub(freed.total) + batch;
    if required > room.available {
        return Err(StageError::NoSpace {
            place: place(),
            path: slot_dir.to_owned(),
            available: space::size_text(room.available),
            needed: space::size_text(required),
        });
    }
    Ok(())
}

/// Blocks of the files in the inactive slot that a write frees.
#[derive(Debug, Default)]
struct Freed {
    /// Files replaced or removed.
    total: u64,
    /// Files replaced by a new file at the same path, and the largest one.
    replaced: u64,
    largest_replaced: u64,
}

/// Counts the blocks of the files in the inactive slot that the write
/// replaces or removes. Hard links count once.
fn freed_by_write(slot_dir: &Path, written: &HashMap<&str, u64>, plans: &HashMap<String, FilePlan>, room: Room) -> Freed {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut freed = Freed::default();
    for item in walkdir::WalkDir::new(slot_dir).min_depth(1).into_iter().filter_map(Result::ok) {
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(relative) = item.path().strip_prefix(slot_dir) else { continue };
        let relative = relative.to_string_lossy();
        if matches!(plans.get(relative.as_ref()), Some(FilePlan::Keep)) {
            continue;
        }
        let blocks = room.blocks_of(meta.len());
        freed.total += blocks;
        if written.contains_key(relative.as_ref()) {
            freed.replaced += blocks;
            freed.largest_replaced = freed.largest_replaced.max(blocks);
        }
    }
    freed
}

/// Checks that the download cache has room for the chunks still to fetch.
/// One chunk at a time is stored twice, as a partial download and as its
/// cached copy.
pub fn check_cache_room(cache_dir: &Path, needed: &[ChunkRef]) -> Result<(), StageError> {
    let room = space::room(cache_dir).map_err(io_error("measure free space of", cache_dir))?;
    let missing: Vec<u64> = needed
        .iter()
        .filter(|chunk| !cache_dir.join(format!("{}.zst", chunk.digest)).exists())
        .map(|chunk| room.blocks_of(stored_limit(chunk)))
        .collect();
    let required = missing.iter().sum::<u64>() + missing.iter().max().copied().unwrap_or(0);
    if required > room.available {
        return Err(StageError::NoSpace {
            place: "the download cache".to_owned(),
            path: cache_dir.to_owned(),
            available: space::size_text(room.available),
            needed: space::size_text(required),
        });
    }
    Ok(())
}

/// Rebuilds files from the delta pack and downloads every chunk the robot
/// lacks into the cache, verified, choosing each pending file's plan.
#[allow(clippy::too_many_arguments)]
fn fetch_missing(
    manifest: &Manifest,
    active: Option<(Slot, &Manifest)>,
    active_dir: Option<&Path>,
    source: &mut dyn ReleaseSource,
    cache_dir: &Path,
    delta: Option<&DeltaPack>,
    local_chunks: &HashMap<Sha256Digest, LocalChunk>,
    pending: Vec<(&str, &Sha256Digest, &Vec<ChunkRef>)>,
    plans: &mut HashMap<String, FilePlan>,
    stats: &mut StageStats,
) -> Result<(), StageError> {
    let mut from_delta = HashMap::new();
    if let (Some(pack), Some((_, active_manifest)), Some(dir)) = (delta, active, active_dir) {
        stats.delta_bytes = pack.length();
        let wanted: HashSet<Sha256Digest> = pending.iter().map(|(_, digest, _)| **digest).collect();
        from_delta = pack.rebuild_files(manifest, active_manifest, dir, &cache_dir.join("delta-files"), |digest| wanted.contains(digest))?;
        tracing::info!(files = from_delta.len(), pack = pack.length(), "files rebuilt from the delta pack");
    }

    let mut needed: Vec<ChunkRef> = Vec::new();
    let mut seen: HashSet<Sha256Digest> = HashSet::new();
    for (path, sha256, chunks) in pending {
        let plan = match from_delta.get(sha256) {
            Some(rebuilt) => {
                FilePlan::FromDelta(rebuilt.clone())
            }
            None => {
                for chunk in chunks {
                    if !local_chunks.contains_key(&chunk.digest) && seen.insert(chunk.digest) {
                        needed.push(*chunk);
                    }
                }
                FilePlan::Rebuild
            }
        };
        plans.insert(path.to_owned(), plan);
    }

    let remote = source.is_remote();
    if remote {
        fs::create_dir_all(cache_dir).map_err(io_error("create cache directory", cache_dir))?;
    }
    stats.bytes_planned = needed.iter().map(|chunk| chunk.stored).sum();
    tracing::info!(chunks = needed.len(), bytes = stats.bytes_planned, "chunks the robot lacks");
    if remote {
        check_cache_room(cache_dir, &needed)?;
        let missing: Vec<(Sha256Digest, u64)> = needed
            .iter()
            .filter(|chunk| !cache_dir.join(format!("{}.zst", chunk.digest)).exists())
            .map(|chunk| (chunk.digest, stored_limit(chunk)))
            .collect();
        source.prefetch(&missing);
    }
    for chunk in &needed {
        let cached = cache_dir.join(format!("{}.zst", chunk.digest));
        if remote && cached.exists() {
            let stored = fs::read(&cached).map_err(io_error("read cached chunk", &cached))?;
            if decode_chunk(chunk, &stored).is_ok() {
                continue;
            }
        }
        let mut stored = source.chunk(&chunk.digest, stored_limit(chunk))?;
        if let Err(error) = decode_chunk(chunk, &stored) {
            if !remote {
                return Err(error.into());
            }
            // A network can damage bytes; fetch the chunk once more.
            tracing::warn!(chunk = %chunk.digest, %error, "downloaded chunk failed verification; fetching it again");
            source.discard_chunk(&chunk.digest);
            stored = source.chunk(&chunk.digest, stored_limit(chunk))?;
            decode_chunk(chunk, &stored)?;
        }
        stats.chunks_fetched += 1;
        stats.bytes_fetched += stored.len() as u64;
        if remote {
            crate::fsutil::write_atomic(&cached, &stored).map_err(|e| StageError::Io {
                action: "write cached chunk",
                path: cached.clone(),
                source: e.source,
            })?;
        }
    }
    tracing::info!(
        kept = stats.files_kept,
        chunks_to_fetch = needed.len(),
        bytes_fetched = stats.bytes_fetched,
        "staging plan ready"
    );
    Ok(())
}

impl PreparedStage<'_> {
    /// Rewrites the inactive slot to match the manifest. The caller has
    /// persisted that this slot is being staged.
    ///
    /// On failure the scratch directory is removed. When the slot's
    /// filesystem is full, the slot is emptied as well, because its partial
    /// release is of no use and takes the space the next attempt needs.
    pub fn write(mut self, source: &mut dyn ReleaseSource) -> Result<StageStats, StageError> {
        match self.write_entries(source) {
            Ok(()) => Ok(self.stats),
            Err(error) => {
                let _ = fs::remove_dir_all(&self.scratch);
                if !space::is_storage_full(&error) {
                    return Err(error);
                }
                space::empty_dir(&self.slot_dir);
                Err(StageError::OutOfSpace { place: format!("slot {}", self.slot), path: self.slot_dir.clone(), source: Box::new(error) })
            }
        }
    }

    fn write_entries(&mut self, source: &mut dyn ReleaseSource) -> Result<(), StageError> {
        let slot_dir = self.slot_dir.clone();
        fs::create_dir_all(&slot_dir).map_err(io_error("create slot", &slot_dir))?;
        // A scratch directory left by a crash is removed here with the rest.
        self.remove_unwanted()?;
        fs::create_dir_all(&self.scratch).map_err(io_error("create scratch directory", &self.scratch))?;

        for entry in &self.manifest.entries {
            let path = slot_dir.join(&entry.path);
            match &entry.kind {
                EntryKind::Dir => {
                    if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        fs::create_dir(&path).map_err(io_error("create directory", &path))?;
                    }
                }
                EntryKind::File { size, sha256, chunks } => {
                    let plan = self.plans.get(&entry.path).cloned().unwrap_or(FilePlan::Rebuild);
                    let temp = self.scratch.join(self.pending.len().to_string());
                    match plan {
                        FilePlan::Keep => {
                            metadata::apply(&path, entry, false).map_err(io_error("set metadata of", &path))?;
                            continue;
                        }
                        FilePlan::CopyFromActive(from) => {
                            if self.copy_file(&from, &temp, sha256)? {
                                self.stats.files_copied += 1;
                                self.stats.bytes_copied += size;
                                self.stats.bytes_written += size;
                            } else {
                                tracing::warn!(path = %from.display(), "active file differs from its manifest; rebuilding from chunks");
                                self.rebuild_file(&entry.path, &temp, sha256, chunks, source)?;
                            }
                        }
                        FilePlan::FromDelta(from) => {
                            if self.copy_file(&from, &temp, sha256)? {
                                self.stats.files_from_delta += 1;
                                self.stats.bytes_written += size;
                            } else {
                                tracing::warn!(path = %from.display(), "file rebuilt from the delta pack changed; rebuilding from chunks");
                                self.rebuild_file(&entry.path, &temp, sha256, chunks, source)?;
                            }
                        }
                        FilePlan::Rebuild => self.rebuild_file(&entry.path, &temp, sha256, chunks, source)?,
                    }
                    metadata::apply(&temp, entry, false).map_err(io_error("set metadata of", &temp))?;
                    self.pending.push((temp, path));
                    self.pending_bytes += size;
                    if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_FILES {
                        self.rename_pending()?;
                    }
                }
                EntryKind::Symlink { target } => {
                    let current = fs::read_link(&path).ok();
                    if current.as_deref() != Some(Path::new(target)) {
                        remove_any(&path)?;
                        std::os::unix::fs::symlink(target, &path).map_err(io_error("create symlink", &path))?;
                    }
                    metadata::apply(&path, entry, true).map_err(io_error("set metadata of", &path))?;
                }
                EntryKind::Hardlink { target } => {
                    // The link's target may still wait in the scratch directory.
                    self.rename_pending()?;
                    remove_any(&path)?;
                    let original = slot_dir.join(target);
                    fs::hard_link(&original, &path).map_err(io_error("create hardlink", &path))?;
                }
            }
        }
        self.rename_pending()?;
        fs::remove_dir(&self.scratch).map_err(io_error("remove scratch directory", &self.scratch))?;
        // Directory times change while their contents are written, so they
        // are set last, deepest first.
        for entry in self.manifest.entries.iter().rev() {
            if matches!(entry.kind, EntryKind::Dir) {
                let path = slot_dir.join(&entry.path);
                metadata::apply(&path, entry, false).map_err(io_error("set metadata of", &path))?;
            }
        }
        // The slot root has no manifest entry; give it fixed metadata so two
        // installs of one release are identical.
        let root_entry = crate::format::Entry {
            path: String::new(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: self.manifest.provenance.source_date_epoch,
            xattrs: Default::default(),
        };
        metadata::apply(&slot_dir, &root_entry, false).map_err(io_error("set metadata of", &slot_dir))?;
        // Every file was synced before its rename. The directories that
        // received the renames are synced last, deepest first.
        for entry in self.manifest.entries.iter().rev() {
            if matches!(entry.kind, EntryKind::Dir) {
                sync_directory(&slot_dir.join(&entry.path))?;
            }
        }
        sync_directory(&slot_dir)?;
        if let Some(parent) = slot_dir.parent() {
            sync_directory(parent)?;
        }
        Ok(())
    }

    /// Removes whatever in the slot the manifest does not list with the same
    /// kind, deepest first, without following symlinks.
    fn remove_unwanted(&self) -> Result<(), StageError> {
        let wanted: HashMap<&str, &EntryKind> =
            self.manifest.entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        for item in walkdir::WalkDir::new(&self.slot_dir).min_depth(1).contents_first(true) {
            let item = item.map_err(|e| StageError::Io {
                action: "read slot",
                path: self.slot_dir.clone(),
                source: e.into(),
            })?;
            let Ok(relative) = item.path().strip_prefix(&self.slot_dir) else { continue };
            let relative = relative.to_string_lossy();
            let file_type = item.file_type();
            let keep = match wanted.get(relative.as_ref()) {
                Some(EntryKind::Dir) => file_type.is_dir(),
                Some(EntryKind::File { .. } | EntryKind::Hardlink { .. }) => file_type.is_file(),
                Some(EntryKind::Symlink { .. }) => file_type.is_symlink(),
                None => false,
            };
            if !keep {
                remove_any(item.path())?;
            }
        }
        Ok(())
    }

    /// Copies a file of the active slot to `temp` in the scratch directory
    /// while hashing it. Returns `false`, keeping nothing, when the copy does
    /// not hash to `expected`.
    fn copy_file(&self, from: &Path, temp: &Path, expected: &Sha256Digest) -> Result<bool, StageError> {
        let mut input = File::open(from).map_err(io_error("open active file", from))?;
        let mut output = File::create(temp).map_err(io_error("create", temp))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = input.read(&mut buffer).map_err(io_error("read active file", from))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            output.write_all(&buffer[..read]).map_err(io_error("write", temp))?;
        }
        if Sha256Digest::from_hasher(hasher) != *expected {
            let _ = fs::remove_file(temp);
            return Ok(false);
        }
        Ok(true)
    }

    /// Rebuilds a file from its chunks into `temp`, taking each chunk from
    /// the active slot when it contains it and from the cache or the source
    /// otherwise.
    fn rebuild_file(
        &mut self,
        entry_path: &str,
        temp: &Path,
        expected: &Sha256Digest,
        chunks: &[ChunkRef],
        source: &mut dyn ReleaseSource,
    ) -> Result<(), StageError> {
        let mut output = File::create(temp).map_err(io_error("create", temp))?;
        let mut hasher = Sha256::new();
        for chunk in chunks {
            let plain = self.chunk_bytes(chunk, source)?;
            hasher.update(&plain);
            output.write_all(&plain).map_err(io_error("write", temp))?;
            self.stats.bytes_written += plain.len() as u64;
        }
        let actual = Sha256Digest::from_hasher(hasher);
        if actual != *expected {
            drop(output);
            let _ = fs::remove_file(temp);
            return Err(StageError::FileDigest { path: entry_path.to_owned(), expected: *expected, actual });
        }
        self.stats.files_rebuilt += 1;
        Ok(())
    }

    /// Flushes the files waiting in the scratch directory to disk with one
    /// `syncfs`, then renames each into place. One filesystem sync for a
    /// batch is cheaper than an `fdatasync` per file.
    fn rename_pending(&mut self) -> Result<(), StageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let scratch = File::open(&self.scratch).map_err(io_error("open scratch directory", &self.scratch))?;
        rustix::fs::syncfs(&scratch).map_err(|e| StageError::Io { action: "sync the filesystem of", path: self.scratch.clone(), source: e.into() })?;
        for (temp, to) in self.pending.drain(..) {
            fs::rename(&temp, &to).map_err(io_error("rename into place", &to))?;
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// Returns the verified plain bytes of a chunk.
    fn chunk_bytes(&mut self, chunk: &ChunkRef, source: &mut dyn ReleaseSource) -> Result<Vec<u8>, StageError> {
        if let Some(local) = self.local_chunks.get(&chunk.digest) {
            if let Some(dir) = &self.active_dir {
                let path = dir.join(&local.path);
                if let Some(plain) = read_range(&path, local.offset, chunk.size) {
                    if Sha256Digest::of(&plain) == chunk.digest {
                        self.stats.chunk_bytes_reused += chunk.size;
                        return Ok(plain);
                    }
                }
                tracing::warn!(path = %path.display(), chunk = %chunk.digest, "active slot chunk differs; fetching it");
            }
        }
        let cached = self.cache_dir.join(format!("{}.zst", chunk.digest));
        if let Ok(stored) = fs::read(&cached) {
            if let Ok(plain) = decode_chunk(chunk, &stored) {
                return Ok(plain);
            }
        }
        let stored = source.chunk(&chunk.digest, stored_limit(chunk))?;
        Ok(decode_chunk(chunk, &stored)?)
    }
}

/// Most bytes accepted for a stored chunk: its length in the manifest.
fn stored_limit(chunk: &ChunkRef) -> u64 {
    chunk.stored.min(MAX_STORED_CHUNK_BYTES)
}

fn read_range(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes).ok()?;
    Some(bytes)
}

/// Removes a file, symlink or directory tree at `path`, if there is one,
/// without following symlinks.
fn remove_any(path: &Path) -> Result<(), StageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io_error("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_error("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("inspect", path)(e)),
    }
}

/// Flushes a directory's entries to disk.
fn sync_directory(dir: &Path) -> Result<(), StageError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(io_error("sync directory", dir))
}
