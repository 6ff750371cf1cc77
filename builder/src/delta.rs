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
//! windows of [`WINDOW_BYTES`] ([`plan_windows`]), each compressed with a
//! reference of at most [`MAX_GROUP_BYTES`] chosen from the base by the
//! blocks they share (module `window`). Only one window, its reference and
//! an index of the base's blocks are in memory at a time.

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
use tender_updater::slot::fstype::{FsType, PROBE_BYTES};

mod window;

pub use window::{plan_windows, WINDOW_BYTES};
use window::{select_reference, BlockIndex};

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

/// Size from which a file is probed for a filesystem image. A partition
/// robot has only the old image, not the other old files, so it can apply
/// the image's group only when no other file shares its reference. Other
/// files share groups, because a group's other files are context that
/// makes the pack smaller: a solo group for every file of 1 MiB or more
/// cost the Debian pair of the benchmark 0.8 MB (16.89 against 16.09 MB).
pub const SOLO_FILE_BYTES: u64 = 1024 * 1024;

/// A file, or a window of a large file, that the pack carries.
struct Candidate<'a> {
    path: &'a str,
    chunks: &'a [ChunkRef],
    size: u64,
    base: Option<(&'a str, &'a [ChunkRef], u64)>,
    window: Option<DeltaWindow>,
    /// A filesystem image, which a partition robot writes to its slot.
    image: bool,
}

impl Candidate<'_> {
    /// Bytes the candidate adds to its group's output.
    fn output_bytes(&self) -> u64 {
        self.window.as_ref().map_or(self.size, |window| window.length)
    }

    /// Bytes the candidate adds to its group's reference.
    fn reference_bytes(&self) -> u64 {
        match (&self.window, self.base) {
            (Some(window), _) => window.base_length(),
            (None, Some((_, _, size))) => size,
            (None, None) => 0,
        }
    }

    fn is_solo(&self) -> bool {
        self.window.is_some() || self.image
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
                let base = base.filter(|_| !window.base_ranges.is_empty());
                candidates.push(Candidate { path: &entry.path, chunks, size: *size, base, window: Some(window), image: false });
            }
        } else {
            let image = *size >= SOLO_FILE_BYTES && is_filesystem_image(repo, new.manifest, &entry.path, chunks, *size)?;
            candidates.push(Candidate { path: &entry.path, chunks, size: *size, base, window: None, image });
        }
    }
    let format = if candidates.iter().any(|c| c.window.is_some()) { DELTA_FORMAT } else { DELTA_FORMAT_GROUPS };

    let compress_error = |source| DeltaError::Compress {
        from: old.manifest.version.clone(),
        to: new.manifest.version.clone(),
        source,
    };
    let manifest_patch = compress_with_reference(old.bytes, new.bytes, level, false).map_err(compress_error)?;
    let mut frames = vec![manifest_patch];
    let mut groups = Vec::new();
    // The block index of the base of the windows being written.
    let mut index: Option<(&str, BlockIndex)> = None;
    for members in group(&candidates) {
        let mut reference = Vec::new();
        let mut content = Vec::new();
        let mut files = Vec::new();
        for candidate in members {
            let mut window = candidate.window.clone();
            match (&mut window, candidate.base) {
                (Some(window), base) => {
                    read_range(repo, &new.manifest.version, candidate.path, candidate.chunks, window.offset, window.length, &mut content)?;
                    if let Some((path, chunks, size)) = base {
                        if index.as_ref().is_none_or(|(indexed, _)| *indexed != path) {
                            index = Some((path, index_base(repo, &old.manifest.version, path, chunks, size)?));
                        }
                        if let Some((_, index)) = &index {
                            window.base_ranges = select_reference(index, window.offset, &content);
                        }
                        for range in &window.base_ranges {
                            read_range(repo, &old.manifest.version, path, chunks, range.offset, range.length, &mut reference)?;
                        }
                    }
                }
                (None, base) => {
                    if let Some((path, chunks, size)) = base {
                        read_range(repo, &old.manifest.version, path, chunks, 0, size, &mut reference)?;
                    }
                    read_range(repo, &new.manifest.version, candidate.path, candidate.chunks, 0, candidate.size, &mut content)?;
                }
            }
            files.push(DeltaFile { path: candidate.path.to_owned(), base: candidate.base.map(|(path, _, _)| path.to_owned()), window });
        }
        let windowed = files.iter().any(|file| file.window.is_some());
        let frame = compress_with_reference(&reference, &content, level, windowed).map_err(compress_error)?;
        groups.push(DeltaGroup { files, patch: frame.len() as u64 });
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
    let files = candidates.iter().filter(|c| c.window.as_ref().is_none_or(|w| w.offset == 0)).count();
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

/// Checks whether a file of the new release starts like an ext4, erofs or
/// squashfs image.
fn is_filesystem_image(repo: &Path, manifest: &Manifest, path: &str, chunks: &[ChunkRef], size: u64) -> Result<bool, DeltaError> {
    let mut probe = Vec::with_capacity(PROBE_BYTES);
    read_range(repo, &manifest.version, path, chunks, 0, size.min(PROBE_BYTES as u64), &mut probe)?;
    Ok(FsType::detect(&probe).is_some())
}

/// Indexes the blocks of a base file, reading it one group's worth at a time.
fn index_base(repo: &Path, version: &semver::Version, path: &str, chunks: &[ChunkRef], size: u64) -> Result<BlockIndex, DeltaError> {
    let mut index = BlockIndex::new(size);
    let mut offset = 0;
    while offset < size {
        let length = MAX_GROUP_BYTES.min(size - offset);
        let mut bytes = Vec::with_capacity(length as usize);
        read_range(repo, version, path, chunks, offset, length, &mut bytes)?;
        index.add(offset, &bytes);
        offset += length;
    }
    Ok(index)
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
/// `long_distance` turns on zstd's long distance matching, as `zstd
/// --patch-from` does: without it, levels below about 16 keep too few
/// positions of a 32 MiB reference to find its matches (a 41 MiB image
/// window frame at level 3 was as large as the image). Whole-file groups
/// do without it, so their packs stay as measured in `BENCHMARKS.md`.
pub fn compress_with_reference(reference: &[u8], content: &[u8], level: i32, long_distance: bool) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, reference)?;
    encoder.window_log(window_log(reference.len() as u64, content.len() as u64))?;
    encoder.long_distance_matching(long_distance)?;
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
        let frame = compress_with_reference(&reference, &content, 19, false).expect("compress");
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
            .map(|_| Candidate { path: "f", chunks: &chunks, size: big, base: None, window: None, image: false })
            .collect();
        let groups = group(&candidates);
        assert_eq!(groups.len(), 5);
        let small: Vec<Candidate> = (0..5).map(|_| Candidate { path: "f", chunks: &chunks, size: 10, base: None, window: None, image: false }).collect();
        assert_eq!(group(&small).len(), 1);
    }

    #[test]
    fn windows_and_images_are_solo() {
        let chunks: Vec<ChunkRef> = Vec::new();
        let small = |path| Candidate { path, chunks: &chunks, size: 10, base: None, window: None, image: false };
        let window = DeltaWindow { offset: 0, length: 10, base_ranges: Vec::new() };
        let candidates = vec![
            small("a"),
            small("b"),
            Candidate { path: "image.img", chunks: &chunks, size: SOLO_FILE_BYTES, base: None, window: None, image: true },
            small("c"),
            Candidate { path: "image", chunks: &chunks, size: 10, base: None, window: Some(window.clone()), image: false },
            Candidate { path: "image", chunks: &chunks, size: 10, base: None, window: Some(window), image: false },
            small("d"),
        ];
        let paths: Vec<Vec<&str>> = group(&candidates).iter().map(|g| g.iter().map(|c| c.path).collect()).collect();
        assert_eq!(paths, vec![vec!["a", "b"], vec!["image.img"], vec!["c"], vec!["image"], vec!["image"], vec!["d"]]);
        let large = Candidate { path: "large", chunks: &chunks, size: 4 * SOLO_FILE_BYTES, base: None, window: None, image: false };
        assert_eq!(group(&[small("a"), large, small("b")]).len(), 1, "a large file that is no image shares its group");
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
