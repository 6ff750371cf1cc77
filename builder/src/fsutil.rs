//! Durable writes of release files.

use std::io::Write;
use std::path::Path;

use crate::store::set_mode_0644;

/// Writes `bytes` to `path` with mode 0644: a temporary file in the same
/// directory, `fsync`, rename over `path`, then `fsync` of the directory.
/// Readers see the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], with `fill` writing the content.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory)?;
    let mut temp = tempfile::NamedTempFile::new_in(directory)?;
    fill(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    set_mode_0644(path)?;
    std::fs::File::open(directory)?.sync_all()
}
