//! File-tree helpers shared by the sections.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Number of regular files under `tree` and the sum of their sizes.
pub fn tree_size(tree: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for entry in walk(tree) {
        if let Ok(meta) = fs::symlink_metadata(&entry) {
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Lists every path under `dir`, without following symlinks. Unreadable
/// directories are skipped.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// Copies `from` to `to` with `cp -a`, which keeps modes, owners, links and
/// special files.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().context("cannot run cp")?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// Size of a file in bytes.
pub fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?.len())
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Quotes `path` for `bash -c`.
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
