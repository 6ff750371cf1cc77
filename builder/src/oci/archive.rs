//! The image archive: a tar of the layout directory, in the form that
//! `skopeo`'s and `podman`'s `oci-archive:` transport reads.
//!
//! Members are `oci-layout`, `index.json`, `blobs/`, `blobs/sha256/` and
//! the blobs sorted by digest, with mode 0644 (0755 for directories), owner
//! 0:0 and mtime `SOURCE_DATE_EPOCH`, so the same layout gives the same
//! archive bytes. The archive is uncompressed because its layers are
//! compressed already.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic_with;
use crate::oci::layout::{BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE};
use crate::oci::tarball::{append_entry, TarEntry, TarKind};

/// Failure to write the archive.
#[derive(Debug, thiserror::Error)]
#[error("cannot write image archive {} from {}: {source}", path.display(), layout.display())]
pub struct ArchiveError {
    path: PathBuf,
    layout: PathBuf,
    source: io::Error,
}

/// Writes the layout at `layout` as a tar archive to `path`, atomically.
pub fn write_archive(layout: &Path, path: &Path, mtime: u64) -> Result<u64, ArchiveError> {
    let error = |source| ArchiveError { path: path.to_owned(), layout: layout.to_owned(), source };
    let blobs_dir = layout.join(BLOBS_DIR);
    let mut blobs: Vec<String> = Vec::new();
    for item in std::fs::read_dir(&blobs_dir).map_err(error)? {
        let name = item.map_err(error)?.file_name();
        // Only complete blobs carry a digest name; partial files start with a dot.
        match name.to_str() {
            Some(name) if !name.starts_with('.') => blobs.push(name.to_owned()),
            _ => {}
        }
    }
    blobs.sort();

    write_atomic_with(path, |file| {
        let mut archive = tar::Builder::new(BufWriter::new(file));
        let entry = |path: &str, kind: TarKind, mode: u32| TarEntry {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        };
        for name in [OCI_LAYOUT_FILE, INDEX_FILE] {
            append_file(&mut archive, &layout.join(name), entry(name, TarKind::File { size: 0 }, 0o644))?;
        }
        append_entry(&mut archive, &entry("blobs", TarKind::Dir, 0o755), io::empty())?;
        append_entry(&mut archive, &entry(BLOBS_DIR, TarKind::Dir, 0o755), io::empty())?;
        for name in &blobs {
            let member = format!("{BLOBS_DIR}/{name}");
            append_file(&mut archive, &blobs_dir.join(name), entry(&member, TarKind::File { size: 0 }, 0o644))?;
        }
        archive.into_inner()?.flush()
    })
    .map_err(error)?;
    Ok(std::fs::metadata(path).map_err(error)?.len())
}

/// Appends the file at `source` as `entry`, with its size from disk.
fn append_file<W: Write>(archive: &mut tar::Builder<W>, source: &Path, mut entry: TarEntry) -> io::Result<()> {
    let file = File::open(source).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?;
    entry.kind = TarKind::File { size: file.metadata()?.len() };
    append_entry(archive, &entry, file)
}
