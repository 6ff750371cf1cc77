//! Verification of a slot against its manifest: every entry present with the
//! right kind, content, mode, owner, attributes and time, and nothing else.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::metadata::{is_privileged, read_xattrs};
use crate::format::{EntryKind, Manifest, Sha256Digest};

/// The slot does not match its manifest.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("slot {} does not match its manifest at {path:?}: {detail}", slot.display())]
    Mismatch { slot: PathBuf, path: String, detail: String },
    #[error("cannot read slot {}: {source}", slot.display())]
    Io { slot: PathBuf, source: std::io::Error },
}

/// Checks every entry of `slot_dir` against `manifest`, hashing every file.
pub fn check_slot(slot_dir: &Path, manifest: &Manifest) -> Result<(), CheckError> {
    let mismatch = |path: &str, detail: String| CheckError::Mismatch {
        slot: slot_dir.to_owned(),
        path: path.to_owned(),
        detail,
    };
    let privileged = is_privileged();
    let mut inodes: HashMap<&str, (u64, u64)> = HashMap::new();
    for entry in &manifest.entries {
        let path = slot_dir.join(&entry.path);
        let meta = fs::symlink_metadata(&path).map_err(|e| mismatch(&entry.path, format!("cannot inspect it: {e}")))?;
        let kind_ok = match &entry.kind {
            EntryKind::Dir => meta.is_dir(),
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => meta.file_type().is_file(),
            EntryKind::Symlink { .. } => meta.file_type().is_symlink(),
        };
        if !kind_ok {
            return Err(mismatch(&entry.path, format!("expected a {}", kind_name(&entry.kind))));
        }
        match &entry.kind {
            EntryKind::File { size, sha256, .. } => {
                if meta.len() != *size {
                    return Err(mismatch(&entry.path, format!("size is {} bytes, expected {size}", meta.len())));
                }
                let actual = hash_file(&path).map_err(|e| mismatch(&entry.path, format!("cannot read it: {e}")))?;
                if actual != *sha256 {
                    return Err(mismatch(&entry.path, format!("sha256 is {actual}, expected {sha256}")));
                }
                inodes.insert(&entry.path, (meta.dev(), meta.ino()));
            }
            EntryKind::Symlink { target } => {
                let actual = fs::read_link(&path).map_err(|e| mismatch(&entry.path, format!("cannot read link: {e}")))?;
                if actual != Path::new(target) {
                    return Err(mismatch(&entry.path, format!("points to {actual:?}, expected {target:?}")));
                }
            }
            EntryKind::Hardlink { target } => {
                if inodes.get(target.as_str()) != Some(&(meta.dev(), meta.ino())) {
                    return Err(mismatch(&entry.path, format!("is not a hardlink of {target:?}")));
                }
                // The inode's metadata was checked with its first name.
                continue;
            }
            EntryKind::Dir => {}
        }
        let is_symlink = matches!(entry.kind, EntryKind::Symlink { .. });
        if !is_symlink && meta.mode() & 0o7777 != entry.mode {
            return Err(mismatch(&entry.path, format!("mode is {:o}, expected {:o}", meta.mode() & 0o7777, entry.mode)));
        }
        if privileged && (meta.uid() != entry.uid || meta.gid() != entry.gid) {
            return Err(mismatch(
                &entry.path,
                format!("owner is {}:{}, expected {}:{}", meta.uid(), meta.gid(), entry.uid, entry.gid),
            ));
        }
        if meta.mtime() != entry.mtime as i64 {
            return Err(mismatch(&entry.path, format!("mtime is {}, expected {}", meta.mtime(), entry.mtime)));
        }
        let xattrs = read_xattrs(&path).map_err(|e| mismatch(&entry.path, format!("cannot read attributes: {e}")))?;
        if xattrs != entry.xattrs {
            let names: Vec<&String> = xattrs.keys().collect();
            return Err(mismatch(&entry.path, format!("extended attributes {names:?} differ from the manifest")));
        }
    }
    check_no_extra(slot_dir, manifest)
}

fn check_no_extra(slot_dir: &Path, manifest: &Manifest) -> Result<(), CheckError> {
    let listed: HashSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    for item in walkdir::WalkDir::new(slot_dir).min_depth(1) {
        let item = item.map_err(|e| CheckError::Io { slot: slot_dir.to_owned(), source: e.into() })?;
        let relative = item.path().strip_prefix(slot_dir).unwrap_or(item.path()).to_string_lossy().into_owned();
        if !listed.contains(relative.as_str()) {
            return Err(CheckError::Mismatch {
                slot: slot_dir.to_owned(),
                path: relative,
                detail: "is not in the manifest".to_owned(),
            });
        }
    }
    Ok(())
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "regular file",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Hardlink { .. } => "hardlink to a regular file",
    }
}

fn hash_file(path: &Path) -> std::io::Result<Sha256Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(Sha256Digest::from_hasher(hasher))
}
