//! Writing delta packs (format in [`tender_updater::format::delta`]).
//!
//! A pack upgrades a robot that runs one earlier release. It holds what
//! the robot cannot take from its active slot: the new manifest as a patch
//! of the old one, and every new or changed file as a zstd frame that uses
//! the previous version of the same path as its reference. A file whose
//! chunks the old release already had is left out, because the robot
//! rebuilds it from local chunks for free. Old and new contents are read
//! back from the repository's chunk store.
//!
//! A file larger than [`MAX_GROUP_BYTES`], or whose base is, is cut into
//! windows of [`WINDOW_BYTES`] ([`plan_windows`]), each compressed with the
//! base's bytes around the same offset as its reference. Filesystem images
//! change mostly in place, so that region holds most of what a window
//! needs. Only the chunks of one window and of its reference are in memory
//! at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use tender_updater::format::chunk::decode_chunk;
use tender_updater::format::delta::{
    delta_target_name, window_log, DeltaEnd, DeltaFile, DeltaGroup, DeltaHeader, DeltaTargetInfo, DeltaWindow, DELTA_FORMAT,
    DELTA_FORMAT_GROUPS, DELTA_MAGIC, MAX_GROUP_BYTES,
};
use tender_updater::format::layout::repo_chunk_path;
use tender_updater::format::{ChunkRef, EntryKind, Manifest, Sha256Digest};

/// Failures to write a pack.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("cannot read chunk {digest} of {path:?} from {}: {detail}; the repository lost chunks of release {version}, so set delta.from_last lower or restore the chunk store", file.display())]
    Chunk { digest: Sha256Digest, path: String, version: semver::Version, file: std::path::PathBuf, detail: String },

    #[error("cannot compress the delta from {from} to {to}: {source}")]
    Compress { from: semver::Version, to: semver::Version, source: std::io::Error },

    #[error("cannot encode the delta header: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One side of a delta: a manifest and its exact bytes.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    pub manifest: &'a Manifest,
    pub bytes: &'a [u8],
}

/// A pack ready to publish.
#[derive(Debug, Clone)]
pub struct WrittenDelta {
    pub target_name: String,
    pub bytes: Vec<u8>,
    pub info: DeltaTargetInfo,
    pub files: usize,
    pub groups: usize,
}

/// Bytes of a large file that one window rebuilds. On ext4 (400 MiB) and
/// erofs (221 MiB) images of the two Debian 12 minbase trees of the
/// benchmarks, with `zstd -9 --patch-from` run on each window, 32 MiB
/// windows with the base at the same offset took 71.0 MB and 58.6 MB;
/// 16 MiB windows with a 32 MiB reference centered on them took 72.6 MB
/// and 66.8 MB.
pub const WINDOW_BYTES: u64 = MAX_GROUP_BYTES;

/// Size from which a file gets a group of its own. A partition robot has
/// only the old image, not the other old files, so it can apply the
/// image's group only when no other file shares its reference.
pub const SOLO_FILE_BYTES: u64 = 1024 * 1024;

/// A file, or a window of a large file, that the pack carries.
struct Candidate<'a> {
    path: &'a str,
    chunks: &'a [ChunkRef],
    size: u64,
    base: Option<(&'a str, &'a [ChunkRef], u64)>,
    window: Option<DeltaWindow>,
}

impl Candidate<'_> {
    /// Bytes the candidate adds to its group's output.
    fn output_bytes(&self) -> u64 {
        self.window.map_or(self.size, |window| window.length)
    }

    /// Bytes the candidate adds to its group's reference.
    fn reference_bytes(&self) -> u64 {
        match (self.window, self.base) {
            (Some(window), _) => window.base_length,
            (None, Some((_, _, size))) => size,
            (None, None) => 0,
        }
    }

    fn is_solo(&self) -> bool {
        self.window.is_some() || self.size >= SOLO_FILE_BYTES
    }
}

/// A file of the old release, by path.
struct OldFile<'a> {
    chunks: &'a [ChunkRef],
    size: u64,
}

/// Builds the pack that upgrades `old` to `new`, or returns `None` when
/// plain chunks cost a robot no more than the pack would.
pub fn build_delta(repo: &Path, old: Release, new: Release, level: i32) -> Result<Option<WrittenDelta>, DeltaError> {
    let old_files: HashMap<&str, OldFile> = old
        .manifest
        .entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File { size, chunks, .. } => Some((entry.path.as_str(), OldFile { chunks, size: *size })),
            _ => None,
        })
        .collect();
    let old_contents: HashSet<Sha256Digest> = old.manifest.entries.iter().filter_map(file_digest).collect();
    let old_chunks: HashSet<Sha256Digest> =
        old_files.values().flat_map(|file| file.chunks.iter().map(|chunk| chunk.digest)).collect();
    let renamed = renamed_paths(&old_files);

    let mut seen = HashSet::new();
    let mut chunk_needed: BTreeMap<Sha256Digest, u64> = BTreeMap::new();
    let mut candidates = Vec::new();
    for entry in &new.manifest.entries {
        let EntryKind::File { size, sha256, chunks } = &entry.kind else { continue };
        if old_contents.contains(sha256) || !seen.insert(*sha256) {
            continue;
        }
        let missing: Vec<&ChunkRef> = chunks.iter().filter(|chunk| !old_chunks.contains(&chunk.digest)).collect();
        if missing.is_empty() {
            continue;
        }
        chunk_needed.extend(missing.iter().map(|chunk| (chunk.digest, chunk.stored)));
        let base_path = match old_files.get(entry.path.as_str()) {
            Some(_) => Some(entry.path.as_str()),
            None => renamed.get(&without_digits(&entry.path)).copied().flatten(),
        };
        let base = base_path
            .and_then(|path| old_files.get(path).map(|file| (path, file)))
            .map(|(path, file)| (path, file.chunks, file.size));
        let base_size = base.map_or(0, |(_, _, size)| size);
        if *size > MAX_GROUP_BYTES || base_size > MAX_GROUP_BYTES {
            for window in plan_windows(*size, base_size) {
                let base = base.filter(|_| window.base_length > 0);
                candidates.push(Candidate { path: &entry.path, chunks, size: *size, base, window: Some(window) });
            }
        } else {
            candidates.push(Candidate { path: &entry.path, chunks, size: *size, base, window: None });
        }
    }
    let format = if candidates.iter().any(|c| c.window.is_some()) { DELTA_FORMAT } else { DELTA_FORMAT_GROUPS };

    let compress_error = |source| DeltaError::Compress {
        from: old.manifest.version.clone(),
        to: new.manifest.version.clone(),
        source,
    };
    let manifest_patch = compress_with_reference(old.bytes, new.bytes, level).map_err(compress_error)?;
    let mut frames = vec![manifest_patch];
    let mut groups = Vec::new();
    for members in group(&candidates) {
        let mut reference = Vec::new();
        let mut content = Vec::new();
        for candidate in members {
            let (offset, length, base_offset) = match candidate.window {
                Some(window) => (window.offset, window.length, window.base_offset),
                None => (0, candidate.size, 0),
            };
            if let Some((path, chunks, _)) = candidate.base {
                read_range(repo, &old.manifest.version, path, chunks, base_offset, candidate.reference_bytes(), &mut reference)?;
            }
            read_range(repo, &new.manifest.version, candidate.path, candidate.chunks, offset, length, &mut content)?;
        }
        let frame = compress_with_reference(&reference, &content, level).map_err(compress_error)?;
        groups.push(DeltaGroup {
            files: members
                .iter()
                .map(|c| DeltaFile {
                    path: c.path.to_owned(),
                    base: c.base.map(|(path, _, _)| path.to_owned()),
                    window: c.window,
                })
                .collect(),
            patch: frame.len() as u64,
        });
        frames.push(frame);
    }

    let header = DeltaHeader {
        format,
        name: new.manifest.name.clone(),
        from: end(old),
        to: end(new),
        manifest_patch: frames[0].len() as u64,
        groups,
    };
    let header_bytes = zstd::bulk::compress(&serde_json::to_vec(&header)?, level).map_err(compress_error)?;
    let header_len = u32::try_from(header_bytes.len()).map_err(|_| compress_error(std::io::Error::other("header too large")))?;
    let mut bytes = Vec::with_capacity(frames.iter().map(Vec::len).sum::<usize>() + header_bytes.len() + 12);
    bytes.extend_from_slice(DELTA_MAGIC);
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    for frame in &frames {
        bytes.extend_from_slice(frame);
    }

    let info = DeltaTargetInfo {
        format,
        name: new.manifest.name.clone(),
        from: old.manifest.version.clone(),
        from_manifest: Sha256Digest::of(old.bytes),
        to: new.manifest.version.clone(),
        to_manifest: Sha256Digest::of(new.bytes),
        chunk_bytes: chunk_needed.values().sum(),
        pack_chunk_bytes: 0,
    };
    let with_pack = bytes.len() as u64 + info.pack_chunk_bytes;
    let without = new.bytes.len() as u64 + info.chunk_bytes;
    if with_pack >= without {
        tracing::info!(from = %info.from, to = %info.to, with_pack, without, "no delta pack: plain chunks cost no more");
        return Ok(None);
    }
    let files = candidates.iter().filter(|c| c.window.is_none_or(|w| w.offset == 0)).count();
    tracing::info!(from = %info.from, to = %info.to, with_pack, without, files, format, "delta pack written");
    Ok(Some(WrittenDelta {
        target_name: delta_target_name(&new.manifest.name, &new.manifest.version, &old.manifest.version),
        files,
        groups: header.groups.len(),
        bytes,
        info,
    }))
}

fn file_digest(entry: &tender_updater::format::Entry) -> Option<Sha256Digest> {
    match &entry.kind {
        EntryKind::File { sha256, .. } => Some(*sha256),
        _ => None,
    }
}

fn end(release: Release) -> DeltaEnd {
    DeltaEnd {
        version: release.manifest.version.clone(),
        manifest_sha256: Sha256Digest::of(release.bytes),
        manifest_size: release.bytes.len() as u64,
    }
}

/// Returns `path` without its ASCII digits, so that `lib/foo.so.1.2` and
/// `lib/foo.so.1.3`, or `pkg-1.0.dist-info/RECORD` and
/// `pkg-1.1.dist-info/RECORD`, meet.
fn without_digits(path: &str) -> String {
    path.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Old paths by their digit-free form; `None` when several old paths share it.
fn renamed_paths<'a>(old_files: &HashMap<&'a str, OldFile>) -> HashMap<String, Option<&'a str>> {
    let mut renamed: HashMap<String, Option<&str>> = HashMap::new();
    for path in old_files.keys() {
        renamed
            .entry(without_digits(path))
            .and_modify(|existing| *existing = None)
            .or_insert(Some(*path));
    }
    renamed
}

/// Cuts a file of `size` bytes into windows of [`WINDOW_BYTES`], each with
/// the reference of at most [`MAX_GROUP_BYTES`] of the base (of `base_size`
/// bytes, 0 without a base) that is centered on the window's range, moved
/// inside the base near its ends.
pub fn plan_windows(size: u64, base_size: u64) -> Vec<DeltaWindow> {
    let base_length = base_size.min(MAX_GROUP_BYTES);
    let mut windows = Vec::new();
    let mut offset = 0;
    while offset < size {
        let length = WINDOW_BYTES.min(size - offset);
        let centered = (offset + length / 2).saturating_sub(base_length / 2);
        let base_offset = centered.min(base_size - base_length);
        windows.push(DeltaWindow { offset, length, base_offset, base_length });
        offset += length;
    }
    windows
}

/// Splits candidates, in manifest order, into runs whose new content and
/// whose reference each stay within [`MAX_GROUP_BYTES`]. A window, and a
/// file of [`SOLO_FILE_BYTES`] or more, gets a group of its own.
fn group<'c, 'a>(candidates: &'c [Candidate<'a>]) -> Vec<&'c [Candidate<'a>]> {
    let mut groups = Vec::new();
    let (mut start, mut output, mut reference) = (0, 0u64, 0u64);
    for (index, candidate) in candidates.iter().enumerate() {
        let previous_solo = index > 0 && candidates[index - 1].is_solo();
        let full = output + candidate.output_bytes() > MAX_GROUP_BYTES || reference + candidate.reference_bytes() > MAX_GROUP_BYTES;
        if index > start && (full || candidate.is_solo() || previous_solo) {
            groups.push(&candidates[start..index]);
            (start, output, reference) = (index, 0, 0);
        }
        output += candidate.output_bytes();
        reference += candidate.reference_bytes();
    }
    if start < candidates.len() {
        groups.push(&candidates[start..]);
    }
    groups
}

/// Appends `length` bytes from `offset` of a file, read from the chunks in
/// the store that overlap that range.
fn read_range(
    repo: &Path,
    version: &semver::Version,
    path: &str,
    chunks: &[ChunkRef],
    offset: u64,
    length: u64,
    into: &mut Vec<u8>,
) -> Result<(), DeltaError> {
    let end = offset + length;
    let mut chunk_start = 0u64;
    for chunk in chunks {
        let chunk_end = chunk_start + chunk.size;
        let (start_in_file, end_in_file) = (chunk_start.max(offset), chunk_end.min(end));
        let start = chunk_start;
        chunk_start = chunk_end;
        if start_in_file >= end_in_file {
            continue;
        }
        let file = repo.join(repo_chunk_path(&chunk.digest));
        let error = |detail: String| DeltaError::Chunk {
            digest: chunk.digest,
            path: path.to_owned(),
            version: version.clone(),
            file: file.clone(),
            detail,
        };
        let stored = std::fs::read(&file).map_err(|e| error(e.to_string()))?;
        let plain = decode_chunk(chunk, &stored).map_err(|e| error(e.to_string()))?;
        into.extend_from_slice(&plain[(start_in_file - start) as usize..(end_in_file - start) as usize]);
    }
    Ok(())
}

/// Compresses `content` into one zstd frame that uses `reference` as its
/// prefix, with a window that keeps all of the reference in reach.
pub fn compress_with_reference(reference: &[u8], content: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, reference)?;
    encoder.window_log(window_log(reference.len() as u64, content.len() as u64))?;
    encoder.set_pledged_src_size(Some(content.len() as u64))?;
    encoder.include_checksum(false)?;
    encoder.write_all(content)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_with_reference_decodes_with_the_same_reference() {
        let reference: Vec<u8> = (0..200_000u32).flat_map(|n| n.to_le_bytes()).collect();
        let mut content = reference.clone();
        content[1000..1008].copy_from_slice(b"changed!");
        let frame = compress_with_reference(&reference, &content, 19).expect("compress");
        assert!(frame.len() < 200, "a small change gives a small frame, got {} bytes", frame.len());
        let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(frame.as_slice(), &reference).expect("decoder");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut plain).expect("decode");
        assert_eq!(plain, content);
    }

    #[test]
    fn versioned_names_meet_without_digits() {
        assert_eq!(without_digits("lib/libfoo.so.1.2"), without_digits("lib/libfoo.so.1.3"));
        assert_ne!(without_digits("lib/libfoo.so"), without_digits("lib/libbar.so"));
    }

    #[test]
    fn groups_stay_within_the_limit() {
        let chunks: Vec<ChunkRef> = Vec::new();
        let big = MAX_GROUP_BYTES / 2 + 1;
        let candidates: Vec<Candidate> = (0..5)
            .map(|_| Candidate { path: "f", chunks: &chunks, size: big, base: None, window: None })
            .collect();
        let groups = group(&candidates);
        assert_eq!(groups.len(), 5);
        let small: Vec<Candidate> = (0..5).map(|_| Candidate { path: "f", chunks: &chunks, size: 10, base: None, window: None }).collect();
        assert_eq!(group(&small).len(), 1);
    }

    #[test]
    fn windows_and_large_files_get_groups_of_their_own() {
        let chunks: Vec<ChunkRef> = Vec::new();
        let small = |path| Candidate { path, chunks: &chunks, size: 10, base: None, window: None };
        let window = DeltaWindow { offset: 0, length: 10, base_offset: 0, base_length: 0 };
        let candidates = vec![
            small("a"),
            small("b"),
            Candidate { path: "big", chunks: &chunks, size: SOLO_FILE_BYTES, base: None, window: None },
            small("c"),
            Candidate { path: "image", chunks: &chunks, size: 10, base: None, window: Some(window) },
            Candidate { path: "image", chunks: &chunks, size: 10, base: None, window: Some(window) },
            small("d"),
        ];
        let paths: Vec<Vec<&str>> = group(&candidates).iter().map(|g| g.iter().map(|c| c.path).collect()).collect();
        assert_eq!(paths, vec![vec!["a", "b"], vec!["big"], vec!["c"], vec!["image"], vec!["image"], vec!["d"]]);
    }

    #[test]
    fn windows_cover_the_file_with_bounded_references() {
        let mib = 1024 * 1024;
        let cases = [(100 * mib + 5, 90 * mib), (100 * mib, 0), (40 * mib, 10 * mib), (10 * mib, 50 * mib), (MAX_GROUP_BYTES * 2, MAX_GROUP_BYTES * 2)];
        for (size, base_size) in cases {
            let windows = plan_windows(size, base_size);
            let mut next = 0;
            for window in &windows {
                assert_eq!(window.offset, next, "{size} from {base_size}: gap before {window:?}");
                assert!(window.length > 0 && window.length <= MAX_GROUP_BYTES, "{window:?}");
                assert!(window.base_length <= MAX_GROUP_BYTES, "{window:?}");
                assert_eq!(window.base_length, base_size.min(MAX_GROUP_BYTES), "{window:?}");
                assert!(window.base_offset + window.base_length <= base_size, "{size} from {base_size}: {window:?} reads past the base");
                next += window.length;
            }
            assert_eq!(next, size, "{size} from {base_size}: windows end at {next}");
        }
        // Same-size files: each window's reference is the base's bytes at its offset.
        for window in plan_windows(MAX_GROUP_BYTES * 2, MAX_GROUP_BYTES * 2) {
            assert_eq!(window.base_offset, window.offset);
        }
    }

    #[test]
    fn range_reads_only_the_requested_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content: Vec<u8> = (0..3000u32).map(|n| (n % 251) as u8).collect();
        let mut chunks = Vec::new();
        for piece in content.chunks(1000) {
            let stored = zstd::bulk::compress(piece, 3).expect("compress");
            let chunk = ChunkRef { digest: Sha256Digest::of(piece), size: piece.len() as u64, stored: stored.len() as u64 };
            let path = dir.path().join(repo_chunk_path(&chunk.digest));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("chunk dir");
            std::fs::write(&path, stored).expect("chunk");
            chunks.push(chunk);
        }
        let version = semver::Version::new(1, 0, 0);
        for (offset, length) in [(0, 3000), (500, 1000), (999, 2), (2999, 1), (1000, 1000), (0, 0)] {
            let mut into = Vec::new();
            read_range(dir.path(), &version, "f", &chunks, offset, length, &mut into).expect("read");
            assert_eq!(into, content[offset as usize..(offset + length) as usize], "{offset}+{length}");
        }
    }
}
