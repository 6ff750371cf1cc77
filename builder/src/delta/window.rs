//! Windows of files larger than a delta group, and the reference of each.
//!
//! A window rebuilds [`WINDOW_BYTES`] of the new file. Its reference is
//! chosen from the base file in segments of [`REFERENCE_SEGMENT`] bytes.
//! Each 4 KiB block of the window votes for the segment of the base that
//! contains the same block. A block that the base lacks votes for the
//! segment at the shift of the previous matching block, because the data
//! around a change usually moved by the same amount. The most voted
//! segments, up to [`MAX_GROUP_BYTES`], form the reference in base order.
//!
//! Pack sizes measured with `zstd -9 --patch-from` on each window, on ext4
//! (400 MiB) and erofs (221 MiB) images of the two Debian 12 minbase trees
//! of the benchmarks, ext4 first:
//!
//! - the base's 32 MiB at the window's own offset: 71.0 MB and 58.6 MB;
//! - 16 MiB windows with a centered 32 MiB reference: 72.6 MB and 66.8 MB;
//! - voted segments, as written here: 33.1 MB and 18.3 MB;
//! - one frame with the whole old image as reference, with unbounded
//!   memory: 17.2 MB and 17.3 MB.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tender_updater::format::delta::{ByteRange, DeltaWindow, MAX_GROUP_BYTES};

/// Bytes of a large file that one window rebuilds.
pub const WINDOW_BYTES: u64 = MAX_GROUP_BYTES;

/// Granularity of the reference ranges.
pub const REFERENCE_SEGMENT: u64 = 1024 * 1024;

/// Blocks matched between the base and the new file: the block size of
/// ext4 and erofs images.
const BLOCK_BYTES: usize = 4096;

/// A block that occurs more often than this in the base (zeros, padding)
/// does not show where data came from, so it does not vote.
const MAX_BLOCK_COPIES: usize = 16;

/// Cuts a file of `size` bytes into windows of [`WINDOW_BYTES`]. Each
/// window's reference is at most [`MAX_GROUP_BYTES`] of the base (of
/// `base_size` bytes, 0 without a base) at the window's offset, moved back
/// inside the base near its end. [`select_reference`] may replace it.
pub fn plan_windows(size: u64, base_size: u64) -> Vec<DeltaWindow> {
    let mut windows = Vec::new();
    let mut offset = 0;
    while offset < size {
        let length = WINDOW_BYTES.min(size - offset);
        windows.push(DeltaWindow { offset, length, base_ranges: same_offset(offset, base_size) });
        offset += length;
    }
    windows
}

/// Returns the range of at most [`MAX_GROUP_BYTES`] of the base from
/// `offset`, moved back when it would pass the base's end. An empty base
/// gives no range.
fn same_offset(offset: u64, base_size: u64) -> Vec<ByteRange> {
    let length = base_size.min(MAX_GROUP_BYTES);
    match length {
        0 => Vec::new(),
        _ => vec![ByteRange { offset: offset.min(base_size - length), length }],
    }
}

/// Offsets of the 4 KiB blocks of a base file, by a key of their content.
#[derive(Debug, Default)]
pub struct BlockIndex {
    offsets: HashMap<u64, Vec<u64>>,
    size: u64,
}

impl BlockIndex {
    /// Starts an index of a base file of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self { offsets: HashMap::new(), size }
    }

    /// Adds the whole blocks of `bytes`, which start at `offset` of the base;
    /// `offset` is a multiple of the block size.
    pub fn add(&mut self, offset: u64, bytes: &[u8]) {
        for (index, block) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
            let copies = self.offsets.entry(block_key(block)).or_default();
            if copies.len() <= MAX_BLOCK_COPIES {
                copies.push(offset + (index * BLOCK_BYTES) as u64);
            }
        }
    }
}

fn block_key(block: &[u8]) -> u64 {
    let digest = Sha256::digest(block);
    u64::from_le_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]])
}

/// Chooses the reference of the window that starts at `offset` of the new
/// file and contains `content`, from the base that `index` describes (see
/// the module documentation).
pub fn select_reference(index: &BlockIndex, offset: u64, content: &[u8]) -> Vec<ByteRange> {
    if index.size <= MAX_GROUP_BYTES {
        return same_offset(0, index.size);
    }
    let mut votes: HashMap<u64, u64> = HashMap::new();
    let mut shift: i128 = 0;
    for (number, block) in content.chunks_exact(BLOCK_BYTES).enumerate() {
        let position = i128::from(offset) + (number * BLOCK_BYTES) as i128;
        let copies = index.offsets.get(&block_key(block)).map_or(&[][..], Vec::as_slice);
        let source = if (1..=MAX_BLOCK_COPIES).contains(&copies.len()) {
            let expected = position + shift;
            let closest = copies.iter().map(|o| i128::from(*o)).min_by_key(|o| (o - expected).abs()).unwrap_or(expected);
            shift = closest - position;
            closest
        } else {
            position + shift
        };
        if let Ok(source) = u64::try_from(source) {
            if source < index.size {
                *votes.entry(source / REFERENCE_SEGMENT).or_default() += 1;
            }
        }
    }
    if votes.is_empty() {
        return same_offset(offset, index.size);
    }

    let mut ranked: Vec<(u64, u64)> = votes.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut segments: Vec<u64> = ranked.into_iter().take((MAX_GROUP_BYTES / REFERENCE_SEGMENT) as usize).map(|(s, _)| s).collect();
    segments.sort_unstable();
    let mut ranges: Vec<ByteRange> = Vec::new();
    for segment in segments {
        let start = segment * REFERENCE_SEGMENT;
        let length = REFERENCE_SEGMENT.min(index.size - start);
        match ranges.last_mut() {
            Some(last) if last.offset + last.length == start => last.length += length,
            _ => ranges.push(ByteRange { offset: start, length }),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::noise;

    #[test]
    fn windows_cover_the_file_with_bounded_references() {
        let mib = 1024 * 1024;
        let cases = [(100 * mib + 5, 90 * mib), (100 * mib, 0), (40 * mib, 10 * mib), (10 * mib, 50 * mib), (MAX_GROUP_BYTES * 2, MAX_GROUP_BYTES * 2)];
        for (size, base_size) in cases {
            let windows = plan_windows(size, base_size);
            let mut next = 0;
            for window in &windows {
                assert_eq!(window.offset, next, "{size} from {base_size}: gap before {window:?}");
                assert!(window.length > 0, "{window:?}");
                assert!(window.length <= MAX_GROUP_BYTES, "{window:?}");
                assert_eq!(window.base_length(), base_size.min(MAX_GROUP_BYTES), "{window:?}");
                for range in &window.base_ranges {
                    assert!(range.offset + range.length <= base_size, "{size} from {base_size}: {window:?} reads past the base");
                }
                next += window.length;
            }
            assert_eq!(next, size, "{size} from {base_size}: windows end at {next}");
        }
        for window in plan_windows(MAX_GROUP_BYTES * 2, MAX_GROUP_BYTES * 2) {
            assert_eq!(window.base_ranges, vec![ByteRange { offset: window.offset, length: MAX_GROUP_BYTES }]);
        }
    }

    #[test]
    fn reference_follows_moved_blocks() {
        // A 48 MiB base. The new window contains the base's last 8 MiB,
        // then its first 8 MiB with one block changed.
        let segment = REFERENCE_SEGMENT as usize;
        let base = noise(48 * segment, 7);
        let mut index = BlockIndex::new(base.len() as u64);
        index.add(0, &base);
        let mut content = [&base[40 * segment..], &base[..8 * segment]].concat();
        content[9 * segment..9 * segment + 16].copy_from_slice(b"changed in 1.0.1");
        let ranges = select_reference(&index, 0, &content);
        assert_eq!(ranges, vec![ByteRange { offset: 0, length: 8 * REFERENCE_SEGMENT }, ByteRange { offset: 40 * REFERENCE_SEGMENT, length: 8 * REFERENCE_SEGMENT }]);
    }

    #[test]
    fn reference_stays_within_the_limit() {
        let segment = REFERENCE_SEGMENT as usize;
        let base = noise(80 * segment, 9);
        let mut index = BlockIndex::new(base.len() as u64);
        index.add(0, &base);
        // Every other segment of the base: 40 segments, more than the limit.
        let content: Vec<u8> = (0..40).flat_map(|s| base[2 * s * segment..(2 * s + 1) * segment].iter().copied()).collect();
        let ranges = select_reference(&index, 0, &content);
        let total: u64 = ranges.iter().map(|r| r.length).sum();
        assert_eq!(total, MAX_GROUP_BYTES);
        assert!(ranges.iter().all(|r| r.offset + r.length <= base.len() as u64), "{ranges:?}");
    }

    #[test]
    fn small_base_is_the_whole_reference() {
        let base = noise(100_000, 3);
        let mut index = BlockIndex::new(base.len() as u64);
        index.add(0, &base);
        assert_eq!(select_reference(&index, 0, &base), vec![ByteRange { offset: 0, length: 100_000 }]);
    }
}
