//! Downloading a target file (TUF 5.7): the consistent name
//! `DIR/HASH.BASENAME` when the root enables consistent snapshots, a cap of
//! the listed length, and length and hashes checked before the file takes
//! its final name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::checks::{check_hashes, check_length, Hasher};
use super::delegation::FoundTarget;
use super::error::TufError;
use super::fetch::Fetcher;
use super::names::{remote_target_name, snapshot_meta_key};
use crate::fsutil::sync_dir;

/// The outcome of [`download_target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    /// The file was downloaded, verified and stored.
    Downloaded,
    /// The stored copy already had the listed length and hashes.
    AlreadyPresent,
}

/// Passes written bytes to a file and a hasher.
struct HashingWriter<'a> {
    file: &'a mut File,
    hasher: Hasher,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let count = self.file.write(bytes)?;
        self.hasher.update(&bytes[..count]);
        Ok(count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Returns true when `path` has the length and hashes listed for `target`.
/// A missing or unreadable file does not match.
pub fn stored_copy_matches(path: &Path, target: &FoundTarget) -> bool {
    let Ok(file) = File::open(path) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(target.file.length) {
        return false;
    }
    let Ok(digests) = hash_reader(file.take(target.file.length)) else { return false };
    let listed_in = snapshot_meta_key(&target.role);
    check_hashes(&target.file.hashes, &digests, &target.path, &listed_in).is_ok()
}

/// Hashes everything `reader` returns.
fn hash_reader(mut reader: impl Read) -> std::io::Result<super::checks::Digests> {
    let mut hasher = Hasher::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let count = reader.read(&mut buffer)?;
        if count == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..count]);
    }
}

/// Returns the name to fetch `target` under: `HASH.NAME` with consistent
/// snapshots, which need a listed hash before any byte is fetched.
fn fetch_name(target: &FoundTarget, consistent_snapshot: bool) -> Result<String, TufError> {
    let hash_prefix = consistent_snapshot.then(|| consistent_hash(target)).transpose()?;
    Ok(remote_target_name(&target.path, hash_prefix.as_deref()))
}

/// Downloads `target` into the file `dest`, unless `dest` already matches.
/// The data goes to a temporary file beside `dest`, and only a file with the
/// listed length and hashes is synced and renamed to `dest`.
pub fn download_target(
    fetcher: &dyn Fetcher,
    target: &FoundTarget,
    consistent_snapshot: bool,
    dest: &Path,
) -> Result<TargetStatus, TufError> {
    if stored_copy_matches(dest, target) {
        tracing::debug!(target = %target.path, path = %dest.display(), "stored copy already matches");
        return Ok(TargetStatus::AlreadyPresent);
    }
    let listed_in = snapshot_meta_key(&target.role);
    let name = fetch_name(target, consistent_snapshot)?;

    let write_error = |path: &Path, source: std::io::Error| TufError::WriteTarget {
        target: target.path.clone(),
        path: path.to_owned(),
        source,
    };
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tender-target-")
        .tempfile_in(dir)
        .map_err(|e| write_error(dir, e))?;
    let mut writer = HashingWriter { file: temp.as_file_mut(), hasher: Hasher::default() };
    fetcher
        .fetch_to(&name, target.file.length, &mut writer)
        .map_err(|source| TufError::FetchTarget { target: target.path.clone(), source })?;
    let digests = writer.hasher.finish();
    check_length(target.file.length, digests.length, &target.path, &listed_in)?;
    check_hashes(&target.file.hashes, &digests, &target.path, &listed_in)?;

    temp.as_file().sync_all().map_err(|e| write_error(temp.path(), e))?;
    temp.persist(dest).map_err(|e| write_error(dest, e.error))?;
    sync_dir(dir)?;
    Ok(TargetStatus::Downloaded)
}

/// Like [`download_target`], but the download resumes from what an
/// interrupted earlier call left beside `dest`, when the fetcher can. For
/// large targets on bad links, such as delta packs. The file at `dest` is
/// checked after the download and removed when it does not match.
pub fn download_target_resumable(
    fetcher: &dyn Fetcher,
    target: &FoundTarget,
    consistent_snapshot: bool,
    dest: &Path,
) -> Result<TargetStatus, TufError> {
    if stored_copy_matches(dest, target) {
        return Ok(TargetStatus::AlreadyPresent);
    }
    let listed_in = snapshot_meta_key(&target.role);
    let name = fetch_name(target, consistent_snapshot)?;
    let write_error = |path: &Path, source: std::io::Error| TufError::WriteTarget {
        target: target.path.clone(),
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    }
    let _ = std::fs::remove_file(dest);
    fetcher
        .fetch_resumable(&name, target.file.length, dest)
        .map_err(|source| TufError::FetchTarget { target: target.path.clone(), source })?;
    let file = File::open(dest).map_err(|e| write_error(dest, e))?;
    let digests = hash_reader(file).map_err(|e| write_error(dest, e))?;
    let checked = check_length(target.file.length, digests.length, &target.path, &listed_in)
        .and_then(|()| check_hashes(&target.file.hashes, &digests, &target.path, &listed_in));
    if let Err(error) = checked {
        let _ = std::fs::remove_file(dest);
        return Err(error);
    }
    Ok(TargetStatus::Downloaded)
}

/// Returns the hash for a consistent target name: sha256 when listed, else
/// the first listed hash.
fn consistent_hash(target: &FoundTarget) -> Result<String, TufError> {
    let hashes = &target.file.hashes;
    hashes
        .get("sha256")
        .or_else(|| hashes.values().next())
        .cloned()
        .ok_or_else(|| TufError::NoSupportedHash { file: target.path.clone(), listed_in: snapshot_meta_key(&target.role) })
}
