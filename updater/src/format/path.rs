//! Checks that keep every entry of a release inside its slot.

use crate::format::limits::MAX_PATH_BYTES;

/// Reasons an entry path or link target is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("entry path {0:?} is empty")]
    Empty(String),
    #[error("entry path {0:?} is absolute; entries must be relative to the slot")]
    Absolute(String),
    #[error("entry path {0:?} contains a '..', '.' or empty component")]
    Traversal(String),
    #[error("entry path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("entry path {path:?} is {len} bytes long, more than the limit of {MAX_PATH_BYTES}")]
    TooLong { path: String, len: usize },
    #[error("symlink {path:?} points to {target:?}, which resolves outside the slot")]
    SymlinkEscapes { path: String, target: String },
}

fn shorten(path: &str) -> String {
    path.chars().take(200).collect()
}

/// Checks that `path` is a normal relative path: `a/b/c`, with no `..`, `.`,
/// empty component, leading `/` or NUL byte.
pub fn check_entry_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty(path.to_owned()));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { path: shorten(path), len: path.len() });
    }
    if path.contains('\0') {
        return Err(PathError::Nul(shorten(path)));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(shorten(path)));
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(PathError::Traversal(shorten(path)));
    }
    Ok(())
}

/// Checks a symlink target. An absolute target is kept verbatim: it names a
/// path of the robot's own file system, and `tenderd` never follows a link
/// while it stages. A relative target must stay inside the slot when it is
/// resolved from the link's directory.
pub fn check_symlink_target(path: &str, target: &str) -> Result<(), PathError> {
    if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_BYTES {
        return Err(PathError::SymlinkEscapes { path: shorten(path), target: shorten(target) });
    }
    if target.starts_with('/') {
        return Ok(());
    }
    // Depth of the link's directory below the slot root.
    let mut depth = path.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(PathError::SymlinkEscapes { path: shorten(path), target: shorten(target) });
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Returns the parent directory of an entry path, or `None` at the slot root.
pub fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(parent, _)| parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_relative() {
        assert!(check_entry_path("lib/motor_controller/libmotor.so").is_ok());
        assert!(matches!(check_entry_path("/etc/passwd"), Err(PathError::Absolute(_))));
        assert!(matches!(check_entry_path("lib/../../etc"), Err(PathError::Traversal(_))));
        assert!(matches!(check_entry_path("lib//x"), Err(PathError::Traversal(_))));
        assert!(matches!(check_entry_path("./x"), Err(PathError::Traversal(_))));
        assert!(matches!(check_entry_path(""), Err(PathError::Empty(_))));
    }

    #[test]
    fn relative_symlinks_must_not_escape() {
        assert!(check_symlink_target("lib/libx.so", "libx.so.1").is_ok());
        assert!(check_symlink_target("share/a/b", "../../lib/x").is_ok());
        assert!(check_symlink_target("share/a/b", "../../../etc/shadow").is_err());
        assert!(check_symlink_target("x", "..").is_err());
        assert!(check_symlink_target("bin/python3", "/usr/bin/python3.11").is_ok());
    }
}
