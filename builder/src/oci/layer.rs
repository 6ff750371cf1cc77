//! The workspace layer: a deterministic tar of a release's files below the
//! path the release runs at on a robot, such as `/opt/ecar/current`.
//!
//! The layer starts with the parent directories of that path (mode 0755,
//! owner 0:0) and the path itself as a directory. Every manifest entry
//! follows in manifest order, with its mode, owner, symlink or hardlink
//! target, extended attributes, and the release's `SOURCE_DATE_EPOCH` as
//! mtime. File contents come from the chunk store, and each chunk is checked
//! against its digest as it is read.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use oci_spec::image::MediaType;
use tender_updater::format::{EntryKind, Sha256Digest};

use crate::oci::compress::{Compression, Encoder};
use crate::oci::layout::{Blob, HashingWriter, LayoutError, LayoutWriter};
use crate::oci::source::Release;
use crate::oci::tarball::{append_entry, TarEntry, TarKind};

/// Failures to write a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Layout(#[from] LayoutError),

    #[error("cannot write the layer of {} at entry {path:?}: {source}", manifest.display())]
    Entry { manifest: PathBuf, path: String, source: io::Error },

    #[error("cannot finish the layer of {}: {source}", manifest.display())]
    Finish { manifest: PathBuf, source: io::Error },
}

/// A layer blob in the layout, with what its descriptor and the image
/// configuration need.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    /// SHA-256 of the uncompressed tar stream, the configuration's `diff_id`.
    pub diff_id: Sha256Digest,
    pub media_type: MediaType,
}

/// Writes the layer of `release` below `root` (a relative path such as
/// `opt/ecar/current`) into `layout`, compressed with `compression`.
pub fn write_release_layer(
    layout: &LayoutWriter,
    release: &Release,
    root: &str,
    compression: Compression,
) -> Result<Layer, LayerError> {
    let manifest_path = release.manifest_path.clone();
    let finish_error = |source| LayerError::Finish { manifest: manifest_path.clone(), source };
    let entry_error = |path: &str, source| LayerError::Entry { manifest: manifest_path.clone(), path: path.to_owned(), source };

    let mut blob = layout.blob_writer()?;
    let encoder = Encoder::new(compression, blob.writer()).map_err(finish_error)?;
    let mut archive = tar::Builder::new(HashingWriter::new(encoder));
    let mtime = release.manifest.provenance.source_date_epoch;

    let mut prefix = String::new();
    for component in root.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        let dir = TarEntry { path: prefix.clone(), kind: TarKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime, xattrs: BTreeMap::new() };
        append_entry(&mut archive, &dir, io::empty()).map_err(|e| entry_error(&prefix, e))?;
    }

    for entry in &release.manifest.entries {
        let path = format!("{root}/{}", entry.path);
        let kind = match &entry.kind {
            EntryKind::Dir => TarKind::Dir,
            EntryKind::File { size, .. } => TarKind::File { size: *size },
            EntryKind::Symlink { target } => TarKind::Symlink { target: target.clone() },
            EntryKind::Hardlink { target } => TarKind::Hardlink { target: format!("{root}/{target}") },
        };
        // Manifest validation guarantees hex values.
        let xattrs = entry.xattrs.iter().map(|(name, value)| (name.clone(), hex::decode(value).unwrap_or_default())).collect();
        let tar_entry = TarEntry {
            path,
            kind,
            mode: entry.mode,
            uid: u64::from(entry.uid),
            gid: u64::from(entry.gid),
            mtime: entry.mtime,
            xattrs,
        };
        let result = match &entry.kind {
            EntryKind::File { chunks, .. } => append_entry(&mut archive, &tar_entry, release.file_reader(chunks)),
            _ => append_entry(&mut archive, &tar_entry, io::empty()),
        };
        result.map_err(|e| entry_error(&entry.path, e))?;
    }

    let plain = archive.into_inner().map_err(finish_error)?;
    let (encoder, uncompressed) = plain.finish();
    let compressed = encoder.finish().map_err(finish_error)?;
    compressed.flush().map_err(finish_error)?;
    let blob = blob.finish()?;
    tracing::debug!(digest = %blob.digest, size = blob.size, diff_id = %uncompressed.digest, "layer written");
    Ok(Layer { blob, diff_id: uncompressed.digest, media_type: compression.oci_layer_media_type() })
}
