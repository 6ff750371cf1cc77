//! Owner, mode, extended attributes and times of staged entries.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::format::Entry;

/// Extended attributes that the system manages, which Tender neither sets
/// nor removes.
pub(crate) const SYSTEM_XATTRS: &[&str] = &["security.selinux"];

/// Returns true when this process may set owners and `security.*`
/// attributes. Without that, owners are left as they are and not compared.
pub(crate) fn is_privileged() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies an entry's metadata to `path`. The order matters: `chown` clears
/// setuid/setgid bits and file capabilities, so it comes first, and the
/// modification time comes last because setting attributes changes ctime only.
pub(crate) fn apply(path: &Path, entry: &Entry, is_symlink: bool) -> std::io::Result<()> {
    if is_privileged() {
        std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid))?;
    }
    if !is_symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(entry.mode))?;
    }
    apply_xattrs(path, &entry.xattrs)?;
    let time = rustix::fs::Timespec { tv_sec: entry.mtime as i64, tv_nsec: 0 };
    let times = rustix::fs::Timestamps { last_access: time, last_modification: time };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn apply_xattrs(path: &Path, wanted: &BTreeMap<String, String>) -> std::io::Result<()> {
    // Symlinks cannot carry user.* attributes on Linux, so skip listing them
    // when nothing is wanted.
    let existing = read_xattrs(path)?;
    for name in existing.keys() {
        if !wanted.contains_key(name) {
            xattr::remove(path, name)?;
        }
    }
    for (name, value) in wanted {
        let bytes = hex::decode(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if existing.get(name) != Some(value) {
            xattr::set(path, name, &bytes)?;
        }
    }
    Ok(())
}

/// Reads the extended attributes of `path` without following a symlink,
/// values as hex, leaving out the system-managed ones.
pub(crate) fn read_xattrs(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(found),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else { continue };
        if SYSTEM_XATTRS.contains(&name.as_str()) {
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            found.insert(name, hex::encode(value));
        }
    }
    Ok(found)
}
