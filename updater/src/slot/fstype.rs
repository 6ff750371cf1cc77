//! Recognises the file system of a slot image from its superblock magic
//! number, so the robot can name the type to `mount` and the builder can
//! pick the tool that lists the image's files.

use std::io::Read;

/// Bytes read from the start of an image to find its type. The ext4 and
/// erofs superblocks start at byte 1024.
pub const PROBE_BYTES: usize = 2048;

/// File systems that `tender fs-image` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext2, ext3 or ext4: one magic number, and the kernel's ext4 driver mounts all three.
    Ext4,
    Erofs,
    Squashfs,
}

impl FsType {
    /// Name of the type as `mount -t` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Erofs => "erofs",
            Self::Squashfs => "squashfs",
        }
    }

    /// Recognises the type from the first bytes of an image. Returns `None`
    /// for any other content and for a probe too short to tell.
    pub fn detect(probe: &[u8]) -> Option<Self> {
        let le16 = |at: usize| probe.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let le32 = |at: usize| probe.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        // squashfs: "hsqs" at 0; erofs: 0xE0F5E1E2 at 1024; ext2/3/4: 0xEF53 at 1024 + 0x38.
        if probe.starts_with(b"hsqs") {
            Some(Self::Squashfs)
        } else if le32(1024) == Some(0xE0F5_E1E2) {
            Some(Self::Erofs)
        } else if le16(1024 + 0x38) == Some(0xEF53) {
            Some(Self::Ext4)
        } else {
            None
        }
    }

    /// Reads the first [`PROBE_BYTES`] of `reader` and recognises the type.
    pub fn read(reader: &mut impl Read) -> std::io::Result<Option<Self>> {
        let mut probe = Vec::with_capacity(PROBE_BYTES);
        reader.take(PROBE_BYTES as u64).read_to_end(&mut probe)?;
        Ok(Self::detect(&probe))
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_are_recognised() {
        let mut ext4 = vec![0u8; PROBE_BYTES];
        ext4[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(FsType::detect(&ext4), Some(FsType::Ext4));

        let mut erofs = vec![0u8; PROBE_BYTES];
        erofs[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(FsType::detect(&erofs), Some(FsType::Erofs));

        let mut squashfs = vec![0u8; PROBE_BYTES];
        squashfs[..4].copy_from_slice(b"hsqs");
        assert_eq!(FsType::detect(&squashfs), Some(FsType::Squashfs));
    }

    #[test]
    fn unknown_or_short_probe_is_none() {
        assert_eq!(FsType::detect(&[0u8; PROBE_BYTES]), None);
        assert_eq!(FsType::detect(b"hsq"), None);
        assert_eq!(FsType::detect(&[0u8; 1030]), None);
    }
}
