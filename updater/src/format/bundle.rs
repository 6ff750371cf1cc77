//! Reading `.tender` bundles: one tar file with metadata first, then chunks.
//!
//! The reader indexes the chunk members by digest without reading them, so
//! memory grows with the number of chunks, not with their bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::format::layout::{BUNDLE_MANIFEST_FILE, ROOT_FILE, TARGETS_FILE};
use crate::format::limits::{MAX_MANIFEST_BYTES, MAX_ROOT_BYTES, MAX_STORED_CHUNK_BYTES, MAX_TARGETS_BYTES};
use crate::format::Sha256Digest;

/// Errors of reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bundle {} is truncated or damaged ({detail}); copy it again", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("bundle {} has an unexpected member {member:?}; it was not written by tender", path.display())]
    UnexpectedMember { path: PathBuf, member: String },
    #[error("bundle {} member {member} is {len} bytes, more than the limit of {limit}", path.display())]
    MemberTooLarge { path: PathBuf, member: String, len: u64, limit: u64 },
    #[error("bundle {} has no {member}", path.display())]
    MissingMember { path: PathBuf, member: String },
    #[error("bundle {} does not contain chunk {digest}; the bundle is incomplete", path.display())]
    MissingChunk { path: PathBuf, digest: Sha256Digest },
}

/// An opened bundle: its metadata in memory and an index of its chunks.
#[derive(Debug)]
pub struct BundleReader {
    path: PathBuf,
    file: File,
    pub root: Vec<u8>,
    pub targets: Vec<u8>,
    pub manifest: Vec<u8>,
    /// Root versions carried by the bundle, by version.
    pub root_chain: BTreeMap<u64, Vec<u8>>,
    chunks: HashMap<Sha256Digest, (u64, u64)>,
}

/// Most root versions a bundle may carry.
const MAX_ROOT_VERSIONS: usize = 256;

/// Size of the end-of-archive marker: two zero blocks of 512 bytes.
const END_OF_ARCHIVE: usize = 1024;

impl BundleReader {
    /// Opens a bundle, reads its metadata members (bounded) and indexes its
    /// chunks. A file cut short anywhere is reported as truncated.
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        let io = |source| BundleError::Io { path: path.to_owned(), source };
        let truncated = |detail: String| BundleError::Truncated { path: path.to_owned(), detail };
        let mut file = File::open(path).map_err(io)?;
        check_end_marker(&mut file).map_err(truncated)?;

        let mut root = None;
        let mut targets = None;
        let mut manifest = None;
        let mut chunks = HashMap::new();
        let mut root_chain = BTreeMap::new();
        let mut archive = tar::Archive::new(File::open(path).map_err(io)?);
        let entries = archive.entries_with_seek().map_err(|e| truncated(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| truncated(e.to_string()))?;
            let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let len = entry.header().size().map_err(|e| truncated(e.to_string()))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(BundleError::UnexpectedMember { path: path.to_owned(), member });
            }
            let slot = match member.as_str() {
                ROOT_FILE => Some((&mut root, MAX_ROOT_BYTES)),
                TARGETS_FILE => Some((&mut targets, MAX_TARGETS_BYTES)),
                BUNDLE_MANIFEST_FILE => Some((&mut manifest, MAX_MANIFEST_BYTES)),
                _ => None,
            };
            if let Some((slot, limit)) = slot {
                if len > limit {
                    return Err(BundleError::MemberTooLarge { path: path.to_owned(), member, len, limit });
                }
                let mut bytes = Vec::with_capacity(len as usize);
                entry.read_to_end(&mut bytes).map_err(|e| truncated(format!("{member}: {e}")))?;
                if bytes.len() as u64 != len {
                    return Err(truncated(format!("{member} is shorter than its header says")));
                }
                *slot = Some(bytes);
                continue;
            }
            if let Some(version) = member
                .strip_prefix("roots/")
                .and_then(|rest| rest.strip_suffix(".root.json"))
                .and_then(|number| number.parse::<u64>().ok())
            {
                if len > MAX_ROOT_BYTES || root_chain.len() >= MAX_ROOT_VERSIONS {
                    return Err(BundleError::MemberTooLarge { path: path.to_owned(), member, len, limit: MAX_ROOT_BYTES });
                }
                let mut bytes = Vec::with_capacity(len as usize);
                entry.read_to_end(&mut bytes).map_err(|e| truncated(format!("{member}: {e}")))?;
                root_chain.insert(version, bytes);
                continue;
            }
            let digest = member
                .strip_prefix("chunks/")
                .and_then(|rest| rest.strip_suffix(".zst"))
                .and_then(|hex| hex.parse::<Sha256Digest>().ok())
                .ok_or_else(|| BundleError::UnexpectedMember { path: path.to_owned(), member: member.clone() })?;
            if len > MAX_STORED_CHUNK_BYTES {
                return Err(BundleError::MemberTooLarge { path: path.to_owned(), member, len, limit: MAX_STORED_CHUNK_BYTES });
            }
            chunks.insert(digest, (entry.raw_file_position(), len));
        }
        let missing = |member: &str| BundleError::MissingMember { path: path.to_owned(), member: member.to_owned() };
        Ok(Self {
            path: path.to_owned(),
            file,
            root: root.ok_or_else(|| missing(ROOT_FILE))?,
            targets: targets.ok_or_else(|| missing(TARGETS_FILE))?,
            manifest: manifest.ok_or_else(|| missing(BUNDLE_MANIFEST_FILE))?,
            root_chain,
            chunks,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn root_chain(&self) -> &BTreeMap<u64, Vec<u8>> {
        &self.root_chain
    }

    pub fn contains_chunk(&self, digest: &Sha256Digest) -> bool {
        self.chunks.contains_key(digest)
    }

    /// Reads the stored (compressed) bytes of a chunk.
    pub fn read_chunk(&mut self, digest: &Sha256Digest) -> Result<Vec<u8>, BundleError> {
        let (offset, len) = *self
            .chunks
            .get(digest)
            .ok_or_else(|| BundleError::MissingChunk { path: self.path.clone(), digest: *digest })?;
        let io = |source| BundleError::Io { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0u8; len as usize];
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }
}

/// Checks that the file ends with the tar end-of-archive marker, which a copy
/// cut short on a USB stick does not have.
fn check_end_marker(file: &mut File) -> Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < END_OF_ARCHIVE as u64 + 512 {
        return Err(format!("only {len} bytes long"));
    }
    file.seek(SeekFrom::End(-(END_OF_ARCHIVE as i64))).map_err(|e| e.to_string())?;
    let mut tail = [0u8; END_OF_ARCHIVE];
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    if tail.iter().any(|&b| b != 0) {
        return Err("the tar end-of-archive marker is missing".to_owned());
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}
