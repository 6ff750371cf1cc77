//! Applying a delta pack (format in [`crate::format::delta`]).
//!
//! The pack on disk was checked against its signed length and hashes before
//! it is opened here. Its manifest frame rebuilds the new manifest from the
//! active slot's manifest copy; the caller then verifies those bytes against
//! the signed manifest target like a downloaded manifest. Each group frame
//! rebuilds files from the active slot's old files; every file is hashed
//! against the new manifest before it is kept. A file cut into windows
//! (format 2) is rebuilt window by window, each with its reference read from
//! the old file, so memory stays bounded by one window and one reference.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::format::delta::{
    ByteRange, DeltaGroup, DeltaHeader, DeltaWindow, DELTA_FORMAT, DELTA_FORMAT_GROUPS, DELTA_MAGIC, MAX_GROUP_BYTES, MAX_HEADER_BYTES,
    MAX_HEADER_JSON_BYTES, MAX_WINDOW_LOG,
};
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

/// One frame that rebuilds a range of a single file: a window, or a whole
/// file that has a group of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFrame {
    /// Offset and length of the frame in the pack file.
    frame_offset: u64,
    frame_length: u64,
    window: DeltaWindow,
}

/// A step of rebuilding files: a group of whole files, or every window of
/// one large file.
enum Step<'h> {
    Group { group: &'h DeltaGroup, frame_offset: u64 },
    Windows { path: &'h str, base: Option<&'h str>, frames: Vec<FileFrame> },
}

/// The part of a header read before the rest, so that an unknown format is
/// reported as such and not as an unknown field.
#[derive(serde::Deserialize)]
struct HeaderFormat {
    format: u32,
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
        let format = serde_json::from_slice::<HeaderFormat>(&json).map_err(|e| damaged(format!("its header is invalid: {e}")))?.format;
        if !(DELTA_FORMAT_GROUPS..=DELTA_FORMAT).contains(&format) {
            return Err(damaged(format!("its format {format} is newer than format {DELTA_FORMAT}, the newest this tenderd reads; update tenderd")));
        }
        let header: DeltaHeader = serde_json::from_slice(&json).map_err(|e| damaged(format!("its header is invalid: {e}")))?;
        check_windows(&header).map_err(damaged)?;
        let frames: u64 = header.groups.iter().fold(header.manifest_patch, |sum, group| sum.saturating_add(group.patch));
        if frames != length - 12 - header_len {
            return Err(damaged(format!("its frames add up to {frames} bytes, but {} follow the header", length - 12 - header_len)));
        }
        Ok(Self { path: path.to_owned(), header, frames_start: 12 + header_len, length })
    }

    /// Path of the pack file.
    pub fn path(&self) -> &Path {
        &self.path
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
    /// contains the files that were rebuilt and verified.
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
        for step in self.steps() {
            let result = match step {
                Step::Group { group, frame_offset } => {
                    let needed = group.files.iter().any(|file| new_files.get(file.path.as_str()).is_some_and(|(digest, _)| wanted(digest)));
                    if !needed {
                        continue;
                    }
                    self.rebuild_group(group, frame_offset, &new_files, &old_files, active_dir, out_dir)
                }
                Step::Windows { path, base, frames } => {
                    if !new_files.get(path).is_some_and(|(digest, _)| wanted(digest)) {
                        continue;
                    }
                    self.rebuild_windowed(path, base, &frames, &new_files, &old_files, active_dir, out_dir).map(|file| vec![file])
                }
            };
            match result {
                Ok(files) => rebuilt.extend(files),
                Err(error) => {
                    tracing::warn!(pack = %self.path.display(), %error, "delta group failed; its files come from chunks");
                }
            }
        }
        Ok(rebuilt)
    }

    /// Splits the groups into steps: runs of windows of one file, and
    /// groups of whole files.
    fn steps(&self) -> Vec<Step<'_>> {
        let mut steps: Vec<Step> = Vec::new();
        let mut offset = self.frames_start + self.header.manifest_patch;
        for group in &self.header.groups {
            let frame_offset = offset;
            offset += group.patch;
            let windowed = match group.files.as_slice() {
                [file] => file.window.as_ref().map(|window| (file, window)),
                _ => None,
            };
            let Some((file, window)) = windowed else {
                steps.push(Step::Group { group, frame_offset });
                continue;
            };
            let frame = FileFrame { frame_offset, frame_length: group.patch, window: window.clone() };
            match steps.last_mut() {
                Some(Step::Windows { path, frames, .. }) if *path == file.path && window.offset > 0 => frames.push(frame),
                _ => steps.push(Step::Windows { path: &file.path, base: file.base.as_deref(), frames: vec![frame] }),
            }
        }
        steps
    }

    /// Returns the frames that rebuild the file at `path` on their own: its
    /// windows, or the group that contains only this file. `size` and
    /// `base_size` are the file's and its base's sizes from the manifests.
    /// Returns `None` when the pack has no such frames, for instance when
    /// the file shares a group with other files.
    pub fn file_frames(&self, path: &str, size: u64, base_size: u64) -> Option<(Option<&str>, Vec<FileFrame>)> {
        self.steps().into_iter().find_map(|step| match step {
            Step::Windows { path: found, base, frames } if found == path => Some((base, frames)),
            Step::Group { group, frame_offset } => match group.files.as_slice() {
                [file] if file.path == path => {
                    let base_ranges = match &file.base {
                        Some(_) => vec![ByteRange { offset: 0, length: base_size }],
                        None => Vec::new(),
                    };
                    let window = DeltaWindow { offset: 0, length: size, base_ranges };
                    Some((file.base.as_deref(), vec![FileFrame { frame_offset, frame_length: group.patch, window }]))
                }
                _ => None,
            },
            Step::Windows { .. } => None,
        })
    }

    /// Decodes `frames` in order into `output`, which receives the new
    /// file's bytes from offset 0. Each frame's reference is read from
    /// `base`, a file of `base_size` bytes, which is `None` when no frame
    /// has a reference. Returns the SHA-256 of the `size` bytes written, for
    /// the caller to compare with the manifest.
    pub fn write_frames(
        &self,
        path: &str,
        frames: &[FileFrame],
        mut base: Option<(&mut File, &Path, u64)>,
        size: u64,
        output: &mut dyn Write,
    ) -> Result<Sha256Digest, DeltaError> {
        let mismatch = |detail| DeltaError::Mismatch { pack: self.path.clone(), path: path.to_owned(), detail };
        let mut hasher = HashingWriter { inner: output, hasher: Sha256::new() };
        let mut written = 0u64;
        // One buffer serves every window, so the allocator need not find a
        // fresh 32 MiB for each.
        let mut reference = Vec::new();
        for frame in frames {
            let window = &frame.window;
            if window.offset != written || window.length > size - written {
                return Err(mismatch("has windows that do not cover the file of the new release"));
            }
            if window.base_length() > MAX_GROUP_BYTES {
                return Err(mismatch("has a window reference larger than the limit"));
            }
            reference.clear();
            for range in &window.base_ranges {
                let Some((file, base_path, base_size)) = base.as_mut() else {
                    return Err(mismatch("has a window with a reference but no base file"));
                };
                if range.offset.checked_add(range.length).is_none_or(|end| end > *base_size) {
                    return Err(mismatch("has a window reference past the end of its base file"));
                }
                let base_path: &Path = base_path;
                let io = |action| move |source| DeltaError::Io { action, path: base_path.to_path_buf(), source };
                file.seek(SeekFrom::Start(range.offset)).map_err(io("seek"))?;
                let start = reference.len();
                reference.resize(start + range.length as usize, 0);
                file.read_exact(&mut reference[start..]).map_err(io("read"))?;
            }
            let mut decoder = self.frame_decoder(frame.frame_offset, frame.frame_length, &reference)?;
            let copied = std::io::copy(&mut (&mut decoder).take(window.length), &mut hasher)
                .map_err(|e| self.damaged(format!("the frame of {path:?} at offset {} does not decode: {e}", window.offset)))?;
            if copied != window.length {
                return Err(self.damaged(format!("the frame of {path:?} at offset {} holds {copied} of {} bytes", window.offset, window.length)));
            }
            let mut extra = [0u8; 1];
            if decoder.read(&mut extra).map_err(|e| self.damaged(format!("a window frame does not decode: {e}")))? != 0 {
                return Err(self.damaged(format!("the frame of {path:?} at offset {} holds more bytes than its window", window.offset)));
            }
            written += window.length;
        }
        if written != size {
            return Err(mismatch("has windows that do not cover the file of the new release"));
        }
        Ok(Sha256Digest::from_hasher(hasher.hasher))
    }

    #[allow(clippy::too_many_arguments, reason = "the same inputs as rebuild_group, plus the file's base and frames")]
    fn rebuild_windowed(
        &self,
        path: &str,
        base: Option<&str>,
        frames: &[FileFrame],
        new_files: &HashMap<&str, (Sha256Digest, u64)>,
        old_files: &HashMap<&str, (Sha256Digest, u64)>,
        active_dir: &Path,
        out_dir: &Path,
    ) -> Result<(Sha256Digest, PathBuf), DeltaError> {
        let mismatch = |path: &str, detail| DeltaError::Mismatch { pack: self.path.clone(), path: path.to_owned(), detail };
        let Some((digest, size)) = new_files.get(path) else {
            return Err(mismatch(path, "is not a file of the new release"));
        };

        let mut base_file = match base {
            None => None,
            Some(base) => {
                let Some((_, base_size)) = old_files.get(base) else {
                    return Err(mismatch(base, "is not a file of the active release"));
                };
                let base_path = active_dir.join(base);
                let file = File::open(&base_path).map_err(|source| DeltaError::Io { action: "open", path: base_path.clone(), source })?;
                Some((file, base_path, *base_size))
            }
        };

        let destination = out_dir.join(digest.to_hex());
        let temp = out_dir.join(format!("{}.partial", digest.to_hex()));
        let mut output = File::create(&temp).map_err(|source| DeltaError::Io { action: "create", path: temp.clone(), source })?;
        let base = base_file.as_mut().map(|(file, base_path, base_size)| (file, base_path.as_path(), *base_size));
        let result = self.write_frames(path, frames, base, *size, &mut output);
        let actual = match result {
            Ok(actual) => actual,
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
        };
        if actual != *digest {
            let _ = std::fs::remove_file(&temp);
            return Err(DeltaError::FileDigest { path: path.to_owned(), expected: *digest, actual });
        }

        drop(output);
        std::fs::rename(&temp, &destination).map_err(|source| DeltaError::Io { action: "rename", path: destination.clone(), source })?;
        Ok((*digest, destination))
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

/// Checks the rules of windows that the header alone shows: only format 2
/// has them, a window is alone in its group, and the windows of a file
/// follow each other from offset 0 without gaps, each within the limits.
fn check_windows(header: &DeltaHeader) -> Result<(), String> {
    let mut previous: Option<(&str, &DeltaWindow)> = None;
    for (index, group) in header.groups.iter().enumerate() {
        let windowed = group.files.iter().find_map(|file| file.window.as_ref().map(|window| (file, window)));
        let Some((file, window)) = windowed else {
            previous = None;
            continue;
        };
        let fail = |detail: &str| Err(format!("group {index} ({:?}) {detail}", file.path));
        if header.format < DELTA_FORMAT {
            return fail("has a window, which format 1 does not allow");
        }
        if group.files.len() != 1 {
            return fail("has a window and other files");
        }
        if window.length == 0 || window.length > MAX_GROUP_BYTES || window.base_length() > MAX_GROUP_BYTES {
            return fail("has a window or reference of 0 bytes or more than the limit");
        }
        if window.base_ranges.is_empty() == file.base.is_some() {
            return fail("has a window reference without a base file, or a base file without a reference");
        }
        let expected_offset = match previous {
            Some((path, before)) if path == file.path && window.offset > 0 => before.offset.saturating_add(before.length),
            _ => 0,
        };
        if window.offset != expected_offset {
            return fail("has a window that does not follow the previous window of the file");
        }
        previous = Some((&file.path, window));
    }
    Ok(())
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use super::*;
    use crate::format::delta::{DeltaEnd, DeltaFile};
    use crate::format::{ChunkRef, Entry, HealthCheck, PreSwitch, Provenance};

    fn compress(reference: &[u8], content: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 3, reference).expect("encoder");
        encoder.window_log(crate::format::delta::window_log(reference.len() as u64, content.len() as u64)).expect("window");
        encoder.write_all(content).expect("write");
        encoder.finish().expect("finish")
    }

    fn manifest(version: &str, files: &[(&str, &[u8])]) -> Manifest {
        let mut entries = vec![Entry {
            path: "share".to_owned(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }];
        for (path, content) in files {
            let digest = Sha256Digest::of(content);
            let chunk = ChunkRef { digest, size: content.len() as u64, stored: 1 };
            entries.push(Entry {
                path: (*path).to_owned(),
                kind: EntryKind::File { size: content.len() as u64, sha256: digest, chunks: vec![chunk] },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: BTreeMap::new(),
            });
        }
        Manifest {
            format: 1,
            name: "ecar".to_owned(),
            version: version.parse().expect("version"),
            compatible: "ecar".to_owned(),
            architecture: "x86_64".to_owned(),
            prefix: "/opt/ecar".to_owned(),
            provenance: Provenance {
                source_commit: None,
                recipe_sha256: Sha256Digest::of(b"recipe"),
                builder: "test".to_owned(),
                source_date_epoch: 0,
            },
            services: Vec::new(),
            pre_switch: PreSwitch::default(),
            health: HealthCheck { command: vec!["true".to_owned()], timeout_ms: 1, interval_ms: 1, failures_to_revert: 1 },
            entries,
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        old: Manifest,
        old_bytes: Vec<u8>,
        new: Manifest,
        new_bytes: Vec<u8>,
        pack: Vec<u8>,
    }

    const OLD_CONFIG: &[u8] = b"max_steering_angle_deg = 35.0\nmax_speed = 2.5\nwheel_base = 0.42\n";
    const NEW_CONFIG: &[u8] = b"max_steering_angle_deg = 30.0\nmax_speed = 2.5\nwheel_base = 0.42\n";

    /// Builds an active slot with 1.0.0 and a pack to 1.0.1 that changes one file
    /// and adds another.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let active = dir.path().join("active");
        std::fs::create_dir_all(active.join("share")).expect("slot");
        std::fs::write(active.join("share/limits.toml"), OLD_CONFIG).expect("old file");
        let old = manifest("1.0.0", &[("share/limits.toml", OLD_CONFIG)]);
        let new = manifest("1.0.1", &[("share/limits.toml", NEW_CONFIG), ("share/new.txt", b"new file\n")]);
        let old_bytes = serde_json::to_vec(&old).expect("json");
        let new_bytes = serde_json::to_vec(&new).expect("json");
        let manifest_frame = compress(&old_bytes, &new_bytes);
        let group_frame = compress(OLD_CONFIG, &[NEW_CONFIG, b"new file\n"].concat());
        let header = DeltaHeader {
            format: DELTA_FORMAT_GROUPS,
            name: "ecar".to_owned(),
            from: DeltaEnd { version: old.version.clone(), manifest_sha256: Sha256Digest::of(&old_bytes), manifest_size: old_bytes.len() as u64 },
            to: DeltaEnd { version: new.version.clone(), manifest_sha256: Sha256Digest::of(&new_bytes), manifest_size: new_bytes.len() as u64 },
            manifest_patch: manifest_frame.len() as u64,
            groups: vec![DeltaGroup {
                files: vec![
                    DeltaFile { path: "share/limits.toml".to_owned(), base: Some("share/limits.toml".to_owned()), window: None },
                    DeltaFile { path: "share/new.txt".to_owned(), base: None, window: None },
                ],
                patch: group_frame.len() as u64,
            }],
        };
        let pack = pack_bytes(&header, &[manifest_frame, group_frame]);
        Fixture { dir, old, old_bytes, new, new_bytes, pack }
    }

    fn pack_bytes(header: &DeltaHeader, frames: &[Vec<u8>]) -> Vec<u8> {
        let header_bytes = zstd::bulk::compress(&serde_json::to_vec(header).expect("json"), 3).expect("header");
        let mut pack = DELTA_MAGIC.to_vec();
        pack.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
        pack.extend_from_slice(&header_bytes);
        for frame in frames {
            pack.extend_from_slice(frame);
        }
        pack
    }

    /// Deterministic bytes that zstd cannot shrink on their own.
    fn noise(seed: u64, length: usize) -> Vec<u8> {
        let mut state = seed;
        (0..length)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    const WINDOW: u64 = 100_000;

    /// An active slot with a 300 000-byte image and a format-2 pack that
    /// rebuilds its new version in three windows. The first two refer to the
    /// old bytes at their own offset, the last to two ranges of the old image.
    struct Windowed {
        dir: tempfile::TempDir,
        old: Manifest,
        new: Manifest,
        old_image: Vec<u8>,
        new_image: Vec<u8>,
        header: DeltaHeader,
        frames: Vec<Vec<u8>>,
    }

    fn windowed() -> Windowed {
        let dir = tempfile::tempdir().expect("tempdir");
        let old_image = noise(1, 3 * WINDOW as usize);
        let mut new_image = old_image.clone();
        for offset in [10usize, 150_000, 299_000] {
            new_image[offset..offset + 16].copy_from_slice(b"changed in 1.0.1");
        }

        std::fs::create_dir_all(dir.path().join("active")).expect("slot");
        std::fs::write(dir.path().join("active/rootfs.img"), &old_image).expect("old image");
        let old = manifest("1.0.0", &[("rootfs.img", &old_image)]);
        let new = manifest("1.0.1", &[("rootfs.img", &new_image)]);
        let old_bytes = serde_json::to_vec(&old).expect("json");
        let new_bytes = serde_json::to_vec(&new).expect("json");

        let mut frames = vec![compress(&old_bytes, &new_bytes)];
        let mut groups = Vec::new();
        for index in 0..3 {
            // The last window's reference is two ranges of the old image.
            let base_ranges = match index {
                2 => vec![ByteRange { offset: 0, length: 50_000 }, ByteRange { offset: 2 * WINDOW, length: WINDOW }],
                _ => vec![ByteRange { offset: index * WINDOW, length: WINDOW }],
            };
            let reference: Vec<u8> =
                base_ranges.iter().flat_map(|r| old_image[r.offset as usize..(r.offset + r.length) as usize].iter().copied()).collect();
            let range = (index * WINDOW) as usize..((index + 1) * WINDOW) as usize;
            let frame = compress(&reference, &new_image[range]);
            let window = DeltaWindow { offset: index * WINDOW, length: WINDOW, base_ranges };
            groups.push(DeltaGroup {
                files: vec![DeltaFile { path: "rootfs.img".to_owned(), base: Some("rootfs.img".to_owned()), window: Some(window) }],
                patch: frame.len() as u64,
            });
            frames.push(frame);
        }
        let header = DeltaHeader {
            format: DELTA_FORMAT,
            name: "ecar".to_owned(),
            from: DeltaEnd { version: old.version.clone(), manifest_sha256: Sha256Digest::of(&old_bytes), manifest_size: old_bytes.len() as u64 },
            to: DeltaEnd { version: new.version.clone(), manifest_sha256: Sha256Digest::of(&new_bytes), manifest_size: new_bytes.len() as u64 },
            manifest_patch: frames[0].len() as u64,
            groups,
        };
        Windowed { dir, old, new, old_image, new_image, header, frames }
    }

    fn write_windowed(windowed: &Windowed, header: &DeltaHeader) -> PathBuf {
        let path = windowed.dir.path().join("pack.delta");
        std::fs::write(&path, pack_bytes(header, &windowed.frames)).expect("write pack");
        path
    }

    #[test]
    fn windowed_file_is_rebuilt_in_a_directory() {
        let windowed = windowed();
        let pack = DeltaPack::open(&write_windowed(&windowed, &windowed.header)).expect("open");
        let total: u64 = windowed.frames[1..].iter().map(|f| f.len() as u64).sum();
        assert!(total < 1_000, "three small changes give small frames, got {total} bytes");
        let out = windowed.dir.path().join("rebuilt");
        let rebuilt = pack
            .rebuild_files(&windowed.new, &windowed.old, &windowed.dir.path().join("active"), &out, |_| true)
            .expect("rebuild");
        let digest = Sha256Digest::of(&windowed.new_image);
        assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
        assert_eq!(std::fs::read(&rebuilt[&digest]).expect("read"), windowed.new_image);
    }

    #[test]
    fn windowed_frames_write_a_stream() {
        let windowed = windowed();
        let pack = DeltaPack::open(&write_windowed(&windowed, &windowed.header)).expect("open");
        let size = windowed.new_image.len() as u64;
        let (base, frames) = pack.file_frames("rootfs.img", size, windowed.old_image.len() as u64).expect("frames");
        assert_eq!(base, Some("rootfs.img"));
        assert_eq!(frames.len(), 3);
        let base_path = windowed.dir.path().join("active/rootfs.img");
        let mut base_file = File::open(&base_path).expect("base");
        let mut output = Vec::new();
        let digest = pack
            .write_frames("rootfs.img", &frames, Some((&mut base_file, &base_path, windowed.old_image.len() as u64)), size, &mut output)
            .expect("write");
        assert_eq!(output, windowed.new_image);
        assert_eq!(digest, Sha256Digest::of(&windowed.new_image));
        assert_eq!(pack.file_frames("other.img", size, 0), None);
    }

    #[test]
    fn changed_base_gives_other_digest() {
        let windowed = windowed();
        let mut changed = windowed.old_image.clone();
        changed[200_000] ^= 0xff;
        std::fs::write(windowed.dir.path().join("active/rootfs.img"), &changed).expect("change base");
        let pack = DeltaPack::open(&write_windowed(&windowed, &windowed.header)).expect("open");
        let out = windowed.dir.path().join("rebuilt");
        let rebuilt = pack
            .rebuild_files(&windowed.new, &windowed.old, &windowed.dir.path().join("active"), &out, |_| true)
            .expect("rebuild");
        assert!(rebuilt.is_empty(), "{rebuilt:?}");
        let left: Vec<_> = std::fs::read_dir(&out).expect("out dir").collect();
        assert!(left.is_empty(), "a partial file stayed: {left:?}");
    }

    #[test]
    fn invalid_windows_are_rejected_when_opened() {
        let windowed = windowed();
        let edit = |change: &dyn Fn(&mut DeltaHeader)| {
            let mut header = windowed.header.clone();
            change(&mut header);
            header
        };
        let cases: Vec<(&str, DeltaHeader, &str)> = vec![
            ("format 1", edit(&|h| h.format = DELTA_FORMAT_GROUPS), "format 1 does not allow"),
            ("newer format", edit(&|h| h.format = DELTA_FORMAT + 1), "update tenderd"),
            ("gap", edit(&|h| if let Some(w) = h.groups[1].files[0].window.as_mut() { w.offset += 1 }), "does not follow"),
            ("too long", edit(&|h| if let Some(w) = h.groups[2].files[0].window.as_mut() { w.length = MAX_GROUP_BYTES + 1 }), "more than the limit"),
            ("reference too long", edit(&|h| if let Some(w) = h.groups[0].files[0].window.as_mut() { w.base_ranges[0].length = MAX_GROUP_BYTES + 1 }), "more than the limit"),
            ("no base", edit(&|h| h.groups[0].files[0].base = None), "without a base"),
            (
                "shared group",
                edit(&|h| h.groups[0].files.push(DeltaFile { path: "VERSION".to_owned(), base: None, window: None })),
                "and other files",
            ),
        ];
        for (case, header, expected) in cases {
            let error = DeltaPack::open(&write_windowed(&windowed, &header)).expect_err(case).to_string();
            assert!(error.contains(expected), "{case}: {error}");
        }
    }
    fn write_pack(fixture: &Fixture, bytes: &[u8]) -> PathBuf {
        let path = fixture.dir.path().join("pack.delta");
        std::fs::write(&path, bytes).expect("write pack");
        path
    }

    #[test]
    fn pack_rebuilds_manifest_and_files() {
        let fixture = fixture();
        let pack = DeltaPack::open(&write_pack(&fixture, &fixture.pack)).expect("open");
        assert_eq!(pack.manifest(&fixture.old_bytes, MAX_HEADER_JSON_BYTES).expect("manifest"), fixture.new_bytes);
        let out = fixture.dir.path().join("rebuilt");
        let rebuilt = pack
            .rebuild_files(&fixture.new, &fixture.old, &fixture.dir.path().join("active"), &out, |_| true)
            .expect("rebuild");
        assert_eq!(rebuilt.len(), 2);
        assert_eq!(std::fs::read(&rebuilt[&Sha256Digest::of(NEW_CONFIG)]).expect("read"), NEW_CONFIG);
        assert_eq!(std::fs::read(&rebuilt[&Sha256Digest::of(b"new file\n")]).expect("read"), b"new file\n");
    }

    #[test]
    fn damaged_packs_are_rejected_when_opened() {
        let fixture = fixture();
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("magic", [b"XXXXXXXX".as_slice(), &fixture.pack[8..]].concat(), "magic"),
            ("truncated", fixture.pack[..fixture.pack.len() - 1].to_vec(), "frames add up"),
            ("short", fixture.pack[..5].to_vec(), "shorter"),
        ];
        for (case, bytes, expected) in cases {
            let error = DeltaPack::open(&write_pack(&fixture, &bytes)).expect_err(case).to_string();
            assert!(error.contains(expected), "{case}: {error}");
        }
    }

    #[test]
    fn pack_for_another_release_is_refused() {
        let fixture = fixture();
        let pack = DeltaPack::open(&write_pack(&fixture, &fixture.pack)).expect("open");
        let error = pack.manifest(b"{}", MAX_HEADER_JSON_BYTES).expect_err("other base").to_string();
        assert!(error.contains("upgrades from manifest"), "{error}");
    }

    #[test]
    fn changed_active_file_skips_its_group() {
        let fixture = fixture();
        std::fs::write(fixture.dir.path().join("active/share/limits.toml"), b"max_steering_angle_deg = 99.0\nmax_speed = 2.5\nwheel_base = 0.42\n")
            .expect("damage active file");
        let pack = DeltaPack::open(&write_pack(&fixture, &fixture.pack)).expect("open");
        let out = fixture.dir.path().join("rebuilt");
        let rebuilt = pack
            .rebuild_files(&fixture.new, &fixture.old, &fixture.dir.path().join("active"), &out, |_| true)
            .expect("rebuild");
        assert!(rebuilt.is_empty(), "{rebuilt:?}");
        let left: Vec<_> = std::fs::read_dir(&out).expect("out dir").collect();
        assert!(left.is_empty(), "a file of the failed group stayed: {left:?}");
    }
}
