//! `tender publish --to DIR`: the repository laid out for any HTTP server,
//! CDN or object store, written in the order of
//! [`super::repository_files`] so that a server may serve `DIR` while it
//! changes.
//!
//! Each file is written to a temporary name in its directory, synced and
//! renamed into place. A file already present with the same bytes is left
//! alone, so a repeated publish writes nothing, and nothing is ever deleted,
//! because a robot may still be reading an older release's files.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{repository_files, FileKind, ListError, RepositoryFile};
use crate::fsutil::write_atomic_with;
use crate::publish::signed_version;

/// Failures of a static publish.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} differs from {}: a published metadata version never changes; publish to a fresh directory, or from the repository that {} came from", destination.display(), origin.display(), destination.display())]
    VersionChanged { destination: PathBuf, origin: PathBuf },
    #[error("{} is version {published}, newer than version {new} in {}; publishing would roll robots back, so release or re-sign the timestamp in the repository first", destination.display(), origin.display())]
    Rollback { destination: PathBuf, origin: PathBuf, published: u64, new: u64 },
    #[error("{} is inside the repository {}; pass a directory outside it", destination.display(), repo.display())]
    InsideRepository { destination: PathBuf, repo: PathBuf },
}

/// Counters of a static publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaticSummary {
    pub copied_files: u64,
    pub copied_bytes: u64,
    /// Files that the destination already had with the same bytes.
    pub unchanged_files: u64,
    /// Content-addressed files whose bytes in the destination were damaged and were replaced.
    pub repaired_files: u64,
}

/// Copies the repository `repo` into `destination`.
pub fn publish_to_dir(repo: &Path, destination: &Path) -> Result<StaticSummary, StaticError> {
    let repo_absolute = std::path::absolute(repo).map_err(|source| StaticError::Read { path: repo.to_owned(), source })?;
    let destination_absolute =
        std::path::absolute(destination).map_err(|source| StaticError::Write { path: destination.to_owned(), source })?;
    if destination_absolute.starts_with(&repo_absolute) {
        return Err(StaticError::InsideRepository { destination: destination.to_owned(), repo: repo.to_owned() });
    }
    let files = repository_files(repo)?;
    check_no_rollback(&files, destination)?;
    let mut summary = StaticSummary::default();
    for file in &files {
        let target = destination.join(&file.path);
        match same_bytes(&file.source, &target, file.length)? {
            Presence::Same => {
                summary.unchanged_files += 1;
                continue;
            }
            Presence::Different if file.kind == FileKind::VersionedMetadata => {
                return Err(StaticError::VersionChanged { destination: target, origin: file.source.clone() });
            }
            Presence::Different if matches!(file.kind, FileKind::Chunk | FileKind::Target) => {
                tracing::warn!(path = %target.display(), "content-addressed file differs from the repository's; replacing it");
                summary.repaired_files += 1;
            }
            Presence::Different | Presence::Missing => {}
        }
        copy_atomic(&file.source, &target)?;
        tracing::debug!(path = file.path, bytes = file.length, "published");
        summary.copied_files += 1;
        summary.copied_bytes += file.length;
    }
    Ok(summary)
}

/// Rejects a publish whose unversioned metadata is older than what the
/// destination serves, before anything is written.
fn check_no_rollback(files: &[RepositoryFile], destination: &Path) -> Result<(), StaticError> {
    for file in files.iter().filter(|f| matches!(f.kind, FileKind::Metadata | FileKind::Timestamp)) {
        let target = destination.join(&file.path);
        let published = match std::fs::read(&target) {
            Ok(bytes) => signed_version(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StaticError::Read { path: target, source }),
        };
        let new = std::fs::read(&file.source)
            .map(|bytes| signed_version(&bytes))
            .map_err(|source| StaticError::Read { path: file.source.clone(), source })?;
        if let (Some(published), Some(new)) = (published, new) {
            if published > new {
                return Err(StaticError::Rollback { destination: target, origin: file.source.clone(), published, new });
            }
        }
    }
    Ok(())
}

enum Presence {
    Missing,
    Same,
    Different,
}

fn same_bytes(source: &Path, target: &Path, length: u64) -> Result<Presence, StaticError> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.len() != length || !meta.is_file() => return Ok(Presence::Different),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Presence::Missing),
        Err(source) => return Err(StaticError::Read { path: target.to_owned(), source }),
    }
    let open = |path: &Path| std::fs::File::open(path).map_err(|source| StaticError::Read { path: path.to_owned(), source });
    let (mut a, mut b) = (open(source)?, open(target)?);
    let mut buffer_a = vec![0u8; 64 * 1024];
    let mut buffer_b = vec![0u8; 64 * 1024];
    loop {
        let read = a.read(&mut buffer_a).map_err(|e| StaticError::Read { path: source.to_owned(), source: e })?;
        if read == 0 {
            return Ok(Presence::Same);
        }
        b.read_exact(&mut buffer_b[..read]).map_err(|e| StaticError::Read { path: target.to_owned(), source: e })?;
        if buffer_a[..read] != buffer_b[..read] {
            return Ok(Presence::Different);
        }
    }
}

fn copy_atomic(source: &Path, target: &Path) -> Result<(), StaticError> {
    let mut input = std::fs::File::open(source).map_err(|e| StaticError::Read { path: source.to_owned(), source: e })?;
    write_atomic_with(target, |file| std::io::copy(&mut input, file).map(|_| ()))
        .map_err(|e| StaticError::Write { path: target.to_owned(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(version: u64) -> Vec<u8> {
        format!(r#"{{"signatures":[],"signed":{{"version":{version}}}}}"#).into_bytes()
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    fn sample_repo(dir: &Path, timestamp: u64) {
        write(&dir.join("metadata/1.root.json"), &envelope(1));
        write(&dir.join("metadata/root.json"), &envelope(1));
        write(&dir.join("metadata/timestamp.json"), &envelope(timestamp));
        write(&dir.join("chunks/ab/abcd.zst"), b"chunk");
    }

    #[test]
    fn second_publish_copies_nothing() {
        let repo = tempfile::tempdir().expect("repo");
        let out = tempfile::tempdir().expect("out");
        sample_repo(repo.path(), 3);
        let first = publish_to_dir(repo.path(), out.path()).expect("first publish");
        assert_eq!(first.copied_files, 4);
        let second = publish_to_dir(repo.path(), out.path()).expect("second publish");
        assert_eq!(second.copied_files, 0);
        assert_eq!(second.unchanged_files, 4);
    }

    #[test]
    fn older_timestamp_is_rejected_before_writing() {
        let repo = tempfile::tempdir().expect("repo");
        let out = tempfile::tempdir().expect("out");
        sample_repo(repo.path(), 3);
        write(&out.path().join("metadata/timestamp.json"), &envelope(5));
        let error = publish_to_dir(repo.path(), out.path()).expect_err("rollback");
        assert!(error.to_string().contains("version 5, newer than version 3"), "{error}");
        assert!(!out.path().join("chunks").exists(), "files were written before the check");
    }

    #[test]
    fn changed_versioned_metadata_is_rejected() {
        let repo = tempfile::tempdir().expect("repo");
        let out = tempfile::tempdir().expect("out");
        sample_repo(repo.path(), 3);
        write(&out.path().join("metadata/1.root.json"), b"another root");
        let error = publish_to_dir(repo.path(), out.path()).expect_err("changed version");
        assert!(error.to_string().contains("a published metadata version never changes"), "{error}");
    }
}
