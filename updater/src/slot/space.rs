//! Room and write access on the filesystems that staging writes to: the
//! inactive slot and the download cache. Both are checked before staging
//! changes anything, so a full or read-only filesystem is rejected with the
//! robot as it was.
//!
//! The checks are estimates that count no inodes or directory blocks, so a
//! write can still run out of space. Staging then removes its partial data
//! and reports the error, which [`is_storage_full`] recognises.

use std::path::{Path, PathBuf};

/// Free space of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    /// Allocation unit: every file takes a whole number of these.
    pub block: u64,
}

impl Room {
    /// Bytes a file of `size` bytes takes on this filesystem.
    pub fn blocks_of(&self, size: u64) -> u64 {
        size.div_ceil(self.block) * self.block
    }
}

/// `path` itself, or its nearest parent that exists (a slot directory may
/// not exist before the first install).
fn existing(path: &Path) -> PathBuf {
    path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/")).to_owned()
}

/// Reads the free space of the filesystem that contains `path`.
pub fn room(path: &Path) -> std::io::Result<Room> {
    let stat = rustix::fs::statvfs(existing(path).as_path())?;
    let block = if stat.f_frsize > 0 { stat.f_frsize } else { stat.f_bsize.max(1) };
    Ok(Room { available: stat.f_bavail.saturating_mul(block), block })
}

/// Fails when `path`, or its nearest existing parent, cannot be written by
/// this process, for example on a read-only mount.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    rustix::fs::access(existing(path).as_path(), rustix::fs::Access::WRITE_OK)?;
    Ok(())
}

/// True when an error, or any error it wraps, is a full filesystem or an
/// exhausted quota.
pub fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.kind() == std::io::ErrorKind::QuotaExceeded {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Removes everything inside `dir` but keeps `dir`, which may be a mount
/// point. Failures are logged: this runs while another error is reported.
pub fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(error) = removed {
            tracing::warn!(path = %path.display(), %error, "cannot remove partial data");
        }
    }
}

/// Formats a byte count for messages, such as `3.5 MiB (3670016 bytes)`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_text_uses_binary_units() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB (3670016 bytes)");
    }

    #[test]
    fn blocks_of_rounds_up() {
        let room = Room { available: 0, block: 4096 };
        assert_eq!((room.blocks_of(0), room.blocks_of(1), room.blocks_of(4097)), (0, 4096, 8192));
    }

    #[test]
    fn storage_full_found_in_wrapped_error() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write: {source}")]
        struct Wrapper {
            source: std::io::Error,
        }
        let full = Wrapper { source: std::io::Error::from_raw_os_error(28) };
        assert!(is_storage_full(&full));
        let other = Wrapper { source: std::io::Error::from_raw_os_error(5) };
        assert!(!is_storage_full(&other));
    }

    #[test]
    fn room_of_missing_dir_uses_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("slot-b/usr");
        assert!(room(&missing).is_ok());
        assert!(check_writable(&missing).is_ok());
    }
}
