//! Delta packs: what a robot that runs one release needs to rebuild the next.
//!
//! A pack is a TUF target of its own, `NAME-TO.from-FROM.delta`, so its
//! length and hashes are signed and checked before a byte of it is used.
//! Layout, hand-written because no crate describes a list of zstd frames
//! that each need their own reference:
//!
//! ```text
//! magic "TNDRDLT1"                        8 bytes
//! header length                          u32, little-endian
//! header                                 zstd-compressed canonical JSON (DeltaHeader)
//! manifest frame                         zstd frame; reference: the old manifest bytes
//! group frames, in header order          zstd frame; reference: the old files of the group
//! ```
//!
//! A group is a run of files in manifest order, each with the path of its
//! previous version (its *base*) when it had one. Its frame decompresses to
//! the new files' contents one after the other, using the bases' old
//! contents, concatenated in the same order, as the zstd reference prefix:
//! the stream form of `zstd --patch-from`. Groups stay below
//! [`MAX_GROUP_BYTES`] of output and of reference, which bounds the memory a
//! robot needs to apply them.
//!
//! A file larger than [`MAX_GROUP_BYTES`] is cut into *windows* (format 2).
//! Each window is a group of its own with one [`DeltaFile`]. Its
//! [`DeltaWindow`] gives the range of the new file that it rebuilds, and
//! the ranges of the base file whose concatenation is its reference. Both
//! sides stay within [`MAX_GROUP_BYTES`].
//! The windows of a file follow each other in consecutive groups and cover
//! it from offset 0 without gaps, so a robot writes them in order and never
//! holds more than one window and one reference in memory. A partition
//! robot applies the groups of its image the same way, with the references
//! read from the active slot's device.
//!
//! **Versions.** The builder writes format 1 when no file has windows, so
//! robots that predate windows keep using those packs, and format 2
//! otherwise. This updater reads both and rejects any other format with a
//! message to update `tenderd`. A robot that reads only format 1 rejects a
//! format-2 header as invalid (`unknown field "window"`) after it downloaded
//! the pack, then falls back to chunks. Newer robots read the `format` in
//! the target's `custom.delta` and skip such packs before downloading.
//!
//! Chunks that both releases share are not listed: the robot derives them
//! from the two signed manifests.

use serde::{Deserialize, Serialize};

use crate::format::Sha256Digest;

/// First bytes of every delta pack.
pub const DELTA_MAGIC: &[u8; 8] = b"TNDRDLT1";
/// The newest pack format this updater reads: format 2 adds file windows.
pub const DELTA_FORMAT: u32 = 2;
/// The pack format without file windows, which every robot reads.
pub const DELTA_FORMAT_GROUPS: u32 = 1;
/// Most bytes of new content, and of reference, in one group.
pub const MAX_GROUP_BYTES: u64 = 32 * 1024 * 1024;
/// Largest compressed header a robot reads.
pub const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;
/// Largest header once decompressed.
pub const MAX_HEADER_JSON_BYTES: u64 = 64 * 1024 * 1024;
/// Largest zstd window log of a pack frame: 128 MiB, enough for any group.
/// A manifest pair larger than that still decodes, but patches less well.
pub const MAX_WINDOW_LOG: u32 = 27;

/// The table of contents of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaHeader {
    pub format: u32,
    pub name: String,
    pub from: DeltaEnd,
    pub to: DeltaEnd,
    /// Length of the frame that rebuilds the new manifest from the old one.
    pub manifest_patch: u64,
    pub groups: Vec<DeltaGroup>,
}

/// One side of a delta: a release and the exact manifest bytes it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaEnd {
    pub version: semver::Version,
    pub manifest_sha256: Sha256Digest,
    pub manifest_size: u64,
}

/// Files rebuilt from one zstd frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaGroup {
    pub files: Vec<DeltaFile>,
    /// Length of the group's frame in the pack.
    pub patch: u64,
}

/// A file of the new release and the old file its patch refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaFile {
    /// Entry path in the new manifest.
    pub path: String,
    /// Entry path in the old manifest whose content is this file's
    /// reference; `None` for a file compressed without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The part of a file larger than [`MAX_GROUP_BYTES`] that this group
    /// rebuilds (format 2); `None` for a whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DeltaWindow>,
}

/// A byte range of a large new file, and the byte ranges of its base whose
/// concatenation is the reference of the window's frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaWindow {
    /// Offset of the window in the new file.
    pub offset: u64,
    /// Bytes of the new file the window rebuilds, at most [`MAX_GROUP_BYTES`].
    pub length: u64,
    /// Ranges of the base file, in the order they are concatenated, at most
    /// [`MAX_GROUP_BYTES`] in total; empty without a base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_ranges: Vec<ByteRange>,
}

impl DeltaWindow {
    /// Bytes of the window's reference.
    pub fn base_length(&self) -> u64 {
        self.base_ranges.iter().fold(0u64, |sum, range| sum.saturating_add(range.length))
    }
}

/// `length` bytes from `offset` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

/// The `custom` field of a pack's target in `targets.json`: what a robot
/// reads to choose between the pack and plain chunks before it downloads
/// either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaTarget {
    pub delta: DeltaTargetInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaTargetInfo {
    /// Format of the pack's header (`DeltaHeader::format`); 1 when absent,
    /// as in targets written before format 2.
    #[serde(default = "format_groups")]
    pub format: u32,
    pub name: String,
    pub from: semver::Version,
    pub from_manifest: Sha256Digest,
    pub to: semver::Version,
    pub to_manifest: Sha256Digest,
    /// Stored bytes of the chunks that a robot running `from` lacks for `to`.
    pub chunk_bytes: u64,
    /// Stored bytes of the chunks it still lacks when it uses the pack. Format
    /// 1 packs leave files larger than a group to chunks; format 2 packs
    /// carry every changed file, so this is 0.
    pub pack_chunk_bytes: u64,
}

fn format_groups() -> u32 {
    DELTA_FORMAT_GROUPS
}

impl DeltaTargetInfo {
    /// Reads the delta information of a target's `custom` field, if it has one.
    pub fn from_custom(custom: Option<&serde_json::Value>) -> Option<Self> {
        let value = custom?.get("delta")?;
        serde_json::from_value(value.clone()).ok()
    }
}

/// TUF target name of the pack that upgrades `from` to `to`.
pub fn delta_target_name(name: &str, to: &semver::Version, from: &semver::Version) -> String {
    format!("{name}-{to}.from-{from}.delta")
}

/// zstd window log for a frame that refers to `reference` bytes and
/// produces `output` bytes: the whole reference must stay in the window.
pub fn window_log(reference: u64, output: u64) -> u32 {
    let total = reference.saturating_add(output).max(1024);
    let log = 64 - (total - 1).leading_zeros();
    log.clamp(10, MAX_WINDOW_LOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_log_covers_reference_and_output() {
        assert_eq!(window_log(0, 0), 10);
        assert_eq!(window_log(1024, 0), 10);
        assert_eq!(window_log(1024, 1), 11);
        assert_eq!(window_log(8 << 20, 8 << 20), 24);
        assert_eq!(window_log(u64::MAX, 1), MAX_WINDOW_LOG);
    }

    #[test]
    fn custom_without_delta_is_not_a_pack() {
        let info = serde_json::json!({ "name": "ecar", "version": "1.0.0" });
        assert_eq!(DeltaTargetInfo::from_custom(Some(&info)), None);
        assert_eq!(DeltaTargetInfo::from_custom(None), None);
    }

    #[test]
    fn target_info_without_format_is_format_1() {
        let info = serde_json::json!({ "delta": {
            "name": "ecar", "from": "1.0.0", "from_manifest": Sha256Digest::of(b"a"), "to": "1.0.1",
            "to_manifest": Sha256Digest::of(b"b"), "chunk_bytes": 10, "pack_chunk_bytes": 0,
        } });
        let parsed = DeltaTargetInfo::from_custom(Some(&info)).expect("delta info");
        assert_eq!(parsed.format, DELTA_FORMAT_GROUPS);
    }

    #[test]
    fn target_name_names_both_versions() {
        let to = semver::Version::new(1, 0, 2);
        let from = semver::Version::new(1, 0, 1);
        assert_eq!(delta_target_name("ecar", &to, &from), "ecar-1.0.2.from-1.0.1.delta");
    }
}
