//! Turning scanned tree entries into manifest entries: file contents are
//! chunked into the store, and every entry gets the release's mtime.

use std::fs::File;
use std::io::Read;

use indicatif::ProgressBar;
use tender_updater::format::{Entry, EntryKind};

use crate::release::ReleaseError;
use crate::scan::{FileContent, ScanError, TreeEntry, TreeKind};
use crate::store::ChunkStore;

/// Chunks every file of `tree` into `store` and returns the manifest
/// entries in the same order. `progress` counts bytes.
pub fn chunk_entries(
    tree: Vec<TreeEntry>,
    store: &mut ChunkStore,
    mtime: u64,
    progress: &ProgressBar,
) -> Result<Vec<Entry>, ReleaseError> {
    let mut entries = Vec::with_capacity(tree.len());
    for entry in tree {
        let kind = match entry.kind {
            TreeKind::Dir => EntryKind::Dir,
            TreeKind::Symlink { target } => EntryKind::Symlink { target },
            TreeKind::Hardlink { target } => EntryKind::Hardlink { target },
            TreeKind::File { size, content } => chunk_file(&entry.path, size, content, store, progress)?,
        };
        entries.push(Entry {
            path: entry.path,
            kind,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime,
            xattrs: entry.xattrs,
        });
    }
    Ok(entries)
}

fn chunk_file(
    path: &str,
    expected_size: u64,
    content: FileContent,
    store: &mut ChunkStore,
    progress: &ProgressBar,
) -> Result<EntryKind, ReleaseError> {
    progress.set_message(path.to_owned());
    let (size, sha256, chunks) = match content {
        FileContent::Memory(bytes) => store.add(progress.wrap_read(bytes.as_slice()), path)?,
        FileContent::Disk(disk_path) => {
            let file = File::open(&disk_path).map_err(|source| ScanError::Io { path: disk_path.clone(), source })?;
            // Read one byte past the listed size to notice a file that grew.
            let (size, sha256, chunks) = store.add(progress.wrap_read(file.take(expected_size + 1)), path)?;
            if size != expected_size {
                let detail = if size > expected_size {
                    format!("it grew past the {expected_size} bytes it had when scanned")
                } else {
                    format!("{expected_size} bytes when scanned, {size} when chunked")
                };
                return Err(ScanError::Changed { path: disk_path, detail }.into());
            }
            (size, sha256, chunks)
        }
    };
    Ok(EntryKind::File { size, sha256, chunks })
}
