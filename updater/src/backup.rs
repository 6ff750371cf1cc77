//! Backups of the robot's configuration directory before every switch, kept
//! by count and by age.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil::{sync_dir, FsError};

/// Copies `source` to a new directory in `backup_dir` named after the time
/// and `label`, then removes backups beyond `keep` or older than `max_age`.
/// Returns the new backup's path, or `None` when `source` does not exist.
pub fn backup_config(
    source: &Path,
    backup_dir: &Path,
    label: &str,
    keep: usize,
    max_age: Duration,
) -> Result<Option<PathBuf>, FsError> {
    if !source.is_dir() {
        tracing::info!(source = %source.display(), "no configuration directory to back up");
        return Ok(None);
    }
    fs::create_dir_all(backup_dir).map_err(|e| FsError::new("create backup directory", backup_dir, e))?;
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(':', "");
    let mut name = format!("{stamp}-{label}");
    // Two switches within one second get distinct names.
    for attempt in 2..100 {
        if !backup_dir.join(&name).exists() {
            break;
        }
        name = format!("{stamp}-{label}-{attempt}");
    }
    let partial = backup_dir.join(format!(".{name}.partial"));
    let done = backup_dir.join(&name);
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| FsError::new("remove", &partial, e))?;
    }
    copy_tree(source, &partial)?;
    sync_tree_dirs(&partial)?;
    fs::rename(&partial, &done).map_err(|e| FsError::new("rename backup into place", &done, e))?;
    sync_dir(backup_dir)?;
    tracing::info!(backup = %done.display(), "configuration backed up");
    prune(backup_dir, keep, max_age)?;
    Ok(Some(done))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), FsError> {
    for item in walkdir::WalkDir::new(from).sort_by_file_name() {
        let item = item.map_err(|e| FsError::new("read", from, e.into()))?;
        let relative = item.path().strip_prefix(from).unwrap_or(Path::new(""));
        let destination = to.join(relative);
        let file_type = item.file_type();
        if file_type.is_dir() {
            fs::create_dir_all(&destination).map_err(|e| FsError::new("create", &destination, e))?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(item.path()).map_err(|e| FsError::new("read link", item.path(), e))?;
            std::os::unix::fs::symlink(target, &destination).map_err(|e| FsError::new("create link", &destination, e))?;
        } else if file_type.is_file() {
            fs::copy(item.path(), &destination).map_err(|e| FsError::new("copy", item.path(), e))?;
            fs::File::open(&destination)
                .and_then(|f| f.sync_all())
                .map_err(|e| FsError::new("sync", &destination, e))?;
        }
    }
    Ok(())
}

/// Syncs every directory of a copied tree, deepest first, so the rename
/// that publishes the tree never points at unsynced entries.
fn sync_tree_dirs(root: &Path) -> Result<(), FsError> {
    for item in walkdir::WalkDir::new(root).contents_first(true) {
        let item = item.map_err(|e| FsError::new("read", root, e.into()))?;
        if item.file_type().is_dir() {
            sync_dir(item.path())?;
        }
    }
    Ok(())
}

/// Removes backups beyond the newest `keep` and those older than `max_age`.
/// Backup names start with their time, so name order is time order.
fn prune(backup_dir: &Path, keep: usize, max_age: Duration) -> Result<(), FsError> {
    let mut names: Vec<String> = fs::read_dir(backup_dir)
        .map_err(|e| FsError::new("read", backup_dir, e))?
        .filter_map(Result::ok)
        .filter(|item| item.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|item| item.file_name().to_str().map(str::to_owned))
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let now = SystemTime::now();
    let count = names.len();
    for (index, name) in names.iter().enumerate() {
        let path = backup_dir.join(name);
        let too_many = count - index > keep;
        let age = fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| now.duration_since(t).ok());
        let too_old = age.is_some_and(|age| age > max_age);
        if too_many || too_old {
            tracing::info!(backup = %path.display(), too_many, too_old, "removing old backup");
            fs::remove_dir_all(&path).map_err(|e| FsError::new("remove old backup", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_pruned_by_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("config");
        fs::create_dir_all(&source).expect("mkdir");
        fs::write(source.join("robot.yaml"), "wheelbase: 0.5\n").expect("write");
        let backups = dir.path().join("backups");
        for label in ["1.0.0", "1.0.1", "1.0.2"] {
            backup_config(&source, &backups, label, 2, Duration::from_secs(3600)).expect("backup");
            std::thread::sleep(Duration::from_millis(1100));
        }
        let mut names: Vec<String> = fs::read_dir(&backups)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[1].ends_with("1.0.2"), "{names:?}");
        let copied = backups.join(&names[1]).join("robot.yaml");
        assert_eq!(fs::read_to_string(copied).expect("read"), "wheelbase: 0.5\n");
    }
}
