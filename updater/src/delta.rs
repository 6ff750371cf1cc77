//! Applying a delta pack (format in [`crate::format::delta`]).
//!
//! The pack on disk was checked against its signed length and hashes before
//! it is opened here. Its manifest frame rebuilds the new manifest from the
//! active slot's manifest copy; the caller then verifies those bytes against
//! the signed manifest target like a downloaded manifest. Each group frame
//! rebuilds files from the active slot's old files; every file is hashed
//! against the new manifest before it is kept.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::format::delta::{DeltaGroup, DeltaHeader, DELTA_FORMAT, DELTA_MAGIC, MAX_GROUP_BYTES, MAX_HEADER_BYTES, MAX_HEADER_JSON_BYTES, MAX_WINDOW_LOG};
use crate::format::{EntryKind, Manifest, Sha256Digest};

/// Reasons a pack cannot be used. The robot then falls back to chunks.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("delta pack {} is damaged: {detail}", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("delta pack {} upgrades from manifest {found}, but the active slot has manifest {active}", path.display())]
    OtherBase { path: PathBuf, found: Sha256Digest, active: Sha256Digest },
    #[error("delta pack {} lists {path:?}, which {detail}", pack.display())]
    Mismatch { pack: PathBuf, path: String, detail: &'static str },
    #[error("file {path:?} rebuilt from the delta pack hashes to {actual}, but the manifest says {expected}")]
    FileDigest { path: String, expected: Sha256Digest, actual: Sha256Digest },
}

/// An opened pack: its header and where its frames start.
#[derive(Debug, Clone)]
pub struct DeltaPack {
    path: PathBuf,
    header: DeltaHeader,
    /// File offset of the manifest frame, followed by the group frames.
    frames_start: u64,
    length: u64,
}

impl DeltaPack {
    /// Opens the pack at `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, DeltaError> {
        let io = |action| move |source| DeltaError::Io { action, path: path.to_owned(), source };
        let damaged = |detail: String| DeltaError::Damaged { path: path.to_owned(), detail };
        let mut file = File::open(path).map_err(io("open"))?;
        let length = file.metadata().map_err(io("inspect"))?.len();
        let mut start = [0u8; 12];
        file.read_exact(&mut start).map_err(|_| damaged("it is shorter than its 12-byte start".to_owned()))?;
        if &start[..8] != DELTA_MAGIC {
            return Err(damaged("it does not start with the delta pack magic".to_owned()));
        }
        let header_len = u64::from(u32::from_le_bytes([start[8], start[9], start[10], start[11]]));
        if header_len > MAX_HEADER_BYTES || 12 + header_len > length {
            return Err(damaged(format!("its header length {header_len} does not fit")));
        }
        let mut compressed = vec![0u8; header_len as usize];
        file.read_exact(&mut compressed).map_err(io("read"))?;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(compressed.as_slice())
            .and_then(|decoder| decoder.take(MAX_HEADER_JSON_BYTES + 1).read_to_end(&mut json))
            .map_err(|e| damaged(format!("its header is not valid zstd data: {e}")))?;
        if json.len() as u64 > MAX_HEADER_JSON_BYTES {
            return Err(damaged(format!("its header is larger than {MAX_HEADER_JSON_BYTES} bytes")));
        }
        let header: DeltaHeader = serde_json::from_slice(&json).map_err(|e| damaged(format!("its header is invalid: {e}")))?;
        if header.format != DELTA_FORMAT {
            return Err(damaged(format!("its format {} is not {DELTA_FORMAT}; update tenderd", header.format)));
        }
        let frames: u64 = header.groups.iter().fold(header.manifest_patch, |sum, group| sum.saturating_add(group.patch));
        if frames != length - 12 - header_len {
            return Err(damaged(format!("its frames add up to {frames} bytes, but {} follow the header", length - 12 - header_len)));
        }
        Ok(Self { path: path.to_owned(), header, frames_start: 12 + header_len, length })
    }

    pub fn header(&self) -> &DeltaHeader {
        &self.header
    }

    /// Bytes of the pack file.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Rebuilds the new manifest's bytes from the active manifest's bytes,
    /// reading at most `limit` bytes. The caller verifies the result.
    pub fn manifest(&self, active: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
        let active_digest = Sha256Digest::of(active);
        if active_digest != self.header.from.manifest_sha256 {
            return Err(DeltaError::OtherBase { path: self.path.clone(), found: self.header.from.manifest_sha256, active: active_digest });
        }
        let mut decoder = self.frame_decoder(self.frames_start, self.header.manifest_patch, active)?;
        let mut bytes = Vec::new();
        (&mut decoder)
            .take(limit.min(self.header.to.manifest_size) + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.damaged(format!("its manifest frame does not decode: {e}")))?;
        Ok(bytes)
    }

    /// Rebuilds every file of the groups that hold a content `wanted`
    /// accepts, into `out_dir/<sha256>`. `old` is the active slot's manifest
    /// and `active_dir` its directory. A group that fails is logged and
    /// skipped, so its files come from chunks instead; the returned map
    /// holds the files that were rebuilt and verified.
    pub fn rebuild_files(
        &self,
        new: &Manifest,
        old: &Manifest,
        active_dir: &Path,
        out_dir: &Path,
        wanted: impl Fn(&Sha256Digest) -> bool,
    ) -> Result<HashMap<Sha256Digest, PathBuf>, DeltaError> {
        std::fs::create_dir_all(out_dir).map_err(|source| DeltaError::Io { action: "create", path: out_dir.to_owned(), source })?;
        let new_files = file_index(new);
        let old_files = file_index(old);
        let mut rebuilt = HashMap::new();
        let mut offset = self.frames_start + self.header.manifest_patch;
        for group in &self.header.groups {
            let frame_offset = offset;
            offset += group.patch;
            let needed = group.files.iter().any(|file| new_files.get(file.path.as_str()).is_some_and(|(digest, _)| wanted(digest)));
            if !needed {
                continue;
            }
            match self.rebuild_group(group, frame_offset, &new_files, &old_files, active_dir, out_dir) {
                Ok(files) => rebuilt.extend(files),
                Err(error) => {
                    tracing::warn!(pack = %self.path.display(), %error, "delta group failed; its files come from chunks");
                }
            }
        }
        Ok(rebuilt)
    }

    fn rebuild_group(
        &self,
        group: &DeltaGroup,
        frame_offset: u64,
        new_files: &HashMap<&str, (Sha256Digest, u64)>,
        old_files: &HashMap<&str, (Sha256Digest, u64)>,
        active_dir: &Path,
        out_dir: &Path,
    ) -> Result<Vec<(Sha256Digest, PathBuf)>, DeltaError> {
        let mismatch = |path: &str, detail| DeltaError::Mismatch { pack: self.path.clone(), path: path.to_owned(), detail };
        let mut reference = Vec::new();
        for file in &group.files {
            let Some(base) = &file.base else { continue };
            let Some((_, size)) = old_files.get(base.as_str()) else {
                return Err(mismatch(base, "is not a file of the active release"));
            };
            if reference.len() as u64 + size > MAX_GROUP_BYTES {
                return Err(mismatch(base, "makes the group's reference larger than the limit"));
            }
            let path = active_dir.join(base);
            let mut input = File::open(&path).map_err(|source| DeltaError::Io { action: "open", path: path.clone(), source })?;
            let before = reference.len();
            (&mut input)
                .take(*size)
                .read_to_end(&mut reference)
                .map_err(|source| DeltaError::Io { action: "read", path: path.clone(), source })?;
            if (reference.len() - before) as u64 != *size {
                return Err(mismatch(base, "is shorter in the active slot than its manifest says"));
            }
        }

        let mut decoder = self.frame_decoder(frame_offset, group.patch, &reference)?;
        let mut written = Vec::new();
        let mut output_total = 0u64;
        for file in &group.files {
            let Some((digest, size)) = new_files.get(file.path.as_str()) else {
                return Err(mismatch(&file.path, "is not a file of the new release"));
            };
            output_total += size;
            if output_total > MAX_GROUP_BYTES {
                return Err(mismatch(&file.path, "makes the group's output larger than the limit"));
            }
            let destination = out_dir.join(digest.to_hex());
            let temp = out_dir.join(format!("{}.partial", digest.to_hex()));
            let io = |action, path: &Path| {
                let path = path.to_owned();
                move |source| DeltaError::Io { action, path, source }
            };
            let mut output = File::create(&temp).map_err(io("create", &temp))?;
            let mut hasher = HashingWriter { inner: &mut output, hasher: Sha256::new() };
            let copied = std::io::copy(&mut (&mut decoder).take(*size), &mut hasher)
                .map_err(|e| self.damaged(format!("the frame of {:?} does not decode: {e}", file.path)))?;
            let actual = Sha256Digest::from_hasher(hasher.hasher);
            if copied != *size || actual != *digest {
                let _ = std::fs::remove_file(&temp);
                return Err(DeltaError::FileDigest { path: file.path.clone(), expected: *digest, actual });
            }
            drop(output);
            std::fs::rename(&temp, &destination).map_err(io("rename", &destination))?;
            written.push((*digest, destination));
        }
        let mut extra = [0u8; 1];
        if decoder.read(&mut extra).map_err(|e| self.damaged(format!("a group frame does not decode: {e}")))? != 0 {
            return Err(self.damaged("a group frame holds more bytes than its files".to_owned()));
        }
        Ok(written)
    }

    fn frame_decoder<'r>(
        &self,
        offset: u64,
        length: u64,
        reference: &'r [u8],
    ) -> Result<zstd::stream::read::Decoder<'r, BufReader<std::io::Take<File>>>, DeltaError> {
        let io = |action| move |source| DeltaError::Io { action, path: self.path.clone(), source };
        let mut file = File::open(&self.path).map_err(io("open"))?;
        file.seek(SeekFrom::Start(offset)).map_err(io("seek"))?;
        let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(BufReader::new(file.take(length)), reference)
            .map_err(io("start decoding"))?;
        decoder.window_log_max(MAX_WINDOW_LOG).map_err(io("start decoding"))?;
        Ok(decoder.single_frame())
    }

    fn damaged(&self, detail: String) -> DeltaError {
        DeltaError::Damaged { path: self.path.clone(), detail }
    }
}

/// Digest and size of every file entry, by path.
fn file_index(manifest: &Manifest) -> HashMap<&str, (Sha256Digest, u64)> {
    manifest
        .entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File { size, sha256, .. } => Some((entry.path.as_str(), (*sha256, *size))),
            _ => None,
        })
        .collect()
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let count = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..count]);
        Ok(count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
