//! Writing an OCI image layout directory (OCI image spec 1.1, "OCI Image
//! Layout"): `oci-layout`, `index.json` and `blobs/sha256/HEX`.
//!
//! The layout is built in a temporary directory beside the output and
//! renamed into place by [`LayoutWriter::commit`], so the output path never
//! contains a partial layout. An earlier layout there is removed just before
//! the rename, so a crash between the two leaves no layout at the output
//! path, only the complete new one in the temporary directory. JSON documents are
//! written with sorted object keys and no white space, so the same content
//! gives the same digests.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tender_updater::format::Sha256Digest;

/// Content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const BLOBS_DIR: &str = "blobs/sha256";
/// The `imageLayoutVersion` this module writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// Failures to write a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot encode {document} as JSON: {source}")]
    Encode { document: &'static str, source: serde_json::Error },

    #[error("{} exists and is not an OCI image layout (no oci-layout file); remove it or choose another --out", path.display())]
    NotALayout { path: PathBuf },
}

/// A digest and size of a written blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub digest: Sha256Digest,
    pub size: u64,
}

impl Blob {
    /// Returns the OCI form of the digest, `sha256:HEX`.
    pub fn oci_digest(&self) -> Digest {
        oci_digest(&self.digest)
    }

    /// Returns a descriptor of this blob with `media_type`.
    pub fn descriptor(&self, media_type: MediaType) -> Descriptor {
        Descriptor::new(media_type, self.size, self.oci_digest())
    }
}

/// Returns `sha256:HEX` as an OCI digest.
pub fn oci_digest(digest: &Sha256Digest) -> Digest {
    // A SHA-256 hex string always satisfies the OCI digest grammar.
    match format!("sha256:{}", digest.to_hex()).parse() {
        Ok(parsed) => parsed,
        Err(_) => unreachable!("a sha256 digest in lowercase hex is a valid OCI digest"),
    }
}

/// Encodes `value` as JSON with object keys sorted at every level.
///
/// oci-spec keeps labels and annotations in `HashMap`s, whose order
/// changes between runs, so the value goes through `serde_json::Value` and
/// is sorted before it is written.
pub fn to_sorted_json(value: &impl Serialize, document: &'static str) -> Result<Vec<u8>, LayoutError> {
    let mut tree = serde_json::to_value(value).map_err(|source| LayoutError::Encode { document, source })?;
    tree.sort_all_objects();
    serde_json::to_vec(&tree).map_err(|source| LayoutError::Encode { document, source })
}

/// A writer that hashes and counts the bytes it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Returns the inner writer, the SHA-256 and the count of the bytes written.
    pub fn finish(self) -> (W, Blob) {
        let blob = Blob { digest: Sha256Digest::from_hasher(self.hasher), size: self.len };
        (self.inner, blob)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob being written to a temporary file in `blobs/sha256/`; its name is
/// known only once it is complete.
pub struct BlobWriter {
    file: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    blobs: PathBuf,
}

impl BlobWriter {
    pub fn writer(&mut self) -> &mut HashingWriter<BufWriter<tempfile::NamedTempFile>> {
        &mut self.file
    }

    /// Renames the blob to its digest and returns the digest and size.
    pub fn finish(self) -> Result<Blob, LayoutError> {
        let (buffered, blob) = self.file.finish();
        let blobs = self.blobs;
        let error = |source| LayoutError::Write { path: blobs.clone(), source };
        let temp = buffered.into_inner().map_err(|e| error(e.into_error()))?;
        let path = blobs.join(blob.digest.to_hex());
        temp.persist(&path).map_err(|e| LayoutError::Write { path: path.clone(), source: e.error })?;
        crate::store::set_mode_0644(&path).map_err(|source| LayoutError::Write { path, source })?;
        Ok(blob)
    }
}

/// A layout under construction in a temporary directory.
pub struct LayoutWriter {
    temp: tempfile::TempDir,
    out: PathBuf,
}

impl LayoutWriter {
    /// Starts a layout that [`Self::commit`] will move to `out`. Fails early
    /// when `out` exists but is neither an empty directory nor a layout.
    pub fn create(out: &Path) -> Result<Self, LayoutError> {
        check_replaceable(out)?;
        let parent = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let write_error = |source| LayoutError::Write { path: parent.clone(), source };
        std::fs::create_dir_all(&parent).map_err(write_error)?;
        let temp = tempfile::Builder::new().prefix(".tender-image-").tempdir_in(&parent).map_err(write_error)?;
        let blobs = temp.path().join(BLOBS_DIR);
        std::fs::create_dir_all(&blobs).map_err(|source| LayoutError::Write { path: blobs, source })?;
        Ok(Self { temp, out: out.to_owned() })
    }

    /// Directory the layout is being written in.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// Path of the blob with `digest` in the layout being written.
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir().join(BLOBS_DIR).join(digest.to_hex())
    }

    /// Starts a blob whose content is streamed in.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let blobs = self.dir().join(BLOBS_DIR);
        let temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&blobs)
            .map_err(|source| LayoutError::Write { path: blobs.clone(), source })?;
        Ok(BlobWriter { file: HashingWriter::new(BufWriter::new(temp)), blobs })
    }

    /// Writes `bytes` as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Blob, LayoutError> {
        let mut writer = self.blob_writer()?;
        let blobs = writer.blobs.clone();
        writer.writer().write_all(bytes).map_err(|source| LayoutError::Write { path: blobs, source })?;
        writer.finish()
    }

    /// Writes `value` as sorted JSON and returns its descriptor.
    pub fn write_json(&self, value: &impl Serialize, media_type: MediaType, document: &'static str) -> Result<Descriptor, LayoutError> {
        let bytes = to_sorted_json(value, document)?;
        Ok(self.write_blob(&bytes)?.descriptor(media_type))
    }

    /// Writes `oci-layout` and `index.json` (the layout's entry points),
    /// syncs every file and replaces the output directory with the layout.
    pub fn commit(self, index: &oci_spec::image::ImageIndex) -> Result<PathBuf, LayoutError> {
        let dir = self.dir().to_owned();
        let layout_json = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION });
        let layout_bytes = to_sorted_json(&layout_json, "oci-layout")?;
        write_synced(&dir.join(OCI_LAYOUT_FILE), &layout_bytes)?;
        write_synced(&dir.join(INDEX_FILE), &to_sorted_json(index, "index.json")?)?;
        // tempfile creates the directory with mode 0700.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|source| LayoutError::Write { path: dir.clone(), source })?;
        sync_tree(&dir)?;

        let out = self.out.clone();
        let temp_path = self.temp.keep();
        let replace_error = |source| LayoutError::Write { path: out.clone(), source };
        // Only an empty directory or an earlier layout reaches this point.
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(replace_error)?;
        }
        std::fs::rename(&temp_path, &out).map_err(replace_error)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(replace_error)?;
        }
        Ok(out)
    }
}

/// Accepts a missing path, an empty directory, or an earlier layout.
fn check_replaceable(out: &Path) -> Result<(), LayoutError> {
    match std::fs::read_dir(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => Err(LayoutError::NotALayout { path: out.to_owned() }),
        Ok(mut entries) => {
            if entries.next().is_none() || out.join(OCI_LAYOUT_FILE).is_file() {
                Ok(())
            } else {
                Err(LayoutError::NotALayout { path: out.to_owned() })
            }
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let error = |source| LayoutError::Write { path: path.to_owned(), source };
    let mut file = std::fs::File::create(path).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    crate::store::set_mode_0644(path).map_err(error)
}

/// Syncs every blob and directory of the layout before it is renamed into place.
fn sync_tree(dir: &Path) -> Result<(), LayoutError> {
    let blobs = dir.join(BLOBS_DIR);
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| LayoutError::Write { path, source }
    };
    for item in std::fs::read_dir(&blobs).map_err(error(&blobs))? {
        let path = item.map_err(error(&blobs))?.path();
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(error(&path))?;
    }
    for directory in [blobs.as_path(), blobs.parent().unwrap_or(dir), dir] {
        std::fs::File::open(directory).and_then(|d| d.sync_all()).map_err(error(directory))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn sorted_json_orders_map_keys() {
        let map: HashMap<&str, u32> = (0..50).map(|i| (["b", "a", "d", "c", "e"][i % 5], i as u32)).collect();
        let bytes = to_sorted_json(&map, "test").expect("encode");
        assert!(bytes.starts_with(b"{\"a\":"), "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn commit_replaces_earlier_layout_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("image");
        let index = oci_spec::image::ImageIndex::default();
        for _ in 0..2 {
            let writer = LayoutWriter::create(&out).expect("create");
            let blob = writer.write_blob(b"{}").expect("blob");
            assert_eq!(blob.size, 2);
            writer.commit(&index).expect("commit");
        }
        assert_eq!(std::fs::read(out.join(OCI_LAYOUT_FILE)).expect("read"), br#"{"imageLayoutVersion":"1.0.0"}"#);
        assert!(out.join(BLOBS_DIR).join(Sha256Digest::of(b"{}").to_hex()).is_file());

        let other = dir.path().join("notes");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::write(other.join("todo.txt"), "keep").expect("write");
        let error = LayoutWriter::create(&other).err().expect("not a layout");
        assert!(error.to_string().contains("is not an OCI image layout"), "{error}");
    }
}
