//! Partition slots: two block devices (or image files, in tests) that each
//! hold a filesystem image. Staging streams the release's image into the
//! inactive device, from the delta pack's frames of the image when the
//! download planner chose a pack, else one chunk at a time. It then reads
//! the device back past the page cache and checks its SHA-256 before a
//! switch may point at it. The active device is only ever opened for
//! reading.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::delta::{DeltaError, DeltaPack};
use crate::format::chunk::decode_chunk;
use crate::format::limits::MAX_STORED_CHUNK_BYTES;
use crate::format::{ChunkRef, EntryKind, Manifest, Sha256Digest};
use crate::source::{ReleaseSource, SourceError};
use crate::state::Slot;

/// Failures of a partition slot.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("slot {slot} device {} is missing; check slots.{slot} in updater.toml", path.display())]
    Missing { slot: Slot, path: PathBuf },
    #[error("cannot open slot {slot} device {} for writing: {source}; tenderd needs write access to the inactive slot", path.display())]
    NotWritable { slot: Slot, path: PathBuf, source: std::io::Error },
    #[error("slot {slot} device {} holds {capacity} bytes but the image is {size} bytes; use a larger partition or a smaller image", path.display())]
    TooSmall { slot: Slot, path: PathBuf, capacity: u64, size: u64 },
    #[error("release {release} has no file {image:?} to write to a partition slot; build one with `tender fs-image` and release it with `--tree`")]
    NoImage { release: String, image: String },
    #[error("slot {slot} device {} is the active slot's device; slots.a and slots.b must differ", path.display())]
    SameDevice { slot: Slot, path: PathBuf },
    #[error("cannot {action} slot device {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("slot {slot} device {} reads back with sha256 {actual}, not the image's {expected}; the device may be failing", path.display())]
    ReadBack { slot: Slot, path: PathBuf, expected: Sha256Digest, actual: Sha256Digest },
    #[error("slot {slot} device {} is a sparse file on a filesystem with {available} free, but the image needs {needed} more; free space there or allocate the file in full with `fallocate -l SIZE`", path.display())]
    NoSpace { slot: Slot, path: PathBuf, available: String, needed: String },
    #[error("slot {slot} device {} ran out of space after {written} bytes ({source}); it is a file on a full filesystem and contains no release now; free space there or allocate the file in full, then install again", path.display())]
    OutOfSpace { slot: Slot, path: PathBuf, written: u64, source: std::io::Error },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; the release is damaged, get a new copy")]
    Chunk(#[from] crate::format::chunk::ChunkError),
}

/// The two devices and the manifest entry that is their image.
#[derive(Debug, Clone)]
pub struct PartitionSlots {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Entry path of the image in a release, such as `rootfs.img`.
    pub image: String,
}

/// Counters of a partition staging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageStats {
    pub bytes_written: u64,
    /// Bytes of the delta pack whose frames rebuilt the image; 0 without.
    pub delta_bytes: u64,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub chunk_bytes_reused: u64,
}

impl PartitionSlots {
    pub fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// Returns the image entry of a manifest: size, digest and chunks.
    pub fn image_of<'m>(&self, manifest: &'m Manifest) -> Result<(u64, Sha256Digest, &'m [ChunkRef]), PartitionError> {
        manifest
            .entries
            .iter()
            .find_map(|entry| match &entry.kind {
                EntryKind::File { size, sha256, chunks } if entry.path == self.image => Some((*size, *sha256, chunks.as_slice())),
                _ => None,
            })
            .ok_or_else(|| PartitionError::NoImage { release: format!("{} {}", manifest.name, manifest.version), image: self.image.clone() })
    }

    /// Opens the target device for writing after the checks that must pass
    /// before anything changes: it exists, it is not the active device, it
    /// is writable and large enough.
    pub fn open_target(&self, target: Slot, size: u64) -> Result<File, PartitionError> {
        let path = self.device(target);
        if !path.exists() {
            return Err(PartitionError::Missing { slot: target, path: path.to_owned() });
        }
        let other = self.device(target.other());
        if path.canonicalize().ok() == other.canonicalize().ok() {
            return Err(PartitionError::SameDevice { slot: target, path: path.to_owned() });
        }
        let mut file = OpenOptions::new()
            .write(true)
            .read(true)
            .open(path)
            .map_err(|source| PartitionError::NotWritable { slot: target, path: path.to_owned(), source })?;
        let capacity = file
            .seek(SeekFrom::End(0))
            .map_err(|source| PartitionError::Io { action: "measure", path: path.to_owned(), source })?;
        if capacity < size {
            return Err(PartitionError::TooSmall { slot: target, path: path.to_owned(), capacity, size });
        }
        check_file_room(target, path, &file, size)?;
        Ok(file)
    }

    /// Returns the chunks of the image of `manifest` that the active slot's
    /// image lacks.
    pub fn missing_chunks<'m>(&self, manifest: &'m Manifest, active: Option<&Manifest>) -> Result<Vec<&'m ChunkRef>, PartitionError> {
        let (_, _, chunks) = self.image_of(manifest)?;
        let local = self.chunk_offsets(active);
        Ok(chunks.iter().filter(|chunk| !local.contains_key(&chunk.digest)).collect())
    }

    /// Maps each chunk of the active slot's image to its offset there.
    fn chunk_offsets(&self, active: Option<&Manifest>) -> HashMap<Sha256Digest, u64> {
        let mut offsets = HashMap::new();
        if let Some(Ok((_, _, old_chunks))) = active.map(|old| self.image_of(old)) {
            let mut offset = 0;
            for chunk in old_chunks {
                offsets.entry(chunk.digest).or_insert(offset);
                offset += chunk.size;
            }
        }
        offsets
    }

    /// Writes the image of `manifest` into `target`, then checks the
    /// written bytes. With a delta pack, the image is rebuilt from the
    /// pack's frames and the active image. When that fails, or without a
    /// pack, it is written from chunks, which are read from the active
    /// slot's image where it has them.
    pub fn stage(
        &self,
        manifest: &Manifest,
        target: Slot,
        active: Option<(Slot, &Manifest)>,
        source: &mut dyn ReleaseSource,
        cache_dir: &Path,
        delta: Option<&DeltaPack>,
    ) -> Result<ImageStats, PartitionError> {
        let (size, digest, chunks) = self.image_of(manifest)?;
        let mut device = self.open_target(target, size)?;
        let path = self.device(target).to_owned();
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| PartitionError::Io { action, path, source }
        };

        if let (Some(pack), Some((active_slot, old))) = (delta, active) {
            match self.write_from_pack(pack, manifest, (active_slot, old), (target, &mut device)) {
                Ok(()) => {
                    tracing::info!(pack = pack.length(), image = size, "image rebuilt from the delta pack");
                    device.sync_all().map_err(io("sync"))?;
                    drop(device);
                    self.verify(target, size, &digest)?;
                    return Ok(ImageStats { bytes_written: size, delta_bytes: pack.length(), ..ImageStats::default() });
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_line(&error), "delta pack unusable for the image; writing it from chunks");
                }
            }
        }

        // Where each chunk of the active image is, to read it locally.
        let local = self.chunk_offsets(active.map(|(_, old)| old));
        let mut active_device = active.and_then(|(slot, _)| File::open(self.device(slot)).ok());

        let missing: Vec<(Sha256Digest, u64)> = chunks
            .iter()
            .filter(|chunk| !local.contains_key(&chunk.digest))
            .map(|chunk| (chunk.digest, chunk.stored.min(MAX_STORED_CHUNK_BYTES)))
            .collect();
        tracing::info!(chunks = missing.len(), bytes = missing.iter().map(|(_, n)| n).sum::<u64>(), "image chunks the robot lacks");
        if source.is_remote() {
            std::fs::create_dir_all(cache_dir).map_err(io("create cache for"))?;
            source.prefetch(&missing);
        }

        let mut stats = ImageStats::default();
        device.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        for chunk in chunks {
            let plain = match (local.get(&chunk.digest), active_device.as_mut()) {
                (Some(offset), Some(file)) => read_verified(file, *offset, chunk),
                _ => None,
            };
            let plain = match plain {
                Some(plain) => {
                    stats.chunk_bytes_reused += chunk.size;
                    plain
                }
                None => {
                    let stored = source.chunk(&chunk.digest, chunk.stored.min(MAX_STORED_CHUNK_BYTES))?;
                    stats.chunks_fetched += 1;
                    stats.bytes_fetched += stored.len() as u64;
                    decode_chunk(chunk, &stored)?
                }
            };
            device.write_all(&plain).map_err(|source| match source.kind() {
                std::io::ErrorKind::StorageFull => PartitionError::OutOfSpace { slot: target, path: path.clone(), written: stats.bytes_written, source },
                _ => PartitionError::Io { action: "write", path: path.clone(), source },
            })?;
            stats.bytes_written += plain.len() as u64;
        }
        device.sync_all().map_err(io("sync"))?;
        drop(device);
        self.verify(target, size, &digest)?;
        Ok(stats)
    }

    /// Writes the image from the pack's frames of it into `device`, each
    /// frame's reference read from the active slot's device (opened only
    /// for reading), and checks the SHA-256 of the bytes written. The
    /// device may hold a partial image when this fails.
    fn write_from_pack(
        &self,
        pack: &DeltaPack,
        manifest: &Manifest,
        (active, old): (Slot, &Manifest),
        (target, device): (Slot, &mut File),
    ) -> Result<(), DeltaError> {
        let mismatch = |detail| DeltaError::Mismatch { pack: pack.path().to_owned(), path: self.image.clone(), detail };
        let (size, digest, _) = self.image_of(manifest).map_err(|_| mismatch("is not a file of the new release"))?;
        let (old_size, _, _) = self.image_of(old).map_err(|_| mismatch("is not a file of the active release"))?;
        let Some((base, frames)) = pack.file_frames(&self.image, size, old_size) else {
            return Err(mismatch("shares its frames with other files or is missing, so a partition slot cannot use them"));
        };
        if base.is_some_and(|base| base != self.image) {
            return Err(mismatch("has another file than the active image as its base"));
        }
        let active_path = self.device(active);
        let mut active_device = File::open(active_path).map_err(|source| DeltaError::Io { action: "open", path: active_path.to_owned(), source })?;
        let target_path = self.device(target).to_owned();
        device.seek(SeekFrom::Start(0)).map_err(|source| DeltaError::Io { action: "seek", path: target_path.clone(), source })?;
        let base = base.map(|_| (&mut active_device, active_path, old_size));
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut *device);
        let actual = pack.write_frames(&self.image, &frames, base, size, &mut writer)?;
        writer.flush().map_err(|source| DeltaError::Io { action: "write", path: target_path, source })?;
        if actual != digest {
            return Err(DeltaError::FileDigest { path: self.image.clone(), expected: digest, actual });
        }
        Ok(())
    }

    /// Reads `size` bytes of a slot back, past the page cache, and checks
    /// their SHA-256.
    pub fn verify(&self, slot: Slot, size: u64, expected: &Sha256Digest) -> Result<(), PartitionError> {
        let path = self.device(slot);
        let io = |action: &'static str| move |source| PartitionError::Io { action, path: path.to_owned(), source };
        let file = File::open(path).map_err(io("open"))?;
        // Drop the cached pages, so the check reads what the device holds.
        rustix::fs::fadvise(&file, 0, std::num::NonZeroU64::new(size), rustix::fs::Advice::DontNeed)
            .map_err(|e| PartitionError::Io { action: "drop cached pages of", path: path.to_owned(), source: e.into() })?;
        let mut hasher = Sha256::new();
        let mut reader = file.take(size);
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let count = reader.read(&mut buffer).map_err(io("read back"))?;
            if count == 0 {
                break;
            }
            hasher.update(&buffer[..count]);
            total += count as u64;
        }
        let actual = Sha256Digest::from_hasher(hasher);
        if total != size || actual != *expected {
            return Err(PartitionError::ReadBack { slot, path: path.to_owned(), expected: *expected, actual });
        }
        Ok(())
    }
}

/// Checks that a slot which is a sparse regular file (as in tests, or a
/// loop-mounted file) has room on its filesystem for the image, because it
/// takes blocks there as the image is written. Block devices own their space.
fn check_file_room(slot: Slot, path: &Path, file: &File, size: u64) -> Result<(), PartitionError> {
    use std::os::unix::fs::MetadataExt;
    let io = |source| PartitionError::Io { action: "measure", path: path.to_owned(), source };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Ok(());
    }
    let allocated = meta.blocks().saturating_mul(512);
    let needed = size.saturating_sub(allocated);
    let room = crate::slot::space::room(path).map_err(io)?;
    if needed > room.available {
        return Err(PartitionError::NoSpace {
            slot,
            path: path.to_owned(),
            available: crate::slot::space::size_text(room.available),
            needed: crate::slot::space::size_text(needed),
        });
    }
    Ok(())
}

/// Reads one chunk of the active image and returns it if it verifies.
fn read_verified(file: &mut File, offset: u64, chunk: &ChunkRef) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut plain = vec![0u8; chunk.size as usize];
    file.read_exact(&mut plain).ok()?;
    (Sha256Digest::of(&plain) == chunk.digest).then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_or_missing_device_is_refused_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = PartitionSlots { a: dir.path().join("a.img"), b: dir.path().join("b.img"), image: "rootfs.img".to_owned() };
        let error = slots.open_target(Slot::B, 10).expect_err("missing").to_string();
        assert!(error.contains("is missing"), "{error}");
        std::fs::write(&slots.b, vec![7u8; 100]).expect("device");
        let error = slots.open_target(Slot::B, 1000).expect_err("too small").to_string();
        assert!(error.contains("holds 100 bytes"), "{error}");
        assert_eq!(std::fs::read(&slots.b).expect("read"), vec![7u8; 100]);
    }

    #[test]
    fn read_back_detects_other_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = PartitionSlots { a: dir.path().join("a.img"), b: dir.path().join("b.img"), image: "rootfs.img".to_owned() };
        std::fs::write(&slots.a, b"image bytes and padding").expect("device");
        slots.verify(Slot::A, 11, &Sha256Digest::of(b"image bytes")).expect("matches");
        let error = slots.verify(Slot::A, 11, &Sha256Digest::of(b"other bytes")).expect_err("differs").to_string();
        assert!(error.contains("reads back"), "{error}");
    }
}
