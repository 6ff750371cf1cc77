//! Writing the offline bundle `NAME-VERSION.tender`: an uncompressed ustar
//! archive with `root.json`, the root chain `roots/N.root.json`,
//! `targets.json`, `manifest.json`, then `chunks/HEX.zst` sorted by digest,
//! and the standard end-of-archive marker of two zero blocks.
//!
//! Every header is fixed except the name and size: regular file, mode 0644,
//! uid and gid 0, empty user and group names, mtime `SOURCE_DATE_EPOCH`. The
//! same inputs therefore give the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use tender_updater::format::layout::{bundle_chunk_path, bundle_root_path, BUNDLE_MANIFEST_FILE, ROOT_FILE, TARGETS_FILE};
use tender_updater::format::Sha256Digest;

use crate::fsutil::write_atomic_with;

/// Failure to write a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleWriteError {
    #[error("cannot write bundle {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// The members of a bundle. Chunks are read from their files in the
/// repository, in the order given, which must be sorted by digest.
pub struct BundleContents<'a> {
    pub root: &'a [u8],
    /// Every root version from 1 on, in order, with its version.
    pub root_chain: Vec<(u64, &'a [u8])>,
    pub targets: &'a [u8],
    pub manifest: &'a [u8],
    pub chunks: Vec<(Sha256Digest, PathBuf)>,
    /// Modification time of every member, `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
}

/// Writes the bundle to `path` atomically and returns its size in bytes.
/// `progress` counts chunks.
pub fn write_bundle(path: &Path, contents: &BundleContents, progress: &ProgressBar) -> Result<u64, BundleWriteError> {
    let error = |source| BundleWriteError::Write { path: path.to_owned(), source };
    progress.set_length(contents.chunks.len() as u64);
    write_atomic_with(path, |file| {
        let mut archive = tar::Builder::new(BufWriter::new(file));
        append(&mut archive, ROOT_FILE, contents.root.len() as u64, contents.root, contents.mtime)?;
        for (version, bytes) in &contents.root_chain {
            append(&mut archive, &bundle_root_path(*version), bytes.len() as u64, *bytes, contents.mtime)?;
        }
        append(&mut archive, TARGETS_FILE, contents.targets.len() as u64, contents.targets, contents.mtime)?;
        append(&mut archive, BUNDLE_MANIFEST_FILE, contents.manifest.len() as u64, contents.manifest, contents.mtime)?;
        for (digest, chunk_path) in &contents.chunks {
            let chunk = File::open(chunk_path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", chunk_path.display())))?;
            let len = chunk.metadata()?.len();
            append(&mut archive, &bundle_chunk_path(digest), len, chunk, contents.mtime)?;
            progress.inc(1);
        }
        archive.finish()?;
        archive.into_inner()?.flush()
    })
    .map_err(error)?;
    Ok(std::fs::metadata(path).map_err(error)?.len())
}

/// Appends one regular-file member with a fixed header.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    len: u64,
    data: impl std::io::Read,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    archive.append_data(&mut header, name, data)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn bundle_members_are_ordered_with_fixed_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let digest = Sha256Digest::of(b"chunk");
        let chunk_path = dir.path().join("chunk.zst");
        std::fs::write(&chunk_path, b"stored").expect("write");
        let contents = BundleContents {
            root: b"{\"root\":1}",
            root_chain: vec![(1, b"{\"root\":1}")],
            targets: b"{\"targets\":1}",
            manifest: b"{\"manifest\":1}",
            chunks: vec![(digest, chunk_path)],
            mtime: 1_700_000_000,
        };
        let bundle = dir.path().join("x.tender");
        let size = write_bundle(&bundle, &contents, &ProgressBar::hidden()).expect("write");
        let bytes = std::fs::read(&bundle).expect("read");
        assert_eq!(size, bytes.len() as u64);
        assert!(bytes[bytes.len() - 1024..].iter().all(|&b| b == 0), "no end-of-archive marker");

        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header();
            assert_eq!(header.mtime().expect("mtime"), 1_700_000_000);
            assert_eq!(header.mode().expect("mode"), 0o644);
            assert_eq!((header.uid().expect("uid"), header.gid().expect("gid")), (0, 0));
            assert_eq!(header.username().expect("user"), Some(""));
            let name = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            names.push((name, data));
        }
        assert_eq!(names[0], ("root.json".to_owned(), b"{\"root\":1}".to_vec()));
        assert_eq!(names[1].0, "roots/1.root.json");
        assert_eq!(names[2].0, "targets.json");
        assert_eq!(names[3].0, "manifest.json");
        assert_eq!(names[4], (format!("chunks/{digest}.zst"), b"stored".to_vec()));
    }
}
