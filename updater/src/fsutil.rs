//! Durable file system writes: every state change goes through
//! [`write_atomic`], so a crash or power cut leaves either the old or the new
//! file, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A durable write failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl FsError {
    pub fn new(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self { action, path: path.to_owned(), source }
    }
}

/// Flushes a directory so that a rename or a new entry in it survives a
/// power cut.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| FsError::new("sync directory", dir, e))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes`: writes a temporary file beside it, syncs it,
/// renames it over `path` and syncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = parent_of(path);
    fs::create_dir_all(dir).map_err(|e| FsError::new("create directory", dir, e))?;
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| FsError::new("create", &temp, e))?;
    file.write_all(bytes).map_err(|e| FsError::new("write", &temp, e))?;
    file.sync_all().map_err(|e| FsError::new("sync", &temp, e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| FsError::new("rename into place", path, e))?;
    sync_dir(dir)
}

/// Points the symlink `link` at `target` atomically: a temporary link is
/// created beside it and renamed over it, then the directory is synced.
pub fn replace_symlink(target: &Path, link: &Path) -> Result<(), FsError> {
    let dir = parent_of(link);
    let mut temp_name = link.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("remove stale link", &temp, e)),
    }
    std::os::unix::fs::symlink(target, &temp).map_err(|e| FsError::new("create link", &temp, e))?;
    fs::rename(&temp, link).map_err(|e| FsError::new("rename link into place", link, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").expect("first");
        write_atomic(&path, b"two").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn symlink_switch_replaces_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("current");
        replace_symlink(Path::new("slot-a"), &link).expect("first");
        replace_symlink(Path::new("slot-b"), &link).expect("second");
        assert_eq!(fs::read_link(&link).expect("readlink"), Path::new("slot-b"));
    }
}
