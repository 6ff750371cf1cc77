//! `tender publish`: copy a repository that `tender release` wrote to where
//! robots read it, without rebuilding anything. [`static_dir`] lays it out
//! in a directory for any HTTP server, CDN or object store; [`registry`]
//! pushes it to an OCI registry as one artifact.
//!
//! Both follow the order of [`repository_files`]: chunks and targets first,
//! then versioned metadata, then the unversioned metadata, and
//! `metadata/timestamp.json` last. A robot that reads the destination while
//! a publish runs gets either the previous timestamp, whose files are all
//! still there, or the new one, whose files are already complete.

pub mod registry;
pub mod static_dir;

use std::path::{Path, PathBuf};

/// Failures of listing the repository to publish.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} has no metadata/timestamp.json, so it is not a repository written by `tender release`; pass OUT/repo of a release to --repo", repo.display())]
    NotRepository { repo: PathBuf },
    #[error("{} has a name that is not UTF-8; remove it from the repository", path.display())]
    Name { path: PathBuf },
}

/// The role of a repository file, which decides when it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// `chunks/ab/HEX.zst`, named by the SHA-256 of its plain bytes.
    Chunk,
    /// `targets/SHA256.NAME`: a manifest or a delta pack under its consistent name.
    Target,
    /// `manifests/NAME`, the older layout's manifests.
    LegacyManifest,
    /// `metadata/N.ROLE.json`; a published version never changes.
    VersionedMetadata,
    /// `metadata/ROLE.json` other than the timestamp.
    Metadata,
    /// The older layout's top-level `root.json` and `targets.json`.
    LegacyMetadata,
    /// `metadata/timestamp.json`, the commit point for TUF clients.
    Timestamp,
}

/// One file of the repository to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryFile {
    /// Path below the repository, with `/` separators.
    pub path: String,
    pub kind: FileKind,
    pub source: PathBuf,
    pub length: u64,
}

/// Lists the files of the repository `repo` in publishing order. Hidden
/// files (such as temporary files of an interrupted write) are left out.
pub fn repository_files(repo: &Path) -> Result<Vec<RepositoryFile>, ListError> {
    if !repo.join("metadata/timestamp.json").is_file() {
        return Err(ListError::NotRepository { repo: repo.to_owned() });
    }
    let mut files = Vec::new();
    for (dir, kind) in [("chunks", FileKind::Chunk), ("targets", FileKind::Target), ("manifests", FileKind::LegacyManifest), ("metadata", FileKind::Metadata)] {
        let base = repo.join(dir);
        if !base.is_dir() {
            continue;
        }
        for item in walkdir::WalkDir::new(&base).sort_by_file_name() {
            let item = item.map_err(|e| ListError::Read { path: base.clone(), source: e.into() })?;
            if !item.file_type().is_file() || item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let relative = item.path().strip_prefix(repo).map_err(|_| ListError::Name { path: item.path().to_owned() })?;
            let path = relative.to_str().ok_or_else(|| ListError::Name { path: item.path().to_owned() })?.to_owned();
            let length = item.metadata().map_err(|e| ListError::Read { path: item.path().to_owned(), source: e.into() })?.len();
            let kind = if kind == FileKind::Metadata { metadata_kind(&path) } else { kind };
            files.push(RepositoryFile { path, kind, source: item.path().to_owned(), length });
        }
    }
    for name in ["root.json", "targets.json"] {
        let source = repo.join(name);
        match std::fs::metadata(&source) {
            Ok(meta) if meta.is_file() => {
                files.push(RepositoryFile { path: name.to_owned(), kind: FileKind::LegacyMetadata, source, length: meta.len() })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source_error) => return Err(ListError::Read { path: source, source: source_error }),
        }
    }
    files.sort_by(|a, b| (a.kind, version_order(a), &a.path).cmp(&(b.kind, version_order(b), &b.path)));
    Ok(files)
}

fn metadata_kind(path: &str) -> FileKind {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == "timestamp.json" {
        FileKind::Timestamp
    } else if versioned_number(name).is_some() {
        FileKind::VersionedMetadata
    } else {
        FileKind::Metadata
    }
}

/// Returns `N` of `N.ROLE.json`.
fn versioned_number(name: &str) -> Option<u64> {
    let (number, rest) = name.split_once('.')?;
    (rest.ends_with(".json") && rest != "json").then(|| number.parse().ok()).flatten()
}

/// Orders versioned metadata by role (root first) and version, so that a
/// root chain is complete before the roles it signs.
fn version_order(file: &RepositoryFile) -> (u8, u64) {
    if file.kind != FileKind::VersionedMetadata {
        return (0, 0);
    }
    let name = file.path.rsplit('/').next().unwrap_or(&file.path);
    let role = match name.split_once('.').map(|(_, role)| role) {
        Some("root.json") => 0,
        Some("snapshot.json") => 2,
        _ => 1,
    };
    (role, versioned_number(name).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_in_publishing_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        for path in [
            "metadata/timestamp.json",
            "metadata/2.snapshot.json",
            "metadata/snapshot.json",
            "metadata/2.root.json",
            "metadata/10.targets.json",
            "metadata/1.root.json",
            "metadata/.tmpabc",
            "targets/ab.ecar-1.0.0.manifest.json",
            "chunks/ab/abcd.zst",
            "targets.json",
        ] {
            let path = repo.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, b"x").expect("write");
        }
        let order: Vec<String> = repository_files(repo).expect("list").into_iter().map(|f| f.path).collect();
        assert_eq!(
            order,
            [
                "chunks/ab/abcd.zst",
                "targets/ab.ecar-1.0.0.manifest.json",
                "metadata/1.root.json",
                "metadata/2.root.json",
                "metadata/10.targets.json",
                "metadata/2.snapshot.json",
                "metadata/snapshot.json",
                "targets.json",
                "metadata/timestamp.json",
            ]
        );
    }

    #[test]
    fn directory_without_timestamp_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = repository_files(dir.path()).expect_err("empty directory");
        assert!(error.to_string().contains("not a repository written by `tender release`"), "{error}");
    }
}
